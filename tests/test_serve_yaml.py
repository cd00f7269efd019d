"""Parity: the Serve YAML we ship is the one generated from the config model, and it builds a valid config."""

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from ray.llm._internal.common.utils.import_utils import load_class

from entrypoints.local_ray import RAY_START_ENV
from rag.config import ConfigError, RagConfig
from serve_app.cpu_host import CpuHostLLMServer, cpu_engine_settings, llm_server_options
from serve_app.llm import LocalFolderSkipsNodeInit, cpu_has_bf16, llm_config_kwargs
from serve_app.serve_yaml import IMPORT_PATH, SERVE_ENV, AppArgs, serve_deploy_yaml

REPO = Path(__file__).resolve().parents[1]


def test_serve_local_yaml_is_generated_from_the_config():
    cfg = RagConfig.load(REPO / "configs" / "local.yaml")
    assert (REPO / "configs" / "serve_local.yaml").read_text() == serve_deploy_yaml(cfg, "configs/local.yaml")


def test_serve_yaml_args_validate_against_the_config_model():
    doc = yaml.safe_load((REPO / "configs" / "serve_local.yaml").read_text())
    app = doc["applications"][0]
    assert app["import_path"] == IMPORT_PATH
    args = AppArgs.model_validate(app["args"])
    cfg = RagConfig.load(REPO / args.config_file, args.overrides)
    assert doc["http_options"] == {"host": cfg.serve.host, "port": cfg.serve.port}


@pytest.mark.parametrize(
    ("source", "runs_node_init"),
    [("folder", False), ("meta-llama/Llama-3.1-8B-Instruct", True), ("s3://models/llama", True)],
)
def test_node_init_is_skipped_only_for_a_model_in_a_local_folder(tmp_path, source, runs_node_init):
    """Ray's node-init task only fetches from buckets: for a folder it is a worker start for nothing."""
    source = str(tmp_path) if source == "folder" else source
    cfg = RagConfig.load(REPO / "configs" / "local.yaml")
    callback_class = load_class(llm_config_kwargs(cfg, source)["callback_config"]["callback_class"])
    assert callback_class is LocalFolderSkipsNodeInit
    llm_config = SimpleNamespace(model_loading_config=SimpleNamespace(model_source=source))
    callback = callback_class(llm_config=llm_config)
    asyncio.run(callback.run_callback("on_before_node_init"))
    assert callback.ctx.run_init_node is runs_node_init


def test_llm_config_on_cpu_and_gpu():
    local_cfg, gpu_cfg = (RagConfig.load(REPO / "configs" / name) for name in ("local.yaml", "gpu.yaml"))
    local_llm, gpu_llm = local_cfg.llm, gpu_cfg.llm
    local = llm_config_kwargs(local_cfg, "/m")
    assert local["accelerator_config"] == {"kind": "cpu"}
    assert local["engine_kwargs"]["enforce_eager"] and local["engine_kwargs"]["kv_cache_memory_bytes"] > 0
    assert local["experimental_configs"]["stream_batching_interval_ms"] == 200
    assert local["engine_kwargs"]["max_num_batched_tokens"] == 512
    assert local["engine_kwargs"]["override_generation_config"] == {"temperature": 0, "repetition_penalty": 1.1}
    assert cpu_engine_settings(local_llm) == {
        "nice": 19,
        "scheduler_on_worker_cores": True,
    }
    gpu = llm_config_kwargs(gpu_cfg, "meta-llama/Llama-3.1-8B-Instruct")
    assert "accelerator_config" not in gpu and gpu["engine_kwargs"]["gpu_memory_utilization"] == 0.9
    assert "max_num_batched_tokens" not in gpu["engine_kwargs"]  # vLLM's GPU default
    assert "dtype" not in gpu["engine_kwargs"]  # vLLM's own on a GPU: the checkpoint's bf16
    assert local["engine_kwargs"]["dtype"] == ("bfloat16" if cpu_has_bf16() else "float32")
    assert cpu_engine_settings(gpu_llm) is None and llm_server_options(gpu_llm) == {}  # Ray's own LLMServer
    assert llm_server_options(local_llm)["deployment_cls"] is CpuHostLLMServer
    assert gpu["deployment_config"]["autoscaling_config"] == {
        "min_replicas": gpu_llm.replicas.min_replicas,
        "max_replicas": gpu_llm.replicas.max_replicas,
        "target_ongoing_requests": gpu_llm.replicas.target_ongoing_requests,
    }
    assert gpu["deployment_config"]["max_ongoing_requests"] == gpu_llm.replicas.max_ongoing_requests
    assert gpu["deployment_config"]["max_queued_requests"] == gpu_llm.replicas.max_queued_requests
    assert gpu["deployment_config"]["health_check_period_s"] == gpu_llm.health_check_period_s == 10
    assert gpu["deployment_config"]["backpressure_config"] == {
        "status_code": 503,
        "retry_after_s": gpu_cfg.serve.retry_after_s,
    }
    assert gpu["accelerator_type"] == gpu_llm.accelerator_type == "L4"
    assert gpu["model_loading_config"]["model_id"] == "rag"


