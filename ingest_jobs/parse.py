"""parse: bytes of one HTML, Markdown or text file into a title, a canonical URL and sections with heading paths."""

from __future__ import annotations

import re
import warnings
from pathlib import PurePosixPath

import yaml
from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, Tag, UnicodeDammit, XMLParsedAsHTMLWarning
from langchain_text_splitters import MarkdownHeaderTextSplitter

from ingest_jobs.parse_office import office_type
from ingest_jobs.parse_pdf import PDF_MAGIC, is_pdf
from ingest_jobs.parse_types import ParsedDocument, ParseSkip, Section
from ingest_jobs.sandbox import parse_isolated
from rag.config import ParseConfig
from rag.schema import DocType

HTML_EXTENSIONS = (".html", ".htm")
MARKDOWN_EXTENSIONS = (".md", ".markdown")
HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
PAGED_TYPES: dict[str, DocType] = {".pdf": "pdf", ".docx": "docx", ".pptx": "pptx"}
# ARIA landmarks of a page's chrome rather than its content, removed like the tags in parse.drop_tags.
LANDMARK_ROLES = ["navigation", "banner", "contentinfo", "search"]
# Elements after which extracted text breaks a line, so words from neighbouring blocks never run together.
BLOCK_TAGS = (
    "p",
    "div",
    "section",
    "article",
    "main",
    "li",
    "ul",
    "ol",
    "pre",
    "blockquote",
    "table",
    "tr",
    "dd",
    "dt",
    "dl",
    "figcaption",
    "br",
    "hr",
)
_MARK = "\x00"
_HEADING_MARK = re.compile(rf"{_MARK}(\d){_MARK}(.*?){_MARK}")
_BLANK_RUNS = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.S)
# A DOCTYPE with an internal subset, where entities are declared ("billion laughs"); `<` ends a candidate, so a
# hostile run of DOCTYPEs costs linear time.
_DTD_SUBSET = re.compile(r"<!DOCTYPE[^<>\[]*\[", re.I)


def doc_type_of(source: str) -> DocType:
    suffix = PurePosixPath(source).suffix.lower()
    if suffix in PAGED_TYPES:
        return PAGED_TYPES[suffix]
    if suffix in HTML_EXTENSIONS:
        return "html"
    if suffix in MARKDOWN_EXTENSIONS:
        return "markdown"
    return "text"


def parse_document(
    data: bytes, source: str, cfg: ParseConfig, *, url: str | None = None, title: str | None = None
) -> ParsedDocument:
    """Parses one file. ``url`` and ``title`` (from a manifest) win over what the file says."""
    if not data.strip():
        raise ParseSkip("empty file")
    doc_type = doc_type_of(source)
    office = office_type(data)
    # By the content: a .pdf or .docx name is no proof, nor is another name.
    if doc_type == "pdf" or data.startswith(PDF_MAGIC):  # another name: only a file that opens as a PDF
        if not is_pdf(data):
            raise ParseSkip(f"not a PDF: the content {_looks_like(data)}")
        doc = parse_isolated("ingest_jobs.parse_pdf:parse_pdf", data, source, cfg)
    elif doc_type in ("docx", "pptx") or office:
        if office is None:
            raise ParseSkip(f"not a {doc_type.upper()}: the content {_looks_like(data, 'no Office zip parts')}")
        doc = parse_isolated(f"ingest_jobs.parse_office:parse_{office}", data, source, cfg)
    elif b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ParseSkip("binary file")
    elif doc_type == "html":
        doc = _parse_html(data, source, cfg)
    else:
        text = _decode_text(data)
        doc = _parse_markdown(text, source) if doc_type == "markdown" else _parse_text(text, source)
    doc.sections = [s for s in doc.sections if s.text.strip()]
    if not doc.sections:
        raise ParseSkip("no text after parsing")
    doc.url = url or doc.url
    doc.title = title or doc.title
    return doc


def _looks_like(data: bytes, otherwise: str = "no PDF header") -> str:
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<body" in head:
        return "is HTML"
    if head.startswith((b"\x7felf", b"mz")):
        return "is an executable"
    return f"has {otherwise}"


