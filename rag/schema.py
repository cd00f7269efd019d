"""The chunk collection's schema, in one place: its fields and their Milvus types, the document types, and how a
value is quoted in a filter expression. The store creates the collection from ``FIELDS``, the ingest job's rows
carry ``STORED_FIELDS``, and a search returns ``SOURCE_FIELDS``; a new field is one ``Field`` here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from pymilvus import DataType

DocType = Literal["html", "markdown", "text", "pdf", "docx", "pptx"]
DOC_TYPES: tuple[str, ...] = get_args(DocType)
TEXT_MAX_CHARS = 65_535


@dataclass(frozen=True)
class Field:
    """One scalar field of a chunk. ``written``: the ingest job's rows carry it (else the store sets it on write);
    ``source``: a search returns it in each passage's ``Source`` (the id comes with every hit)."""

    name: str
    dtype: DataType
    max_length: int | None = None
    written: bool = True
    source: bool = False


# The primary key, the text (BM25 is computed from it) and the dense vector come first; the sparse BM25 field is the
# store's, added when milvus.bm25 is on.
FIELDS: tuple[Field, ...] = (
    Field("id", DataType.VARCHAR, 64),
    Field("text", DataType.VARCHAR, TEXT_MAX_CHARS, source=True),
    Field("doc_id", DataType.VARCHAR, 64),
    Field("source", DataType.VARCHAR, 2048, source=True),
    Field("url", DataType.VARCHAR, 2048, source=True),
    Field("title", DataType.VARCHAR, 1024, source=True),
    Field("heading", DataType.VARCHAR, 2048, source=True),
    Field("doc_type", DataType.VARCHAR, 16, source=True),
    Field("chunk_index", DataType.INT64),
    Field("page", DataType.INT64, source=True),  # 1-based page of a PDF (slide of a deck); 0: not paged
    Field("chunk_count", DataType.INT64),
    Field("doc_hash", DataType.VARCHAR, 64),
    Field("ingest_time", DataType.INT64, written=False),
)
PRIMARY_KEY, TEXT_FIELD, VECTOR_FIELD, SPARSE_FIELD = "id", "text", "vector", "sparse"
STORED_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.written)
MAX_LENGTH: dict[str, int] = {f.name: f.max_length for f in FIELDS if f.max_length}
SOURCE_FIELDS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.source)


def quote(value: str) -> str:
    """A string literal of a Milvus expression: backslashes and double quotes escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(quote(v) for v in values) + "]"
