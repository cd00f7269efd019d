"""rag/schema.py: the one description of the collection, and the parts that must agree with it."""

from __future__ import annotations

from typing import get_args

from ingest_jobs.chunk import chunk_document
from ingest_jobs.parse import ParsedDocument, Section, doc_type_of
from ingest_jobs.rows import ROW_COLUMNS, status_row
from rag.config import ChunkConfig
from rag.schema import DOC_TYPES, FIELDS, PRIMARY_KEY, SOURCE_FIELDS, STORED_FIELDS, quote, quote_list
from rag.search import RetrievalFilter, Source


def test_every_source_field_is_on_the_source_model():
    assert set(SOURCE_FIELDS) <= set(Source.model_fields)
    assert PRIMARY_KEY in Source.model_fields  # each hit's id


def test_the_chunker_fills_every_stored_field():
    doc = ParsedDocument("T", "https://x/t", "html", [Section(["H"], "Some text.")])
    (row,) = chunk_document(doc, source="t.html", doc_hash="h", cfg=ChunkConfig())
    assert set(STORED_FIELDS) <= set(row)
    assert set(status_row("skipped", source="s", doc_id="d")) == set(ROW_COLUMNS) >= set(STORED_FIELDS)


def test_a_field_the_store_sets_is_not_in_the_rows():
    written = {f.name for f in FIELDS if f.written}
    assert written == set(STORED_FIELDS) and "ingest_time" not in written


def test_doc_types_are_the_parsers_and_the_filters():
    assert {doc_type_of(name) for name in ("a.html", "b.md", "c.txt", "d.pdf", "e.docx", "f.pptx")} == set(DOC_TYPES)
    (filter_type,) = get_args(RetrievalFilter.model_fields["doc_type"].annotation)[:1]
    assert set(get_args(get_args(filter_type)[0])) == set(DOC_TYPES)


def test_quoting_escapes_quotes_and_backslashes():
    assert quote('a"b\\c') == '"a\\"b\\\\c"'
    assert quote_list(["x", 'y"']) == '["x", "y\\""]'
