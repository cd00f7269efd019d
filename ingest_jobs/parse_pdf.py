"""parse, for PDFs: the text layer of each page (PDFium, through pypdfium2) into sections that keep their page.

Headings come from the document's outline where it has one, else from font size (lines set clearly larger than
the body text); running headers, footers and page numbers that repeat across pages are removed; ligatures are
normalised and words hyphenated across a line break joined. A section never spans two pages, so every chunk
cites one page.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytesseract

from ingest_jobs.parse_types import ParsedDocument, ParseSkip, Section
from rag.config import ParseConfig

PDF_MAGIC = b"%PDF-"
# A line at the top or bottom of a page is a running header or footer when it repeats (digits aside) on this share
# of the pages and at least RUNNING_MIN_PAGES of them, or, with a page number at either end, on two or more.
RUNNING_SHARE, RUNNING_MIN_PAGES = 0.3, 3
EDGE_LINES = 2  # lines at each end of a page that may be running text
_DIGITS = re.compile(r"\d+")
_LINE_END_HYPHEN = re.compile(r"\w-$")
_NUMBERING = re.compile(r"^(\d+|[A-Z])(\.\d+)*\.?\s+")  # "2.2 Naming", "A. Use", "1 Introduction"
# A page number: digits, or a Roman numeral (front matter), alone or as "page 3", "3 / 10", "3 of 10".
_PAGE_NUMBER = re.compile(
    r"^(page\s+)?(\d+|(?=[mdclxvi])m*(c[md]|d?c{0,3})(x[cl]|l?x{0,3})(i[xv]|v?i{0,3}))(\s*(/|of)\s*\d+)?$", re.I
)
_NUMBERED_EDGE = re.compile(r"^\d+\s|\s\d+$")
# A line set this much larger than the body text, and this short, is a heading when the PDF has no outline.
HEADING_SIZE_RATIO, HEADING_MAX_CHARS, MAX_HEADING_LEVELS = 1.2, 150, 6
SOFT_HYPHENS = dict.fromkeys(map(ord, "\ufffe\x02\xad"))  # PDFium marks a word broken at a line end thus
# Control characters: PDFium gives U+0000 for a glyph with no Unicode mapping (Chromium's emoji, for one).
UNMAPPED = dict.fromkeys([*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F])


@dataclass(frozen=True)
class Line:
    text: str
    size: float  # the largest font size on the line, in points


@dataclass(frozen=True)
class Heading:
    level: int
    title: str
    page: int  # 1-based


def is_pdf(data: bytes) -> bool:
    """PDF readers accept the header anywhere in the first kilobyte."""
    return PDF_MAGIC in data[:1024]


def parse_pdf(data: bytes, source: str, cfg: ParseConfig) -> ParsedDocument:
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        reason = str(e).lower()
        if "password" in reason:
            raise ParseSkip("encrypted PDF (a password is needed to read it)") from None
        raise ParseSkip(f"unreadable PDF (truncated or corrupt): {e}") from None
    try:
        if len(pdf) > cfg.max_pages:
            raise ParseSkip(f"too many pages: {len(pdf)} > parse.max_pages={cfg.max_pages}")
        pages = [_page_lines(pdf, i, cfg) for i in range(len(pdf))]
        headings = _outline(pdf)
        title = _metadata_title(pdf)
    finally:
        pdf.close()
    if not any(pages):
        raise ParseSkip("no text layer on any page, and parse.ocr is off" if cfg.ocr == "off" else "no text found")
    pages = _without_running_lines(pages, headings)
    headings = headings or _headings_by_size(pages)
    sections = _sections([[line.text for line in lines] for lines in pages], headings)
    first_line = next((lines[0].text for lines in pages if lines), "")
    title = title or (first_line if len(first_line) <= HEADING_MAX_CHARS else "") or source.rsplit("/", 1)[-1]
    return ParsedDocument(title=title, url=source, doc_type="pdf", sections=sections)


def _page_lines(pdf: pdfium.PdfDocument, index: int, cfg: ParseConfig) -> list[Line]:
    """The page's lines in PDFium's reading order, each with its font size; a page without a text layer is read
    by OCR (``parse.ocr: auto``), its lines of unknown size."""
    page = pdf[index]
    textpage = page.get_textpage()
    lines: list[Line] = []
    chars: list[str] = []
    size = 0.0
    try:
        count = pdfium_c.FPDFText_CountChars(textpage.raw)
        if count <= 0:
            return _ocr_lines(page, cfg) if cfg.ocr == "auto" else []
        for i in range(count):
            char = chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, i))
            if char == "\n":
                lines.append(Line("".join(chars), size))
                chars, size = [], 0.0
            elif char != "\r":
                chars.append(char)
                if not char.isspace():
                    size = max(size, pdfium_c.FPDFText_GetFontSize(textpage.raw, i))
        lines.append(Line("".join(chars), size))
    finally:
        textpage.close()
        page.close()
    return _mended([Line(_utf16(line.text), line.size) for line in lines])


def _utf16(text: str) -> str:
    """PDFium gives UTF-16 code units: a character beyond the BMP (an emoji, a math letter) arrives as two
    surrogates, joined here; a lone one becomes U+FFFD, never a string that cannot be encoded."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _mended(lines: list[Line]) -> list[Line]:
    """Ligatures normalised, soft hyphens dropped, and a word hyphenated across a line break joined into the
    first line, which keeps the larger size."""
    merged: list[Line] = []
    for line in lines:
        text = " ".join(unicodedata.normalize("NFKC", line.text.translate(SOFT_HYPHENS).translate(UNMAPPED)).split())
        if not text:
            continue
        if merged and _LINE_END_HYPHEN.search(merged[-1].text) and text[0].isalnum():
            previous = merged.pop()
            merged.append(Line(previous.text[:-1] + text, max(previous.size, line.size)))
        else:
            merged.append(Line(text, line.size))
    return merged


