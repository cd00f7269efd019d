"""parse, for Word documents and slide decks (python-docx, python-pptx): their structure into sections.

DOCX: headings from the paragraph styles (Title, Heading 1-9), list items as "- " lines, tables as Markdown rows
in a section of their own (chunking keeps a table whole where it fits and repeats its header row where it splits
one). PPTX: a section per slide, its title as the heading, its speaker notes included, the slide number as the
page. Both are zip files: one that would unpack past ``parse.max_unzipped_bytes`` or declares XML entities is
skipped before any XML is parsed.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Callable, Iterator
from typing import Any

import docx
import pptx
from docx.table import Table
from docx.text.paragraph import Paragraph

from ingest_jobs.parse_types import ParsedDocument, ParseSkip, Section
from rag.config import ParseConfig

ZIP_MAGIC = b"PK\x03\x04"
DOCX_PART, PPTX_PART = "word/document.xml", "ppt/presentation.xml"
_HEADING_STYLE = re.compile(r"^Heading (\d)$")
_ENTITY_DECLARATION = re.compile(rb"<!(DOCTYPE|ENTITY)", re.I)
LIST_STYLES = ("List", "List Bullet", "List Number", "List Paragraph", "Compact")


def office_type(data: bytes) -> str | None:
    """'docx' or 'pptx' by the zip's parts, or None: the file's content decides, never its name."""
    if not data.startswith(ZIP_MAGIC):
        return None
    try:
        names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    except (zipfile.BadZipFile, ValueError, EOFError):  # a broken zip (or a name that is not what it claims)
        return None
    return "docx" if DOCX_PART in names else "pptx" if PPTX_PART in names else None


def check_zip(data: bytes, cfg: ParseConfig) -> None:
    """A zip bomb (parts that unpack past the limit) or XML that declares entities (XXE, billion laughs) is skipped
    before python-docx or python-pptx parses a byte of it. Part sizes are the zip's own records, which reading
    never exceeds, so the XML scan itself stays within the limit."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except zipfile.BadZipFile as e:
        raise ParseSkip(f"unreadable zip (truncated or corrupt): {e}") from None
    unpacked = sum(info.file_size for info in infos)
    if unpacked > cfg.max_unzipped_bytes:
        raise ParseSkip(
            f"zip bomb: unpacks to {unpacked:,} bytes > parse.max_unzipped_bytes={cfg.max_unzipped_bytes:,}"
        )
    for info in infos:
        if info.filename.endswith((".xml", ".rels")):
            try:
                part = archive.read(info)
            except (zipfile.BadZipFile, OSError, EOFError) as e:
                raise ParseSkip(f"unreadable zip (truncated or corrupt): {e}") from None
            if _ENTITY_DECLARATION.search(part):
                raise ParseSkip(f"{info.filename} declares XML entities (not expanded)")


def open_package(data: bytes, cfg: ParseConfig, kind: str, reader: Callable[[io.BytesIO], Any]) -> Any:
    """The package read by python-docx or python-pptx once ``check_zip`` has passed it; they raise whatever their
    zip and XML readers raise for a broken one, which is a skip with its reason."""
    check_zip(data, cfg)
    try:
        return reader(io.BytesIO(data))
    except Exception as e:
        raise ParseSkip(f"unreadable {kind}: {type(e).__name__}: {e}") from None


def parse_docx(data: bytes, source: str, cfg: ParseConfig) -> ParsedDocument:
    document = open_package(data, cfg, "DOCX", docx.Document)
    title = (document.core_properties.title or "").strip()
    headings: list[tuple[int, str]] = []  # (level, text), the open headings above the current paragraph
    sections: list[Section] = [Section([], "")]
    lines: list[list[str]] = [[]]  # each section's lines, joined once at the end
    for block in _blocks(document):
        path = [t for _, t in headings]
        if isinstance(block, Table):
            sections.append(Section(path, markdown_table(_rows(block)), kind="table"))
            sections.append(Section(path, ""))
            lines += [[], []]
            continue
        text = " ".join(block.text.split())
        style = block.style.name if block.style is not None else ""
        if not text:
            continue
        if style == "Title":
            title = title or text
        elif heading := _HEADING_STYLE.match(style):
            level = int(heading.group(1))
            while headings and headings[-1][0] >= level:
                headings.pop()
            headings.append((level, text))
            sections.append(Section([t for _, t in headings], ""))
            lines.append([])
        else:
            lines[-1].append(f"- {text}" if style.startswith(LIST_STYLES) or _numbered(block) else text)
    for section, section_lines in zip(sections, lines):
        if section.kind == "text":
            section.text = "\n".join(section_lines)
    first_heading = next((s.heading_path[0] for s in sections if s.heading_path), "")
    title = title or first_heading or source.rsplit("/", 1)[-1]
    return ParsedDocument(title=title, url=source, doc_type="docx", sections=sections)


def _blocks(document: Any) -> Iterator[Paragraph | Table]:
    """Paragraphs and tables in document order (python-docx lists each kind apart)."""
    for child in document.element.body.iterchildren():
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "p":
            yield Paragraph(child, document)
        elif tag == "tbl":
            yield Table(child, document)


def _numbered(paragraph: Paragraph) -> bool:
    properties = paragraph._p.pPr
    return properties is not None and properties.numPr is not None


def _rows(table: Table) -> list[list[str]]:
    return [[" ".join(cell.text.split()) for cell in row.cells] for row in table.rows]


def markdown_table(rows: list[list[str]]) -> str:
    """Rows as a Markdown table, the first as its header; a pipe inside a cell is escaped."""
    if not rows:
        return ""
    width = max(len(row) for row in rows)
    cells = [[cell.replace("|", "\\|") for cell in row] + [""] * (width - len(row)) for row in rows]
    lines = ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join([lines[0], "|" + " --- |" * width, *lines[1:]])


def parse_pptx(data: bytes, source: str, cfg: ParseConfig) -> ParsedDocument:
    deck = open_package(data, cfg, "PPTX", pptx.Presentation)
    sections = []
    for number, slide in enumerate(deck.slides, start=1):
        title_shape = slide.shapes.title
        heading = " ".join(title_shape.text_frame.text.split()) if title_shape is not None else ""
        parts = []
        for shape in slide.shapes:
            if title_shape is not None and shape.shape_id == title_shape.shape_id:  # proxies differ, ids do not
                continue
            if shape.has_text_frame:
                parts += [" ".join(p.text.split()) for p in shape.text_frame.paragraphs]
            if getattr(shape, "has_table", False) and shape.has_table:
                rows = [[" ".join(cell.text.split()) for cell in row.cells] for row in shape.table.rows]
                parts.append(markdown_table(rows))
        if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
            notes = slide.notes_slide.notes_text_frame.text.strip()
            parts.append(f"Notes: {notes}" if notes else "")
        text = "\n".join(p for p in parts if p) or heading  # a slide of a title alone still says something
        sections.append(Section([heading or f"Slide {number}"], text, page=number))
    if not any(s.text for s in sections):
        raise ParseSkip("no text in any slide (pictures are not read)")
    title = (deck.core_properties.title or "").strip() or next(
        (s.heading_path[0] for s in sections if not s.heading_path[0].startswith("Slide ")), source.rsplit("/", 1)[-1]
    )
    return ParsedDocument(title=title, url=source, doc_type="pptx", sections=sections)
