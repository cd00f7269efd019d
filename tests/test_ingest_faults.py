"""Faults in the ingest job, against the real cluster, Milvus and model: a driver or an embedding worker killed
mid-run, and a corpus of hostile files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from ingest_jobs.chunk import doc_id_of
from ingest_jobs.ingest import run_ingest
from rag.config import RagConfig
from rag.prepare import prepare
from rag.store import MilvusChunkStore
from tests.conftest import REPO, copy_pages
from tests.test_ingest import PAGES, make_cfg
from tests.test_parse import BILLION_LAUGHS, nested_divs

STALE_HASH = "0" * 32


def chunk_ids(cfg: RagConfig) -> list[str]:
    return sorted(row["id"] for row in MilvusChunkStore(cfg.milvus, cfg.embedder.dim).iter_rows(["id"]))


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = 180, pause_s: float = 0.1) -> object:
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"no {what} in {timeout_s:.0f} s"
        time.sleep(pause_s)
    return result


def half_written(store: MilvusChunkStore) -> set[str]:
    """Documents with some of this version's chunks stored, but not all."""
    rows = [r for r in store.iter_rows(["doc_id", "chunk_count", "doc_hash"]) if r["doc_hash"] != STALE_HASH]
    stored = Counter(r["doc_id"] for r in rows)
    expected = {r["doc_id"]: r["chunk_count"] for r in rows}
    return {doc for doc, n in stored.items() if n < expected[doc]}


def stale_row(source: str, dim: int) -> dict:
    """A chunk of an earlier version of ``source``, which the next run must delete."""
    return {
        "id": "stale-" + uuid.uuid4().hex,
        "text": "an earlier version",
        "vector": [1.0] + [0.0] * (dim - 1),
        "doc_id": doc_id_of(source),
        "source": source,
        "url": source,
        "title": "old",
        "heading": "",
        "doc_type": "html",
        "chunk_index": 0,
        "chunk_count": 1,
        "page": 0,
        "doc_hash": STALE_HASH,
        "ingest_time": 0,
    }


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    return copy_pages(tmp_path_factory.mktemp("faults") / "corpus", PAGES)


@pytest.fixture(scope="module")
def clean_ids(ray_cluster, milvus_uri, pages) -> list[str]:
    """The chunk ids of an uninterrupted run: what every run after a fault must end with."""
    cfg = make_cfg(pages, milvus_uri, f"t_{uuid.uuid4().hex[:12]}")
    summary = run_ingest(prepare(cfg, corpus=True))
    assert summary.documents_written == len(PAGES) and summary.skipped == []
    return chunk_ids(cfg)


def kill_driver_at_first_writes(cfg: RagConfig, pages, ray_cluster, log) -> set[str]:
    """Runs the ingest driver as a subprocess into ``cfg``'s collection (seeded with a stale chunk), SIGKILLs it at
    its first writes, waits for the writes in flight to land, and returns the documents left half-written."""
    store = MilvusChunkStore(cfg.milvus, cfg.embedder.dim)
    store.ensure_collection()
    store.upsert([stale_row(PAGES[0], cfg.embedder.dim)])
    settings = [f"--set=milvus.write_batch_size={cfg.milvus.write_batch_size}"]
    with open(log, "w") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "ingest_jobs.ingest", "--corpus", str(pages), "--milvus-uri", cfg.milvus.uri]
            + ["--collection", cfg.milvus.collection, *settings],
            cwd=REPO,
            env={**os.environ, "RAY_ADDRESS": ray_cluster.address_info["gcs_address"]},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: store.count() > 1 or driver.poll() is not None, "first writes", pause_s=0.02)
        assert driver.poll() is None, log.read_text()[-3000:]
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    before = -1
    while (rows := store.count()) != before:  # Ray ends the dead driver's actors; a write in flight may still land
        before = rows
        time.sleep(1)
    return half_written(store)