def _ocr_lines(page: pdfium.PdfPage, cfg: ParseConfig) -> list[Line]:
    image = page.render(scale=cfg.ocr_dpi / 72).to_pil()
    try:
        text = pytesseract.image_to_string(image, lang=cfg.ocr_language)
    except pytesseract.TesseractNotFoundError:
        raise ParseSkip("a page has no text layer, and OCR needs Tesseract (Debian: tesseract-ocr)") from None
    except pytesseract.TesseractError as e:
        raise ParseSkip(f"OCR failed: {e.message}") from None
    return _mended([Line(t, 0.0) for t in text.split("\n")])


def _metadata_title(pdf: pdfium.PdfDocument) -> str:
    try:
        return (pdf.get_metadata_dict().get("Title") or "").strip()
    except pdfium.PdfiumError:
        return ""


def _outline(pdf: pdfium.PdfDocument) -> list[Heading]:
    headings = []
    for bookmark in pdf.get_toc(max_depth=6):
        dest = bookmark.get_dest()
        index = dest.get_index() if dest is not None else None
        title = " ".join((bookmark.get_title() or "").split())
        if index is not None and title:
            headings.append(Heading(bookmark.level, title, index + 1))
    return headings


def _key(line: str) -> str:
    return _DIGITS.sub("#", line.lower())


def _headings_by_size(pages: list[list[Line]]) -> list[Heading]:
    """Lines set at least HEADING_SIZE_RATIO times the body's size (the size most characters have), and short:
    the larger the size, the higher the level."""
    body = _body_size(pages)
    if body == 0:  # OCR's lines have no size: no heading can be told by it
        return []
    candidates = [
        (number, line)
        for number, lines in enumerate(pages, start=1)
        for line in lines
        if line.size >= body * HEADING_SIZE_RATIO and len(line.text) <= HEADING_MAX_CHARS
    ]
    sizes = sorted({round(line.size, 1) for _, line in candidates}, reverse=True)[:MAX_HEADING_LEVELS]
    level = {size: i for i, size in enumerate(sizes)}
    return [
        Heading(level[round(line.size, 1)], line.text, number)
        for number, line in candidates
        if round(line.size, 1) in level
    ]


