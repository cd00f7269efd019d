"""What one ingest run did, as the job prints it and its metrics count it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ingest_jobs.read import Skipped


@dataclass
class IngestSummary:
    documents: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    unchanged: int = 0
    documents_written: int = 0
    chunks_written: int = 0
    chunks_deleted_stale: int = 0
    documents_pruned: int = 0
    chunks_pruned: int = 0
    collection_rows: int = 0
    import_job: str = ""
    seconds: float = 0.0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks_written / self.seconds if self.seconds else 0.0

    def format(self) -> str:
        lines = [
            f"documents read: {self.documents}  written: {self.documents_written}  unchanged: {self.unchanged}  "
            f"skipped: {len(self.skipped)}",
            f"chunks written: {self.chunks_written}  deleted as stale: {self.chunks_deleted_stale}  "
            f"pruned: {self.chunks_pruned} chunks of {self.documents_pruned} documents  "
            f"collection rows: {self.collection_rows}",
            f"seconds: {self.seconds:.1f}  chunks/s: {self.chunks_per_s:.1f}",
        ]
        if self.import_job:
            lines.append(f"Milvus import job: {self.import_job}")
        lines += [f"  skipped {s.source}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)