def test_killed_driver_then_rerun_leaves_exactly_the_clean_chunks(
    ray_cluster, milvus_uri, collection, pages, clean_ids, tmp_path
):
    # One row per upsert, so the write stage lasts long enough to stop it with a document half-written. Whether the
    # kill lands inside a document depends on the blocks in flight: a few tries, each into a fresh collection.
    for attempt in range(3):
        name = f"{collection}_{attempt}"
        cfg = make_cfg(pages, milvus_uri, name, milvus={"write_batch_size": 1})
        if broken := kill_driver_at_first_writes(cfg, pages, ray_cluster, tmp_path / f"driver{attempt}.log"):
            break
    assert broken and chunk_ids(cfg) != clean_ids

    rerun = run_ingest(prepare(cfg, corpus=True))
    assert chunk_ids(cfg) == clean_ids  # nothing lost, nothing twice, no stale chunk
    assert rerun.documents_written >= len(broken) and rerun.documents_written + rerun.unchanged == len(PAGES)
    assert rerun.chunks_deleted_stale >= 1 and rerun.collection_rows == len(clean_ids)


def embedding_worker_busy() -> psutil.Process | None:
    """This test cluster's ChunkEmbedder worker while it embeds a batch: Ray titles it
    ``ray::MapWorker(MapBatches(ChunkEmbedder)).submit`` then, and without ``.submit`` when idle."""
    for proc in psutil.Process().children(recursive=True):
        try:
            if "(ChunkEmbedder)).submit" in " ".join(proc.cmdline()):
                return proc
        except psutil.Error:
            continue
    return None


def test_killed_embedding_worker_is_restarted_and_the_run_completes(
    ray_cluster, milvus_uri, collection, pages, clean_ids
):
    cfg = make_cfg(pages, milvus_uri, collection)
    store = MilvusChunkStore(cfg.milvus, cfg.embedder.dim)
    store.ensure_collection()
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_ingest, prepare(cfg, corpus=True))
        victim = wait_for(lambda: embedding_worker_busy() or run.done(), "busy embedding worker", pause_s=0.02)
        assert not run.done(), run.result()
        victim.kill()
        victim.wait(timeout=30)
        summary = run.result(timeout=300)  # Ray Data restarts the actor and retries its batch (max_restarts=-1)
    assert summary.documents_written == len(PAGES) and summary.skipped == []
    assert chunk_ids(cfg) == clean_ids and summary.chunks_written == len(clean_ids)


def test_hostile_files_are_skipped_with_reasons_and_good_ones_written(ray_cluster, milvus_uri, collection, tmp_path):
    root = copy_pages(tmp_path / "corpus", PAGES[:2])
    (root / "deep.html").write_bytes(nested_divs(100_000))
    (root / "lol.html").write_bytes(BILLION_LAUGHS)
    with open(root / "sparse.txt", "wb") as f:
        f.truncate(1 << 30)
    (root / "grows.md").write_text("# Grows\nwhile the job runs\n")
    (root / "a.md").symlink_to("b.md")
    (root / "b.md").symlink_to("a.md")
    (root / "up").symlink_to(".")
    (root / os.fsdecode(b"bad\xffname.txt")).write_text("not UTF-8 in the name")
    (root / "new\nline.md").write_text("a newline in the name")

    stop = threading.Event()

    def keep_growing() -> None:  # a file written while the job runs: its listed size is stale when it is read
        while not stop.is_set():
            with open(root / "grows.md", "a") as f:
                f.write("more\n")
            time.sleep(0.005)

    writer = threading.Thread(target=keep_growing)
    writer.start()
    try:
        summary = run_ingest(prepare(make_cfg(root, milvus_uri, collection), corpus=True))
    finally:
        stop.set()
        writer.join()
    reasons = {s.source: s.reason for s in summary.skipped}
    assert re.fullmatch(r"changed while read: \d+ bytes when listed, over \d+ when read", reasons.pop("grows.md"))
    assert reasons == {
        "deep.html": "too deeply nested: over parse.max_html_depth=256 levels",
        "lol.html": "DOCTYPE declares entities (not expanded)",
        "sparse.txt": "oversized: 1073741824 bytes > corpus.max_file_bytes=5000000",
        "a.md": "unreadable: Too many levels of symbolic links",
        "b.md": "unreadable: Too many levels of symbolic links",
        "up/": "symlinked folder, not followed",
        "bad\\xffname.txt": "file name is not UTF-8",
        "new\\nline.md": "file name has control characters",
    }
    assert summary.documents_written == 2 and summary.collection_rows == summary.chunks_written > 0
    assert len(summary.format().splitlines()) == 3 + len(summary.skipped)  # one line per skipped file
