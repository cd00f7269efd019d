"""The row shape that flows through the pipeline: chunks, plus one status row per document not chunked,
so skips and unchanged documents travel with the stream instead of a second pass."""

from rag.schema import STORED_FIELDS

CHUNK = "chunk"
SKIPPED = "skipped"
UNCHANGED = "unchanged"

ROW_COLUMNS = (*STORED_FIELDS, "embed_text", "status", "reason")
RESULT_COLUMNS = ("id", "doc_id", "source", "status", "reason")


def status_row(status: str, *, source: str, doc_id: str, reason: str = "") -> dict[str, str | int]:
    row: dict[str, str | int] = dict.fromkeys(ROW_COLUMNS, "")
    row.update(chunk_index=0, chunk_count=0, page=0, status=status, source=source, doc_id=doc_id, reason=reason)
    return row
