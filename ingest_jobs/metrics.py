"""Ingest metrics for throughput tuning, through ``ray.util.metrics``: exported with a ``ray_`` prefix on the
node's metrics port, beside Ray Data's own. Counters outlive the job's driver, so a run's totals stay scrapable."""

from __future__ import annotations

from ray.util.metrics import Counter, Histogram

from ingest_jobs.summary import IngestSummary

CHUNKS_PER_S_BOUNDARIES: list[float] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000]


def reason_kind(reason: str) -> str:
    """A skip reason without its particulars (``oversized: 6000000 bytes > ...`` → ``oversized``), one series each."""
    return reason.split(":", 1)[0].strip() or "unknown"


class IngestMetrics:
    """``chunks_written`` as batches reach the driver (a live rate); the run's totals from its summary."""

    def __init__(self) -> None:
        self.documents = Counter(
            "rag_ingest_documents",
            description="Documents by outcome: read, written, unchanged, skipped (with the reason).",
            tag_keys=("outcome", "reason"),
        )
        self.chunks = Counter(
            "rag_ingest_chunks", description="Chunks written, deleted as stale and pruned.", tag_keys=("op",)
        )
        self.seconds = Counter("rag_ingest_seconds", description="Wall-clock seconds of ingest runs.")
        self.chunks_per_s = Histogram(
            "rag_ingest_chunks_per_second",
            description="Chunks written per second, one observation per run.",
            boundaries=CHUNKS_PER_S_BOUNDARIES,
        )

    def chunks_written(self, n: int) -> None:
        if n:
            self.chunks.inc(n, tags={"op": "written"})

    def run_finished(self, summary: IngestSummary) -> None:
        outcomes = {"read": summary.documents, "written": summary.documents_written, "unchanged": summary.unchanged}
        for outcome, n in outcomes.items():
            if n:
                self.documents.inc(n, tags={"outcome": outcome, "reason": ""})
        for skipped in summary.skipped:
            self.documents.inc(1, tags={"outcome": "skipped", "reason": reason_kind(skipped.reason)})
        for op, n in (("deleted_stale", summary.chunks_deleted_stale), ("pruned", summary.chunks_pruned)):
            if n:
                self.chunks.inc(n, tags={"op": op})
        self.seconds.inc(summary.seconds)
        self.chunks_per_s.observe(summary.chunks_per_s)
