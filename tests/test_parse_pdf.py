"""The PDF parser on PDFs nobody on this project wrote: a manual Debian ships (libtasn1-doc, with an outline and
running headers) and pages of the shared Milvus docs printed by headless Chromium (no outline; its own running
header and footer). Content is checked: headings, pages, no running text, and the skips' reasons."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from ingest_jobs.chunk import chunk_document
from ingest_jobs.parse import ParseSkip, parse_document
from rag.config import ChunkConfig, ParseConfig
from tests.conftest import LIBTASN1_PDF, MILVUS_DOCS

CHROMIUM = "/usr/bin/chromium"


def print_to_pdf(page: Path, out: Path, *, header_footer: bool) -> bytes:
    """``page`` printed by headless Chromium, with or without its running header (date, title) and footer (URL,
    page x/y)."""
    flags = [] if header_footer else ["--no-pdf-header-footer"]
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", *flags, f"--print-to-pdf={out}", page.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out.read_bytes()


@pytest.fixture(scope="module")
def manual():
    return parse_document(LIBTASN1_PDF.read_bytes(), "libtasn1.pdf", ParseConfig())


def section_with(doc, sentence: str):
    (section,) = [s for s in doc.sections if sentence in " ".join(s.text.split())]
    return section


def test_the_outline_gives_headings_and_every_section_its_page(manual):
    assert manual.title == "Libtasn1" and manual.doc_type == "pdf"
    size = section_with(manual, "The SIZE constraints are allowed, but no check is done on them.")
    assert size.page == 6 and size.heading_path == ["2 ASN.1 structure handling", "ASN.1 syntax"]
    naming = section_with(manual, "Consider this definition:")
    assert naming.page == 6 and naming.heading_path == ["2 ASN.1 structure handling", "Naming"]
    assert section_with(manual, "asn1Coding generates a DER encoding").heading_path[-1] == "Invoking asn1Coding"
    assert [s.page for s in manual.sections] == sorted(s.page for s in manual.sections)


def test_running_headers_and_page_numbers_are_gone(manual):
    lines = [line for s in manual.sections for line in s.text.split("\n")]
    assert not [line for line in lines if re.match(r"Chapter \d+: .* \d+$", line)]  # "Chapter 2: ASN.1 ... 3"
    assert not [line for line in lines if re.fullmatch(r"\d+", line)]
    assert len(lines) > 800


def test_words_broken_at_line_ends_are_joined(manual):
    notes = section_with(manual, "ASN1_MAX_NAME_SIZE is the maximum number")
    assert "allowed for an ASN.1 identifier." in " ".join(notes.text.split())
    assert "\ufffe" not in notes.text


def test_every_chunk_of_a_pdf_cites_one_page(manual):
    chunks = chunk_document(manual, source="libtasn1.pdf", doc_hash="h", cfg=ChunkConfig())
    assert {c["page"] for c in chunks} == {s.page for s in manual.sections} and min(c["page"] for c in chunks) == 1
    size = next(c for c in chunks if "The SIZE constraints are allowed" in c["text"])
    assert size["page"] == 6 and size["heading"] == "2 ASN.1 structure handling > ASN.1 syntax"


def test_a_printed_web_page_gets_headings_by_font_size_and_loses_its_header_and_footer(tmp_path):
    page = MILVUS_DOCS / "adminGuide" / "rbac.html"
    doc = parse_document(print_to_pdf(page, tmp_path / "rbac.pdf", header_footer=True), "rbac.pdf", ParseConfig())
    assert doc.title == "Enable RBAC"
    create = section_with(doc, "Create a user named user_1 with the password")
    assert create.heading_path == ["Enable RBAC", "2. Create a user"] and create.page == 1
    assert len({s.page for s in doc.sections}) >= 2
    text = "\n".join(s.text for s in doc.sections)
    assert page.as_uri() not in text and not re.search(r"^\d+/\d+$", text, re.M)  # Chromium's footer: URL, "1/3"
    assert not re.search(r"^\d+/\d+/\d+,? ", text, re.M)  # its header: the print date and the page title


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<!DOCTYPE html><html><body><p>not a PDF</p></body></html>", "not a PDF: the content is HTML"),
        (b"\x7fELF\x02\x01\x01" + bytes(200), "not a PDF: the content is an executable"),
        (b"%PDF-1.7\n" + b"\x00garbage" * 100, "unreadable PDF (truncated or corrupt)"),
    ],
)
def test_a_file_named_pdf_is_judged_by_its_content(data, reason):
    with pytest.raises(ParseSkip, match=re.escape(reason)):
        parse_document(data, "report.pdf", ParseConfig())


def test_a_truncated_pdf_and_one_past_max_pages_are_skipped_with_the_reason():
    data = LIBTASN1_PDF.read_bytes()
    with pytest.raises(ParseSkip, match=r"unreadable PDF \(truncated or corrupt\)"):
        parse_document(data[: len(data) // 3], "libtasn1.pdf", ParseConfig())
    with pytest.raises(ParseSkip, match=r"too many pages: 36 > parse.max_pages=10"):
        parse_document(data, "libtasn1.pdf", ParseConfig(max_pages=10))


@pytest.fixture(scope="module")
def scanned(tmp_path_factory) -> bytes:
    """Page 6 of the manual as a scan: rasterised by pdftoppm (poppler-utils), the image wrapped back into a PDF
    that has no text layer."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("scan")
    subprocess.run(
        ["pdftoppm", "-r", "150", "-f", "6", "-l", "6", "-png", str(LIBTASN1_PDF), str(folder / "page")],
        check=True,
        timeout=120,
    )
    (png,) = folder.glob("page*.png")
    Image.open(png).save(folder / "scan.pdf", "PDF", resolution=150)
    return (folder / "scan.pdf").read_bytes()


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]{4,}", text.lower()))


