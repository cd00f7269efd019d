"""chunk: split each section of a parsed document into overlapping passages that keep their title, URL and headings."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

from langchain_text_splitters import RecursiveCharacterTextSplitter

from ingest_jobs.parse import ParsedDocument
from rag.config import ChunkConfig

HEADING_SEPARATOR = " > "


def sha256_hex(*parts: str | bytes, length: int = 32) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\x1f")
    return digest.hexdigest()[:length]


def doc_id_of(source: str) -> str:
    """A document's key: its path under the corpus root, so a moved corpus keeps its ids."""
    return sha256_hex(source)


def chunk_id_of(doc_id: str, index: int, text: str) -> str:
    """Deterministic: the same document, position and content always give the same primary key."""
    return sha256_hex(doc_id, str(index), text)


@lru_cache(maxsize=8)
def _splitter(chunk_size: int, chunk_overlap: int) -> RecursiveCharacterTextSplitter:
    return RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)


def split_table(table: str, chunk_size: int) -> list[str]:
    """A Markdown table whole where it fits in a chunk, else in runs of whole rows, each under the table's header
    and separator rows so every piece still says what its columns are. A row longer than a chunk stands alone
    under the header."""
    lines = table.split("\n")
    header, rows = lines[:2], lines[2:]
    if len(table) <= chunk_size or not rows:
        return [table]
    pieces: list[str] = []
    run: list[str] = []
    for row in rows:
        if run and len("\n".join([*header, *run, row])) > chunk_size:
            pieces.append("\n".join([*header, *run]))
            run = []
        run.append(row)
    pieces.append("\n".join([*header, *run]))
    return pieces


def embed_text_of(title: str, heading: str, text: str, cfg: ChunkConfig) -> str:
    """The text the embedder sees; with ``embed_headings`` it leads with where the passage sits."""
    if not cfg.embed_headings:
        return text
    if text.startswith(title):  # the passage opens with the title already (a first chunk, a BEIR abstract)
        title = ""
    context = HEADING_SEPARATOR.join(p for p in (title, heading) if p)
    return f"{context}\n{text}" if context else text


def chunk_document(doc: ParsedDocument, *, source: str, doc_hash: str, cfg: ChunkConfig) -> list[dict[str, Any]]:
    """One row per chunk, split within sections so no chunk straddles two headings."""
    splitter = _splitter(cfg.chunk_size, cfg.chunk_overlap)
    doc_id = doc_id_of(source)
    pieces = [
        (HEADING_SEPARATOR.join(section.heading_path), text, section.page)
        for section in doc.sections
        for text in (
            split_table(section.text, cfg.chunk_size) if section.kind == "table" else splitter.split_text(section.text)
        )
    ]
    return [
        {
            "id": chunk_id_of(doc_id, index, text),
            "doc_id": doc_id,
            "source": source,
            "url": doc.url,
            "title": doc.title,
            "heading": heading,
            "doc_type": doc.doc_type,
            "chunk_index": index,
            "chunk_count": len(pieces),
            "page": page,
            "doc_hash": doc_hash,
            "text": text,
            "embed_text": embed_text_of(doc.title, heading, text, cfg),
        }
        for index, (heading, text, page) in enumerate(pieces)
    ]