def _body_size(pages: list[list[Line]]) -> float:
    """The font size most characters have; 0 when none has one (OCR)."""
    by_size: Counter[float] = Counter()
    for lines in pages:
        for line in lines:
            by_size[round(line.size, 1)] += len(line.text)
    return by_size.most_common(1)[0][0] if by_size else 0.0


def _without_running_lines(pages: list[list[Line]], outline: list[Heading]) -> list[list[Line]]:
    """Each page less the lines at its top and bottom that are page numbers, or that repeat (digits aside) on
    many pages: running headers and footers, which would otherwise open or close every chunk. A line that is a
    heading (in the outline, or set heading-size) is kept unless it repeats on many pages: "Chapter 1" and
    "Chapter 2" opening their pages are headings, not a running header."""
    body = _body_size(pages)
    titles = {(h.page, _normal(h.title)) for h in outline}
    edges: Counter[str] = Counter()
    for lines in pages:
        edges.update({_key(line.text) for line in (*lines[:EDGE_LINES], *lines[-EDGE_LINES:])})
    threshold = max(RUNNING_MIN_PAGES, RUNNING_SHARE * len(pages))
    running = {key for key, n in edges.items() if n >= threshold}
    numbered = {key for key, n in edges.items() if n >= 2}

    def is_running(line: Line, page: int) -> bool:
        key, text = _key(line.text), line.text
        if key in running or _PAGE_NUMBER.match(text):
            return True
        heading = (page, _normal(text)) in titles or (body > 0 and line.size >= body * HEADING_SIZE_RATIO)
        return key in numbered and bool(_NUMBERED_EDGE.search(text)) and not heading

    cleaned = []
    for page, lines in enumerate(pages, start=1):
        start, end = 0, len(lines)
        while start < min(EDGE_LINES, end) and is_running(lines[start], page):
            start += 1
        while end > max(start, len(lines) - EDGE_LINES) and is_running(lines[end - 1], page):
            end -= 1
        cleaned.append(lines[start:end])
    return cleaned


def _sections(pages: list[list[str]], headings: list[Heading]) -> list[Section]:
    """A section per heading per page: a heading starts at its line on its page (or the page's top when its
    title is not found there), and its text runs on, page by page, to the next heading."""
    by_page: dict[int, list[Heading]] = {}
    for heading in headings:
        by_page.setdefault(heading.page, []).append(heading)
    path: list[str] = []
    levels: list[int] = []
    sections = []
    for number, lines in enumerate(pages, start=1):
        cuts: list[tuple[int, Heading]] = []  # (line index, heading)
        for heading in by_page.get(number, []):
            at = _find_title(lines, heading.title, after=cuts[-1][0] if cuts else 0)
            cuts.append((at if at is not None else (cuts[-1][0] if cuts else 0), heading))
        start = 0
        for at, heading in cuts:
            if at > start:
                sections.append(Section(list(path), "\n".join(lines[start:at]), page=number))
            while levels and levels[-1] >= heading.level:
                levels.pop()
                path.pop()
            levels.append(heading.level)
            path.append(heading.title)
            start = at + 1 if at < len(lines) and _same_title(lines[at], heading.title) else at
        if start < len(lines):
            sections.append(Section(list(path), "\n".join(lines[start:]), page=number))
    return [s for s in sections if s.text.strip()]


def _normal(text: str) -> str:
    """A title without its numbering, case, spaces or punctuation: "2.2 Naming" and "Naming" are one title."""
    return re.sub(r"[\W_]+", "", _NUMBERING.sub("", text.strip()).lower())


def _same_title(line: str, title: str) -> bool:
    a = _normal(line)
    return bool(a) and a == _normal(title)


def _find_title(lines: list[str], title: str, after: int) -> int | None:
    return next((i for i in range(after, len(lines)) if _same_title(lines[i], title)), None)