def test_a_scanned_page_is_read_by_ocr_and_matches_the_text_layer_it_came_from(scanned, manual):
    doc = parse_document(scanned, "scan.pdf", ParseConfig(ocr="auto"))
    ocr = "\n".join(s.text for s in doc.sections)
    assert {s.page for s in doc.sections} == {1}
    layer = "\n".join(s.text for s in manual.sections if s.page == 6)
    assert len(words(layer)) > 40
    assert len(words(ocr) & words(layer)) >= 0.9 * len(words(layer)), sorted(words(layer) - words(ocr))
    assert "The SIZE constraints are allowed, but no check is done on them." in " ".join(ocr.split())


def test_a_scan_with_ocr_off_is_skipped_with_the_reason(scanned):
    with pytest.raises(ParseSkip, match=re.escape("no text layer on any page, and parse.ocr is off")):
        parse_document(scanned, "scan.pdf", ParseConfig(ocr="off"))


def minimal_pdf(pages: list[bytes]) -> bytes:
    """A PDF whose pages draw the given content streams (each already Flate-compressed), written by hand: the
    hostile shapes below cannot be made by a well-behaved writer."""
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode()]
    for i, stream in enumerate(pages):
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R >>".encode())
        objects.append(b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream")
    body, offsets = b"%PDF-1.7\n", []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return body + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


def test_a_decompression_bomb_is_skipped_within_the_memory_cap():
    import zlib

    packer = zlib.compressobj(1)
    stream = b"".join(packer.compress(bytes(1 << 20)) for _ in range(768)) + packer.flush()  # 768 MiB of zeros
    bomb = minimal_pdf([stream])
    assert len(bomb) < 4_000_000
    cfg = ParseConfig(max_memory_bytes=1 << 30)  # PDFium holds a page's stream about twice over while it reads it
    with pytest.raises(ParseSkip, match=r"the parser died .* past parse.max_memory_bytes=1,073,741,824") as skip:
        parse_document(bomb, "bomb.pdf", cfg)
    peak = float(re.search(r"resident peak ([\d,]+) MiB", str(skip.value)).group(1).replace(",", "")) * 2**20
    print(f"peak memory of the parser child: {peak / 2**20:.0f} MiB (cap {cfg.max_memory_bytes / 2**20:.0f} MiB)")
    assert 0 < peak <= cfg.max_memory_bytes
    assert len(parse_document(LIBTASN1_PDF.read_bytes(), "libtasn1.pdf", cfg).sections) > 40  # a new child


def test_ten_thousand_pages_are_refused_before_any_is_read():
    import zlib

    many = minimal_pdf([zlib.compress(b"")] * 10_000)
    with pytest.raises(ParseSkip, match=r"too many pages: 10000 > parse.max_pages=2000"):
        parse_document(many, "huge.pdf", ParseConfig())


def test_an_encrypted_pdf_is_skipped_and_one_with_only_an_owner_password_is_read(tmp_path):
    locked, owner_only = tmp_path / "locked.pdf", tmp_path / "owner.pdf"
    for user, out in (("secret", locked), ("", owner_only)):
        subprocess.run(["qpdf", "--encrypt", user, "owner", "256", "--", str(LIBTASN1_PDF), str(out)], check=True)
    with pytest.raises(ParseSkip, match=re.escape("encrypted PDF (a password is needed to read it)")):
        parse_document(locked.read_bytes(), "locked.pdf", ParseConfig())
    assert len(parse_document(owner_only.read_bytes(), "owner.pdf", ParseConfig()).sections) > 40


def test_a_file_past_the_time_limit_is_skipped():
    with pytest.raises(ParseSkip, match=re.escape("parsing took over parse.timeout_s=0.01 s")):
        parse_document(LIBTASN1_PDF.read_bytes(), "libtasn1.pdf", ParseConfig(timeout_s=0.01))


def test_a_two_column_page_reads_column_by_column(tmp_path):
    """Chromium lays the text out in two columns side by side on one page; the passages keep each column whole,
    never a line of one then a line of the other."""
    left = " ".join(f"Left{i} is sentence {i} of the first column." for i in range(1, 50))
    right = " ".join(f"Right{i} is sentence {i} of the second column." for i in range(1, 50))
    page = tmp_path / "columns.html"
    page.write_text(
        "<html><head><title>Two columns</title><style>.cols { column-count: 2; column-gap: 2em; }</style></head>"
        f'<body><h1>Two columns</h1><div class="cols"><p>{left}</p><p>{right}</p></div></body></html>'
    )
    doc = parse_document(print_to_pdf(page, tmp_path / "columns.pdf", header_footer=False), "c.pdf", ParseConfig())
    first, last = section_with(doc, "Left1 is sentence 1"), section_with(doc, "Right49 is sentence 49")
    assert first.page == last.page == 1  # side by side on one page
    order = re.findall(r"(Left|Right)(\d+)\s+is", " ".join(s.text for s in doc.sections))
    assert order == [("Left", str(i)) for i in range(1, 50)] + [("Right", str(i)) for i in range(1, 50)]


def test_chapter_headings_at_page_tops_are_kept_and_running_lines_go():
    from ingest_jobs.parse_pdf import Heading, Line, _sections, _without_running_lines

    pages = [
        [Line("Chapter 1", 20), Line("Intro text.", 10), Line("Manual 1", 8)],
        [Line("More intro.", 10), Line("Manual 2", 8)],
        [
            Line("Chapter 2", 20),
            Line("see the results", 10),
            Line("Results", 14),
            Line("body", 10),
            Line("Manual 3", 8),
        ],
    ]
    kept = _without_running_lines(pages, [])
    assert [line.text for line in kept[0]] == ["Chapter 1", "Intro text."]  # "Manual N" ran on every page
    assert kept[2][0].text == "Chapter 2"
    sections = _sections([[line.text for line in lines] for lines in kept], [Heading(0, "Results", 3)])
    texts = {tuple(s.heading_path): s.text for s in sections}
    assert "see the results" in texts[()] and texts[("Results",)] == "body"  # only the heading's own line moves


def test_characters_beyond_the_bmp_come_out_whole(tmp_path):
    page = tmp_path / "emoji.html"
    page.write_text("<html><head><title>Symbols</title></head><body><p>Rocket \U0001f680 and 𝑥 math.</p></body></html>")
    doc = parse_document(print_to_pdf(page, tmp_path / "emoji.pdf", header_footer=False), "e.pdf", ParseConfig())
    text = " ".join(s.text for s in doc.sections)
    text.encode("utf-8")  # no lone surrogate (PDFium gives 𝑥 as two): every chunk can be hashed and stored
    assert "Rocket" in text and "x math." in text and "\x00" not in text  # the unmapped emoji glyph is dropped
