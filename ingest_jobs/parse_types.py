"""What every parser produces: a document's title, URL, type and sections (heading path, text, page), so chunking,
embedding and search need no case per format; or ParseSkip with the reason the job's summary shows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rag.schema import DocType


class ParseSkip(ValueError):
    """The file cannot become a document; the message is the reason shown in the job summary."""


@dataclass
class Section:
    heading_path: list[str]
    text: str
    page: int = 0  # 1-based page (a PDF's) or slide; 0 for a document without pages
    kind: Literal["text", "table"] = "text"  # a table: Markdown rows, its header first, split by rows


@dataclass
class ParsedDocument:
    title: str
    url: str
    doc_type: DocType
    sections: list[Section] = field(default_factory=list)
