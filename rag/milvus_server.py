"""Manages the embedded default's Milvus: a ``milvus-lite server`` on loopback.

A milvus-lite ``.db`` opens in one process only, and Ray workers and Serve replicas are many, so
locally every part connects by URI to one server process, exactly as to a Milvus cluster.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from rag.config import LOOPBACK_HOSTS, MilvusConfig
from rag.store import MilvusUnavailable


def _host_port(uri: str) -> tuple[str, int]:
    parsed = urlparse(uri)
    return parsed.hostname or "127.0.0.1", parsed.port or 19530


def is_loopback(uri: str) -> bool:
    return _host_port(uri)[0] in LOOPBACK_HOSTS


def answers(uri: str, timeout_s: float = 1.0) -> bool:
    """True when something accepts TCP connections at the URI's host and port."""
    try:
        with socket.create_connection(_host_port(uri), timeout=timeout_s):
            return True
    except OSError:
        return False


def _pid_file(cfg: MilvusConfig) -> Path:
    return Path(cfg.local_data_dir) / "server.pid"


# One search is small; concurrency comes from concurrent queries. Multi-threaded FAISS/BLAS kernels next to a
# CPU inference engine spin in their barriers and turned 13 ms searches into seconds under load.
SINGLE_THREADED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def start_local(cfg: MilvusConfig, wait_s: float = 60.0) -> int:
    """Starts a detached milvus-lite server for ``cfg.uri`` (it outlives this process) and waits until it answers.

    Its own process group keeps a Ctrl-C to the caller away from it. It stays in the caller's session: with
    Linux's autogroup scheduling a new session is a new CPU group, where nice means nothing to the rest; beside a
    busy CPU engine it then waited runnable for seconds at a time (README, Benchmarks: scheduling fixes).
    """
    if not is_loopback(cfg.uri):
        raise MilvusUnavailable(f"refusing to start a local Milvus for non-loopback URI {cfg.uri}")
    host, port = _host_port(cfg.uri)
    data_dir = Path(cfg.local_data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "milvus_lite",
                "server",
                "--data-dir",
                str(data_dir),
                "--host",
                host,
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            process_group=0,
            env={**os.environ, **SINGLE_THREADED},
        )
    _pid_file(cfg).write_text(str(proc.pid))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MilvusUnavailable(f"milvus-lite server exited with {proc.returncode}; see {data_dir / 'server.log'}")
        if answers(cfg.uri, 0.5):
            return proc.pid
        time.sleep(0.2)
    proc.terminate()
    raise MilvusUnavailable(f"milvus-lite server did not answer at {cfg.uri} within {wait_s:.0f}s")


def stop_local(cfg: MilvusConfig, wait_s: float = 20.0) -> bool:
    """Stops the server ``start_local`` started; False when none was running."""
    pid_file = _pid_file(cfg)
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if not _wait_exited(pid, wait_s):
        os.kill(pid, signal.SIGKILL)
        _wait_exited(pid, 5.0)  # reaps it too, when this process started it
    return True


def _wait_exited(pid: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while not _exited(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _exited(pid: int) -> bool:
    try:  # started by this process (tests, benches): reap it, or it lingers as a zombie that still "exists"
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    except ChildProcessError:  # started by another process (`rag milvus start`)
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def ensure_milvus(cfg: MilvusConfig) -> bool:
    """Makes sure Milvus answers at ``cfg.uri``, starting the local server if allowed; True if it started one."""
    if answers(cfg.uri):
        return False
    if cfg.manage_local and is_loopback(cfg.uri):
        start_local(cfg)
        return True
    raise MilvusUnavailable(f"cannot reach Milvus at {cfg.uri}")
