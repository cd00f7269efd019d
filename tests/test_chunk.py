from ingest_jobs.chunk import chunk_document, chunk_id_of
from ingest_jobs.parse import ParsedDocument, Section, parse_document
from rag.config import ChunkConfig, ParseConfig
from tests.conftest import MILVUS_DOCS

LONG = " ".join(f"Sentence number {i} talks about vector indexes and recall." for i in range(60))


def doc(*sections: Section) -> ParsedDocument:
    return ParsedDocument(title="Title", url="https://x/doc", doc_type="html", sections=list(sections))


def test_chunks_respect_size_and_overlap_and_carry_metadata():
    rows = chunk_document(doc(Section(["A", "B"], LONG)), source="d.html", doc_hash="h", cfg=ChunkConfig())
    assert len(rows) > 3
    assert all(len(r["text"]) <= 512 for r in rows)
    assert all(r["heading"] == "A > B" and r["title"] == "Title" and r["url"] == "https://x/doc" for r in rows)
    assert [r["chunk_index"] for r in rows] == list(range(len(rows)))
    assert all(r["chunk_count"] == len(rows) for r in rows)
    # 10% overlap: each chunk starts with text the previous one ended with.
    assert rows[1]["text"][:20] in rows[0]["text"]


def test_chunks_never_straddle_sections():
    rows = chunk_document(
        doc(Section(["A"], "alpha text"), Section(["B"], "beta text")), source="d", doc_hash="h", cfg=ChunkConfig()
    )
    assert [(r["heading"], r["text"]) for r in rows] == [("A", "alpha text"), ("B", "beta text")]


def test_configurable_size():
    rows = chunk_document(
        doc(Section([], LONG)), source="d", doc_hash="h", cfg=ChunkConfig(chunk_size=200, chunk_overlap=0)
    )
    assert all(len(r["text"]) <= 200 for r in rows) and len(rows) > 10


def test_ids_are_deterministic_and_content_addressed():
    page = (MILVUS_DOCS / "about/overview.html").read_bytes()
    parsed = parse_document(page, "about/overview.html", ParseConfig())
    first = chunk_document(parsed, source="about/overview.html", doc_hash="h", cfg=ChunkConfig())
    second = chunk_document(parsed, source="about/overview.html", doc_hash="h", cfg=ChunkConfig())
    assert [r["id"] for r in first] == [r["id"] for r in second]
    assert len({r["id"] for r in first}) == len(first)
    assert chunk_id_of("d", 0, "a") != chunk_id_of("d", 0, "b") != chunk_id_of("d", 1, "a")
    other = chunk_document(parsed, source="about/other.html", doc_hash="h", cfg=ChunkConfig())
    assert not {r["id"] for r in first} & {r["id"] for r in other}


def test_embed_headings_changes_only_the_embedded_text():
    section = Section(["Install", "Docker"], "run it")
    plain = chunk_document(doc(section), source="d", doc_hash="h", cfg=ChunkConfig(embed_headings=False))[0]
    rich = chunk_document(doc(section), source="d", doc_hash="h", cfg=ChunkConfig())[0]
    assert plain["embed_text"] == "run it"
    assert rich["embed_text"] == "Title > Install > Docker\nrun it" and rich["text"] == "run it"
    opening = chunk_document(doc(Section([], "Title\n\nAn abstract.")), source="d", doc_hash="h", cfg=ChunkConfig())
    assert opening[0]["embed_text"] == "Title\n\nAn abstract."  # the title is not repeated


def test_no_table_piece_outgrows_a_chunk():
    from ingest_jobs.chunk import split_table

    cfg = ChunkConfig()
    wide_header = "| " + " | ".join(f"column {i}" for i in range(60)) + " |\n|" + " --- |" * 60 + "\n| a | b |"
    long_row = "| A | B |\n| --- | --- |\n| short | row |\n| long | " + "word " * 400 + "|\n| last | row |"
    for table in (wide_header, long_row, "| " + "x" * 70_000 + " |"):
        pieces = split_table(table, cfg)
        assert pieces and all(len(p) <= cfg.chunk_size for p in pieces), [len(p) for p in pieces]
    long_pieces = split_table(long_row, cfg)
    assert all(p.startswith("| A | B |\n| --- | --- |\n") for p in long_pieces)
    assert long_pieces[0].endswith("| short | row |") and long_pieces[-1].endswith("| last | row |")  # rows in order