def test_make_serve_starts_ray_with_the_serve_env_and_waits_until_ready():
    makefile = (REPO / "Makefile").read_text()
    start_line = next(line for line in makefile.splitlines() if "ray start --head" in line)
    assert all(f"{name}={value} " in start_line for name, value in {**RAY_START_ENV, **SERVE_ENV}.items())
    recipe = makefile.split("\nserve: install\n", 1)[1].split("\n\n", 1)[0]
    assert "serve deploy configs/serve_local.yaml" in recipe and "rag ready --config configs/local.yaml" in recipe
    # The app's build runs in a Ray worker and starts no Milvus: the local server is the Makefile's to start.
    assert recipe.index("rag milvus start --config configs/local.yaml") < recipe.index("serve deploy")
    assert "export RAY_AUTH_MODE := token" in makefile  # Ray's CLIs then send the local cluster's token


def test_default_sampling_is_replaced_whole_and_unset_leaves_the_models_own():
    cfg = RagConfig.load(None, {"llm": {"default_sampling": {"top_p": 0.9}}})
    assert llm_config_kwargs(cfg, "/m")["engine_kwargs"]["override_generation_config"] == {"top_p": 0.9}
    cfg = RagConfig.load(None, {"llm": {"default_sampling": {}}})
    assert "override_generation_config" not in llm_config_kwargs(cfg, "/m")["engine_kwargs"]
    with pytest.raises(ConfigError, match="default_sampling.temprature"):
        RagConfig.load(None, {"llm": {"default_sampling": {"temprature": 0}}})


AVX2_ONLY = "flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2\n"


@pytest.mark.parametrize(
    "cpuinfo, native",
    [
        (AVX2_ONLY, False),
        (AVX2_ONLY.replace("avx2", "avx2 avx512f avx512bw avx512_vnni"), False),  # VNNI is int8, not bf16
        (AVX2_ONLY.replace("avx2", "avx2 avx512f avx512_bf16"), True),  # Zen 4, Cooper Lake
        (AVX2_ONLY.replace("avx2", "avx2 amx_tile amx_bf16 amx_int8"), True),  # Sapphire Rapids
        ("Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimdhp bf16 i8mm\n", True),  # Neoverse V1
        ("Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n", False),
    ],
)
def test_a_cpu_engine_computes_in_bf16_only_where_the_cpu_has_it(cpuinfo, native):
    assert cpu_has_bf16(cpuinfo) is native


def test_an_explicit_dtype_is_passed_as_it_is():
    for accelerator in ("cpu", "gpu"):
        cfg = RagConfig.load(None, {"llm": {"dtype": "bfloat16", "accelerator": accelerator}})
        assert llm_config_kwargs(cfg, "/m")["engine_kwargs"]["dtype"] == "bfloat16"
    with pytest.raises(ConfigError, match="llm.dtype"):
        RagConfig.load(None, {"llm": {"dtype": "fp8"}})
