"""chunk: split each section of a parsed document into overlapping passages that keep their title, URL and headings."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

from langchain_text_splitters import RecursiveCharacterTextSplitter

from ingest_jobs.parse import ParsedDocument
from rag.config import ChunkConfig
from rag.schema import MAX_LENGTH

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


def split_table(table: str, cfg: ChunkConfig) -> list[str]:
    """A Markdown table whole where it fits in a chunk, else in runs of whole rows, each under the table's header
    and separator rows so every piece still says what its columns are. A header that takes half a chunk or more
    is no help to repeat: such a table, and any row too long for a chunk beside its header, is split as text."""
    if len(table) <= cfg.chunk_size:
        return [table]
    lines = table.split("\n")
    header, rows = "\n".join(lines[:2]), lines[2:]
    if not rows or 2 * len(header) >= cfg.chunk_size:
        return _splitter(cfg.chunk_size, cfg.chunk_overlap).split_text(table)
    room = cfg.chunk_size - len(header) - 1
    pieces: list[str] = []
    run: list[str] = []
    for row in rows:
        if len(row) > room:  # alone, and in pieces that each still fit under the header
            if run:
                pieces.append("\n".join([header, *run]))
                run = []
            pieces += [
                f"{header}\n{part}" for part in _splitter(room, min(cfg.chunk_overlap, room // 2)).split_text(row)
            ]
            continue
        if run and len(header) + sum(len(r) + 1 for r in [*run, row]) > cfg.chunk_size:
            pieces.append("\n".join([header, *run]))
            run = []
        run.append(row)
    if run:
        pieces.append("\n".join([header, *run]))
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
    title = doc.title[: MAX_LENGTH["title"]]  # a PDF's metadata or a document's heading may be any length
    doc_id = doc_id_of(source)
    pieces = [
        (HEADING_SEPARATOR.join(section.heading_path)[: MAX_LENGTH["heading"]], text, section.page)
        for section in doc.sections
        for text in (split_table(section.text, cfg) if section.kind == "table" else splitter.split_text(section.text))
    ]
    return [
        {
            "id": chunk_id_of(doc_id, index, text),
            "doc_id": doc_id,
            "source": source,
            "url": doc.url,
            "title": title,
            "heading": heading,
            "doc_type": doc.doc_type,
            "chunk_index": index,
            "chunk_count": len(pieces),
            "page": page,
            "doc_hash": doc_hash,
            "text": text,
            "embed_text": embed_text_of(title, heading, text, cfg),
        }
        for index, (heading, text, page) in enumerate(pieces)
    ]
