import time

import pytest

from ingest_jobs.parse import ParseSkip, parse_document
from rag.config import ParseConfig
from tests.conftest import MILVUS_DOCS

CFG = ParseConfig()

MESSY = b"""<html><head><title> Messy &amp; Page </title>
<meta property="og:url" content="https://example.com/messy">
<script>var tracking = "SCRIPT_TEXT";</script><style>.x{color:red} STYLE_TEXT</style></head>
<body>
<header><a href="/">HEADER_TEXT</a></header>
<nav><ul><li><a href="/a">NAV_TEXT Home</a></li><li>Docs</li></ul></nav>
<div role="navigation">ROLE_NAV_TEXT</div>
<h1>Install</h1>
<p>Intro <b>before</b> any section.
<h2>Docker</h2>
<p>Run the <a href="#">container</a> with docker compose.
<h3>Ports</h3>
<table><tr><th>Port</th><th>Use</th></tr><tr><td>19530</td><td>gRPC</td></tr></table>
<h2>Helm</h2><div><p>Use the chart.</div>
<form><input name="q"><label>FORM_TEXT</label></form>
<aside>ASIDE_TEXT</aside>
<footer>FOOTER_TEXT</footer>
<p>unclosed <i>tags <b>everywhere
"""


def parse(data: bytes, source: str = "page.html", **kw):
    return parse_document(data, source, CFG, **kw)


def test_real_corpus_page_keeps_title_url_and_heading_path():
    doc = parse((MILVUS_DOCS / "about/comparison.html").read_bytes(), "about/comparison.html")
    assert doc.title == "Comparison"
    assert doc.url == "https://milvus.io/docs/comparison.md"
    assert doc.doc_type == "html"
    paths = [tuple(s.heading_path) for s in doc.sections]
    assert ("Comparing Milvus with Alternatives", "Milvus highlights") in paths
    highlights = next(s for s in doc.sections if s.heading_path[-1:] == ["Milvus highlights"])
    assert "Functionality: Milvus goes beyond basic vector similarity search" in highlights.text
    table = next(s for s in doc.sections if s.heading_path[-1:] == ["Overall comparison"])
    assert "Deployment Modes | SaaS-only |" in table.text


def test_messy_html_drops_chrome_and_keeps_structure():
    doc = parse(MESSY)
    text = "\n".join(s.text for s in doc.sections)
    for junk in (
        "SCRIPT_TEXT",
        "STYLE_TEXT",
        "HEADER_TEXT",
        "NAV_TEXT",
        "ROLE_NAV_TEXT",
        "FORM_TEXT",
        "ASIDE_TEXT",
        "FOOTER_TEXT",
        "tracking",
    ):
        assert junk not in text
    assert doc.title == "Messy & Page"
    assert doc.url == "https://example.com/messy"  # og:url when there is no canonical link
    by_path = {tuple(s.heading_path): s.text for s in doc.sections}
    assert "Run the container with docker compose." in by_path[("Install", "Docker")]
    assert "19530 | gRPC" in by_path[("Install", "Docker", "Ports")]
    assert "Use the chart." in by_path[("Install", "Helm")]
    assert "unclosed tags everywhere" in by_path[("Install", "Helm")]


def test_heading_stack_pops_to_the_right_level():
    doc = parse(b"<h1>A</h1><p>a</p><h2>B</h2><h3>C</h3><p>c</p><h2>D</h2><p>d</p><h1>E</h1><p>e</p>")
    assert [(s.heading_path, s.text) for s in doc.sections] == [
        (["A"], "a"),
        (["A", "B", "C"], "c"),
        (["A", "D"], "d"),
        (["E"], "e"),
    ]


def test_canonical_falls_back_to_path_and_manifest_wins():
    assert parse(b"<p>hello</p>", "dir/x.html").url == "dir/x.html"
    doc = parse(b"<title>T</title><p>hello</p>", "x.html", url="https://m/x", title="Manifest title")
    assert (doc.url, doc.title) == ("https://m/x", "Manifest title")


def test_non_utf8_html_uses_its_declared_charset():
    page = '<meta charset="iso-8859-1"><title>Caf\u00e9</title><p>cr\u00e8me br\u00fbl\u00e9e</p>'.encode("latin-1")
    doc = parse(page)
    assert doc.title == "Caf\u00e9" and "cr\u00e8me br\u00fbl\u00e9e" in doc.sections[0].text


def test_markdown_front_matter_title_and_heading_path():
    md = b"---\ntitle: Front Title\ntags: [a]\n---\n# Guide\nintro\n## Setup\nsteps here\n### Linux\napt install\n"
    doc = parse(md, "guide.md")
    assert doc.title == "Front Title" and doc.doc_type == "markdown"
    assert [(s.heading_path, s.text) for s in doc.sections] == [
        (["Guide"], "intro"),
        (["Guide", "Setup"], "steps here"),
        (["Guide", "Setup", "Linux"], "apt install"),
    ]


def test_markdown_title_falls_back_to_first_h1_then_name():
    assert parse(b"# Heading One\ntext", "a.md").title == "Heading One"
    assert parse(b"just text", "notes/b.md").title == "b"


def test_text_uses_file_name_as_title():
    doc = parse(b"plain words\n\n\n\nmore words", "notes/readme.txt")
    assert doc.title == "readme.txt" and doc.doc_type == "text"
    assert doc.sections[0].text == "plain words\n\nmore words"


@pytest.mark.parametrize(
    ("data", "source", "reason"),
    [
        (b"", "e.html", "empty file"),
        (b"   \n\t", "e.txt", "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "img.html", "binary file"),
        (b"<html><body><nav>only nav</nav><script>x</script></body></html>", "n.html", "no text after parsing"),
        (b"caf\xe9 au lait", "latin1.txt", "bad encoding"),
        (b"# T\n\xff\xfe\xfa bad", "bad.md", "bad encoding"),
    ],
)
def test_bad_input_is_a_skip_with_a_reason(data, source, reason):
    with pytest.raises(ParseSkip, match=reason):
        parse(data, source)


def nested_divs(levels: int) -> bytes:
    return b"<p>shallow</p>" + b"<div>" * levels + b"deep" + b"</div>" * levels


def test_deep_html_is_skipped_in_bounded_time():
    started = time.perf_counter()
    with pytest.raises(ParseSkip, match=r"too deeply nested: over parse.max_html_depth=256 levels"):
        parse(nested_divs(100_000), "deep.html")
    assert time.perf_counter() - started < 20  # about 1 s; without the limit, about 20 minutes
    assert "deep" in parse(nested_divs(200), "ok.html").sections[0].text


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<html><body><h1>Laughs</h1><p>&lol9;</p></body></html>"""


def test_entity_declarations_are_never_expanded():
    with pytest.raises(ParseSkip, match=r"DOCTYPE declares entities \(not expanded\)"):
        parse(BILLION_LAUGHS, "lol.html")
    # Markdown and text have no entities: the declarations are kept verbatim, as written.
    text = parse(BILLION_LAUGHS, "lol.md").sections[0].text
    assert "&lol9;" in text and len(text) < len(BILLION_LAUGHS)
    assert parse(b'<?xml version="1.0"?><!DOCTYPE html><html><p>xhtml</p></html>', "x.html").sections[0].text == "xhtml"