def _decode_text(data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ParseSkip(f"bad encoding: not UTF-8 ({e.reason} at byte {e.start})") from None


def _clean(text: str) -> str:
    return _BLANK_RUNS.sub("\n\n", "\n".join(" ".join(line.split()) for line in text.split("\n"))).strip()


def _parse_html(data: bytes, source: str, cfg: ParseConfig) -> ParsedDocument:
    dammit = UnicodeDammit(data, ["utf-8"], is_html=True)
    if dammit.unicode_markup is None:
        raise ParseSkip("bad encoding: undecodable HTML")
    if _DTD_SUBSET.search(dammit.unicode_markup):
        # The HTML parser never expands them, but their text would be indexed as garbage; real pages have none.
        raise ParseSkip("DOCTYPE declares entities (not expanded)")
    with warnings.catch_warnings():
        # XHTML is parsed as HTML on purpose: lxml's HTML parser expands no declared entities.
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        soup = BeautifulSoup(dammit.unicode_markup, "lxml")  # recovers broken markup as browsers do
    if _deeper_than(soup, cfg.max_html_depth):
        raise ParseSkip(f"too deeply nested: over parse.max_html_depth={cfg.max_html_depth} levels")

    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    url = source
    if (link := soup.find("link", rel="canonical")) and (href := link.get("href")):
        url = str(href).strip()
    elif (og := soup.find("meta", property="og:url")) and (content := og.get("content")):
        url = str(content).strip()

    for tag in soup.find_all([*cfg.drop_tags, "head", "template"]):
        tag.decompose()
    for tag in soup.find_all(role=LANDMARK_ROLES):
        tag.decompose()
    body = soup.body or soup
    if not title and (h1 := body.find("h1")):
        title = h1.get_text(" ", strip=True)
    title = title or PurePosixPath(source).stem

    # Mark headings in place, then read the text once, so every passage knows the headings above it.
    for heading in body.find_all(HEADINGS):
        text = heading.get_text(" ", strip=True).replace(_MARK, "")
        heading.replace_with(f"\n{_MARK}{heading.name[1]}{_MARK}{text}{_MARK}\n")
    for row in body.find_all("tr"):
        cells = (cell.get_text(" ", strip=True) for cell in row.find_all(["td", "th"]))
        row.replace_with("\n" + " | ".join(cells) + "\n")
    for tag in body.find_all(BLOCK_TAGS):
        tag.append("\n")
    return ParsedDocument(title=title, url=url, doc_type="html", sections=_sections(body.get_text()))


def _deeper_than(root: Tag, limit: int) -> bool:
    """Walks with a stack, not recursion, so no depth can hit Python's recursion limit."""
    stack = [(root, 0)]
    while stack:
        tag, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in tag.children if isinstance(child, Tag))
    return False


def _sections(marked: str) -> list[Section]:
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    pos = 0
    for match in _HEADING_MARK.finditer(marked):
        sections.append(Section([t for _, t in stack], _clean(marked[pos : match.start()])))
        level, text = int(match.group(1)), match.group(2)
        stack = [(lvl, t) for lvl, t in stack if lvl < level] + ([(level, text)] if text else [])
        pos = match.end()
    sections.append(Section([t for _, t in stack], _clean(marked[pos:])))
    return sections


def _parse_markdown(text: str, source: str) -> ParsedDocument:
    title = ""
    if match := _FRONT_MATTER.match(text):
        try:
            meta = yaml.safe_load(match.group(1))
        except yaml.YAMLError:
            meta = None
        if isinstance(meta, dict) and meta.get("title"):
            title = str(meta["title"]).strip()
        text = text[match.end() :]
    splitter = MarkdownHeaderTextSplitter(
        headers_to_split_on=[("#", "1"), ("##", "2"), ("###", "3"), ("####", "4")], strip_headers=True
    )
    sections = []
    for part in splitter.split_text(text):
        path = [part.metadata[k] for k in ("1", "2", "3", "4") if k in part.metadata]
        title = title or part.metadata.get("1", "")
        sections.append(Section(path, _clean(part.page_content)))
    return ParsedDocument(title=title or PurePosixPath(source).stem, url=source, doc_type="markdown", sections=sections)


def _parse_text(text: str, source: str) -> ParsedDocument:
    return ParsedDocument(
        title=PurePosixPath(source).name, url=source, doc_type="text", sections=[Section([], _clean(text))]
    )
