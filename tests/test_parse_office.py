"""The DOCX and PPTX parsers on pages of the shared Milvus docs converted by pandoc (Debian's), and on hostile
packages built from them: a zip bomb, XML that declares entities, a name that lies, a deck of pictures."""

from __future__ import annotations

import io
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from ingest_jobs.chunk import chunk_document
from ingest_jobs.parse import ParseSkip, parse_document
from rag.config import ChunkConfig, ParseConfig
from tests.conftest import MILVUS_DOCS

LIMITS_PAGE = MILVUS_DOCS / "about" / "limitations.html"


def convert(page: Path, to: str, out_dir: Path) -> bytes:
    """``page`` converted by pandoc into ``to`` (docx, pptx)."""
    out = out_dir / f"{page.stem}.{to}"
    subprocess.run(["pandoc", "-f", "html", "-t", to, "-o", str(out), str(page)], check=True, timeout=120)
    return out.read_bytes()


@pytest.fixture(scope="module")
def limits_docx(tmp_path_factory) -> bytes:
    return convert(LIMITS_PAGE, "docx", tmp_path_factory.mktemp("docx"))


@pytest.fixture(scope="module")
def limits_pptx(tmp_path_factory) -> bytes:
    return convert(LIMITS_PAGE, "pptx", tmp_path_factory.mktemp("pptx"))


def test_docx_headings_come_from_styles_and_tables_become_markdown_rows(limits_docx):
    doc = parse_document(limits_docx, "limitations.docx", ParseConfig())
    assert doc.title == "Milvus Limits" and doc.doc_type == "docx"
    (naming,) = [s for s in doc.sections if s.text.startswith("The name of a resource can contain numbers")]
    assert naming.heading_path == ["Milvus Limits", "Naming rules"]
    (table,) = [s for s in doc.sections if s.heading_path[-1] == "Number of resources in a collection"]
    rows = table.text.split("\n")
    assert table.kind == "table" and rows[:2] == ["| Resource | Limit |", "| --- | --- |"]
    assert "| Partition | 4,096 |" in rows and "| Shard | 16 |" in rows  # each cell in its row


def test_a_table_stays_in_one_chunk_where_it_fits_and_repeats_its_header_where_it_is_split(limits_docx):
    doc = parse_document(limits_docx, "limitations.docx", ParseConfig())
    whole = chunk_document(doc, source="limitations.docx", doc_hash="h", cfg=ChunkConfig())
    (collection,) = [c for c in whole if c["heading"].endswith("Number of resources in a collection")]
    assert "| Partition | 4,096 |" in collection["text"] and "| Shard | 16 |" in collection["text"]
    small = ChunkConfig(chunk_size=80, chunk_overlap=8)
    split = [c for c in chunk_document(doc, source="l.docx", doc_hash="h", cfg=small) if c["text"].startswith("| ")]
    pieces = [c for c in split if c["heading"].endswith("Number of resources in a collection")]
    assert len(pieces) > 1 and all(c["text"].startswith("| Resource | Limit |\n| --- | --- |\n") for c in pieces)
    body_rows = [row for c in pieces for row in c["text"].split("\n")[2:]]
    assert len(body_rows) == len(set(body_rows)) and "| Partition | 4,096 |" in body_rows  # each row once


def test_pptx_has_a_section_per_slide_with_its_number_as_the_page(limits_pptx):
    doc = parse_document(limits_pptx, "limitations.pptx", ParseConfig())
    assert doc.title == "Milvus Limits" and doc.doc_type == "pptx"
    pages = [s.page for s in doc.sections]
    assert pages == sorted(set(pages)) and pages[0] == 1
    (strings,) = [s for s in doc.sections if "Length of a string" in s.text]
    assert "| VARCHAR | 65,535 |" in strings.text and strings.page > 1


def test_speaker_notes_are_read(tmp_path):
    import pptx

    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Quarterly plan"
    slide.placeholders[1].text = "Ship the index"
    slide.notes_slide.notes_text_frame.text = "Mention the HNSW rebuild"
    out = io.BytesIO()
    deck.save(out)
    (section,) = parse_document(out.getvalue(), "plan.pptx", ParseConfig()).sections
    assert section.heading_path == ["Quarterly plan"] and section.page == 1
    assert section.text == "Ship the index\nNotes: Mention the HNSW rebuild"


def rezip(data: bytes, replace: dict[str, bytes]) -> bytes:
    """The package with some parts replaced (or added)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, replace.pop(info.filename, source.read(info)))
        for name, part in replace.items():
            target.writestr(name, part)
    return out.getvalue()


def test_a_zip_bomb_is_skipped_before_it_is_unpacked(limits_docx):
    bomb = rezip(limits_docx, {"word/media/zeros.bin": bytes(300_000_000)})
    assert len(bomb) < 1_000_000
    with pytest.raises(ParseSkip, match=r"zip bomb: unpacks to 300,\d{3},\d{3} bytes > parse.max_unzipped_bytes"):
        parse_document(bomb, "bomb.docx", ParseConfig())


def test_xml_that_declares_entities_is_skipped(limits_docx):
    part = zipfile.ZipFile(io.BytesIO(limits_docx)).read("word/document.xml")
    declaration = b'<!DOCTYPE w [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    xxe = rezip(limits_docx, {"word/document.xml": part.replace(b"?>", b"?>" + declaration, 1)})
    with pytest.raises(ParseSkip, match=re.escape("word/document.xml declares XML entities (not expanded)")):
        parse_document(xxe, "xxe.docx", ParseConfig())


def test_a_name_that_lies_and_a_deck_of_pictures_are_skipped_with_reasons(tmp_path):
    import pptx
    from PIL import Image

    with pytest.raises(ParseSkip, match="not a DOCX: the content is HTML"):
        parse_document(b"<html><body>hello</body></html>", "report.docx", ParseConfig())
    picture = tmp_path / "p.png"
    Image.new("RGB", (64, 64), "red").save(picture)
    deck = pptx.Presentation()
    deck.slides.add_slide(deck.slide_layouts[6]).shapes.add_picture(str(picture), 0, 0)
    out = io.BytesIO()
    deck.save(out)
    with pytest.raises(ParseSkip, match=re.escape("no text in any slide (pictures are not read)")):
        parse_document(out.getvalue(), "pictures.pptx", ParseConfig())


def test_docx_heading_levels_nest_by_level_not_by_position():
    import docx

    document = docx.Document()
    document.add_heading("A", level=1)
    document.add_heading("B", level=3)
    document.add_paragraph("under B")
    document.add_heading("C", level=3)
    document.add_paragraph("under C")
    out = io.BytesIO()
    document.save(out)
    sections = {s.text: s.heading_path for s in parse_document(out.getvalue(), "h.docx", ParseConfig()).sections}
    assert sections == {"under B": ["A", "B"], "under C": ["A", "C"]}


def test_a_text_file_that_mentions_the_pdf_header_stays_text():
    doc = parse_document(b"# Notes\n\nA PDF starts with %PDF-1.7 on its first line.\n", "notes.md", ParseConfig())
    assert doc.doc_type == "markdown"
