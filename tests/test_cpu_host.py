"""The CPU-host tuning's switch: on for the CPU engine (the tuned LLMServer), off on a GPU (Ray's own)."""

import pytest

from rag.config import ConfigError, RagConfig
from serve_app.cpu_host import CpuHostLLMServer, cpu_engine_settings, llm_server_options


def test_the_tuning_is_for_the_cpu_engine_only():
    assert RagConfig.load(None).llm.cpu_host_tuning is True  # unset: on for the CPU engine
    assert RagConfig.load(None, {"llm": {"accelerator": "gpu", "num_gpus": 1}}).llm.cpu_host_tuning is False
    with pytest.raises(ConfigError, match="cpu_host_tuning is for the CPU engine"):
        RagConfig.load(None, {"llm": {"accelerator": "gpu", "num_gpus": 1, "cpu_host_tuning": True}})


def test_the_switch_picks_the_server_class():
    tuned = RagConfig.load(None).llm
    assert llm_server_options(tuned) == {
        "deployment_cls": CpuHostLLMServer,
        "bind_kwargs": {"cpu_engine": {"nice": 19, "scheduler_on_worker_cores": True}},
    }
    untuned = RagConfig.load(None, {"llm": {"cpu_host_tuning": False}}).llm
    assert cpu_engine_settings(untuned) is None and llm_server_options(untuned) == {}  # Ray's own LLMServer
