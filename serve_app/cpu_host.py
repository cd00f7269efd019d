"""CPU-host tuning for the embedded default: a vLLM CPU engine sharing 2 cores with the proxy, the replicas and
milvus-lite. Everything here is switched by one flag, ``llm.cpu_host_tuning`` (on in configs/local.yaml, off in
configs/gpu.yaml); nothing of it runs on a GPU cluster. Why each piece exists, with its measurements:
docs/serving.md and docs/benchmarks.md."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import psutil
from ray.serve.llm import LLMServer

from rag.config import EngineConfig

T = TypeVar("T")
logger = logging.getLogger(__name__)


def cpu_engine_settings(cfg: EngineConfig) -> dict[str, Any] | None:
    """``settle_cpu_engine``'s arguments from the config; None when the tuning is off."""
    if not cfg.cpu_host_tuning:
        return None
    return {"nice": cfg.cpu_nice, "scheduler_on_worker_cores": cfg.cpu_scheduler_on_worker_cores}


def llm_server_options(cfg: EngineConfig) -> dict[str, Any]:
    """``build_llm_deployment``'s deployment class and bind arguments: the tuned server on a small CPU host,
    Ray's own LLMServer otherwise."""
    if (settings := cpu_engine_settings(cfg)) is None:
        return {}
    return {"deployment_cls": CpuHostLLMServer, "bind_kwargs": {"cpu_engine": settings}}


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
    cores = set().union(*(os.sched_getaffinity(t.id) for w in workers for t in _threads(w)))
    target = min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice)
    pin = scheduler_on_worker_cores and bool(cores)
    for process in engine:
        for thread in _threads(process):
            try:
                if nice:
                    os.setpriority(os.PRIO_PROCESS, thread.id, max(target, os.getpriority(os.PRIO_PROCESS, thread.id)))
                if pin and process.pid in scheduler_pids:
                    os.sched_setaffinity(thread.id, cores)
            except ProcessLookupError:  # the thread ended meanwhile
                pass
    logger.info("CPU engine at nice >= %d%s", target, f", scheduler on cores {sorted(cores)}" if pin else "")


def _threads(process: psutil.Process) -> list[Any]:
    return _quietly(process.threads, [])


def _quietly(read: Callable[[], T], default: T) -> T:
    """A psutil read of a process that may have ended meanwhile."""
    try:
        return read()
    except psutil.Error:
        return default


class CpuHostLLMServer(LLMServer):
    """Ray's LLMServer with the CPU engine settled once it has started (``settle_cpu_engine``): vLLM's CPU engine
    keeps a scheduler process spinning on a core of its own, which on a small host starves the proxy, ingress,
    embedder and Milvus."""

    async def __init__(self, llm_config: Any, *, cpu_engine: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[misc]  # Serve awaits LLMServer's async __init__
        await super().__init__(llm_config, **kwargs)
        settle_cpu_engine(**cpu_engine)
