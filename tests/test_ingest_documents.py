"""PDF, DOCX and PPTX through the real ingest job (a Ray cluster, milvus-lite, MiniLM): real documents with their
pages, hostile ones skipped with their reasons while the rest is ingested, and re-runs that stay idempotent."""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
import zlib
from pathlib import Path

import pytest

from ingest_jobs.ingest import run_ingest
from rag.config import RagConfig
from rag.embedder import SentenceTransformersEmbedder
from rag.prepare import prepare
from rag.search import MilvusRetriever, RetrievalFilter
from rag.store import MilvusChunkStore
from tests.conftest import LIBTASN1_PDF, MILVUS_DOCS
from tests.test_parse_office import convert, rezip
from tests.test_parse_pdf import minimal_pdf

GOOD = {"manuals/libtasn1.pdf", "limitations.docx", "limitations.pptx", "scan.pdf"}


def hostile_files(folder: Path, docx: bytes) -> dict[str, str]:
    """Writes the hostile files into ``folder``; returns each name with the start of the reason it must get."""
    packer = zlib.compressobj(9)
    bomb = b"".join(packer.compress(bytes(1 << 20)) for _ in range(3 << 10)) + packer.flush()
    (folder / "bomb.pdf").write_bytes(minimal_pdf([bomb]))
    (folder / "huge.pdf").write_bytes(minimal_pdf([zlib.compress(b"")] * 10_000))
    (folder / "page.pdf").write_bytes(b"<!DOCTYPE html><html><body><p>not a PDF</p></body></html>")
    (folder / "tool.pdf").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(200))
    (folder / "cut.pdf").write_bytes(LIBTASN1_PDF.read_bytes()[:100_000])
    subprocess.run(
        ["qpdf", "--encrypt", "pw", "owner", "256", "--", str(LIBTASN1_PDF), str(folder / "locked.pdf")], check=True
    )
    (folder / "zipbomb.docx").write_bytes(rezip(docx, {"word/media/zeros.bin": bytes(300_000_000)}))
    declaration = b'<!DOCTYPE w [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    part = zipfile.ZipFile(io.BytesIO(docx)).read("word/document.xml").replace(b"?>", b"?>" + declaration, 1)
    (folder / "xxe.docx").write_bytes(rezip(docx, {"word/document.xml": part}))
    return {
        "bomb.pdf": "the parser died",
        "huge.pdf": "too many pages: 10000 > parse.max_pages=2000",
        "page.pdf": "not a PDF: the content is HTML",
        "tool.pdf": "not a PDF: the content is an executable",
        "cut.pdf": "unreadable PDF (truncated or corrupt)",
        "locked.pdf": "encrypted PDF",
        "zipbomb.docx": "zip bomb: unpacks to",
        "xxe.docx": "word/document.xml declares XML entities (not expanded)",
    }


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    from PIL import Image

    root = tmp_path_factory.mktemp("documents") / "corpus"
    (root / "manuals").mkdir(parents=True)
    shutil.copy(LIBTASN1_PDF, root / "manuals" / "libtasn1.pdf")
    limits = MILVUS_DOCS / "about" / "limitations.html"
    docx = convert(limits, "docx", root)
    convert(limits, "pptx", root)
    subprocess.run(
        ["pdftoppm", "-r", "150", "-f", "6", "-l", "6", "-png", str(LIBTASN1_PDF), str(root / "p")], check=True
    )
    (png,) = root.glob("p*.png")
    Image.open(png).save(root / "scan.pdf", "PDF", resolution=150)
    png.unlink()
    return root, hostile_files(root, docx)


def test_documents_are_ingested_with_pages_and_hostile_ones_skipped(ray_cluster, milvus_uri, collection, documents):
    root, reasons = documents
    cfg = RagConfig.load(
        overrides={"corpus": {"path": str(root)}, "milvus": {"uri": milvus_uri, "collection": collection}}
    )
    summary = run_ingest(prepare(cfg, corpus=True))
    skipped = {s.source: s.reason for s in summary.skipped}
    assert set(skipped) == set(reasons), skipped
    assert all(skipped[name].startswith(reason) for name, reason in reasons.items()), skipped
    assert summary.documents_written == len(GOOD)

    store = MilvusChunkStore(cfg.milvus, cfg.embedder.dim)
    rows = list(store.iter_rows(["source", "doc_type", "page", "heading", "text"]))
    assert {r["source"] for r in rows} == GOOD
    pages: dict[str, set[int]] = {}
    for row in rows:
        pages.setdefault(row["source"], set()).add(row["page"])
    assert min(pages["manuals/libtasn1.pdf"]) == 1 and max(pages["manuals/libtasn1.pdf"]) >= 30
    assert pages["limitations.docx"] == {0} and pages["scan.pdf"] == {1} and min(pages["limitations.pptx"]) == 1
    size = [r for r in rows if "The SIZE constraints are allowed" in " ".join(r["text"].split())]
    assert {(r["source"], r["page"]) for r in size} == {("manuals/libtasn1.pdf", 6), ("scan.pdf", 1)}

    embedder = SentenceTransformersEmbedder(cfg.embedder)
    retriever = MilvusRetriever(cfg.milvus, cfg.embedder.dim, cfg.retrieval, store=store)
    query = "Are SIZE constraints checked?"
    (top, *_) = retriever.retrieve(
        query,
        embedder.embed_queries([query])[0].tolist(),
        mode="hybrid",
        top_k=3,
        flt=RetrievalFilter(source_prefix="manuals/"),
    )
    assert top.doc_type == "pdf" and top.page == 6 and top.url == "manuals/libtasn1.pdf#page=6"

    again = run_ingest(prepare(cfg, corpus=True))  # nothing changed: nothing re-embedded, the same reasons
    assert again.unchanged == len(GOOD) and again.chunks_written == 0 and len(again.skipped) == len(reasons)

    shutil.copy(root / "scan.pdf", root / "manuals" / "libtasn1.pdf")  # a changed PDF replaces its chunks
    edited = run_ingest(prepare(cfg, corpus=True))
    assert edited.documents_written == 1 and edited.chunks_deleted_stale > 30
    manual = [r for r in store.iter_rows(["source", "page"]) if r["source"] == "manuals/libtasn1.pdf"]
    assert manual and {r["page"] for r in manual} == {1}
