"""Retrieval quality and parsing speed per document format, on the shared Milvus docs converted by Debian's tools.

    python bench/formats.py [--corpus ../shared/corpus/milvus-docs] [--limit N] [--work .rag/bench/formats]

1. The Milvus FAQ questions are extracted and the corpus is copied without each question's heading, as
   ``rag eval --exclude-question`` does; that copy is converted to PDF by headless Chromium (``--print-to-pdf``,
   with its running header and footer) and to DOCX by pandoc, each file under the page's URL in the copy's
   manifest, so every format answers to the same gold pages.
2. Each format goes through the real ingest job into a fresh collection, and every question through the real
   retriever: hybrid recall@5 and MRR@10 per format beside HTML (goal: PDF and DOCX within 0.03 recall@5).
3. Speed: parsing alone, pages (or files) per second per format, and OCR pages per second on scans of PDF pages;
   then the PDF corpus end to end, through the job and through a single-process script with the same libraries
   (parse, chunk, embed, upsert) into another collection (goal: the job not slower).
``--limit N`` takes the first N pages besides the FAQ's (whose questions need them): a quick run, not the figures.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluation.cli import load_evaluation  # noqa: E402
from evaluation.faq import FAQ_FOLDER, extract_faq, write_corpus_without_questions  # noqa: E402
from evaluation.retrieval import evaluate_retrieval  # noqa: E402
from ingest_jobs.chunk import chunk_document, sha256_hex  # noqa: E402
from ingest_jobs.parse import ParseSkip, parse_document  # noqa: E402
from rag.config import RagConfig  # noqa: E402
from rag.embedder import SentenceTransformersEmbedder  # noqa: E402
from rag.milvus_server import ensure_milvus  # noqa: E402
from rag.schema import VECTOR_FIELD  # noqa: E402
from rag.store import MilvusChunkStore  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
RECALL_GAP = 0.03


def cpu() -> str:
    info = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = [f for f in ("avx512_bf16", "amx_bf16", "avx512_vnni") if f" {f}" in info]
    return f"{model} ({', '.join(flags) or 'none of avx512_bf16, amx_bf16, avx512_vnni'})"


def html_pages(corpus: Path, limit: int | None) -> list[Path]:
    pages = sorted(p.relative_to(corpus) for p in corpus.rglob("*.html"))
    faq = [p for p in pages if p.as_posix().startswith(FAQ_FOLDER)]
    rest = [p for p in pages if p not in faq]
    return faq + (rest[:limit] if limit is not None else rest)


def convert_corpus(html: Path, pages: list[Path], fmt: str, out: Path) -> Path:
    """``pages`` of ``html`` converted into ``fmt`` under ``out``, with a manifest giving each its page's URL."""
    from rag.config import ParseConfig

    out.mkdir(parents=True, exist_ok=True)
    manifest = []

    def one(page: Path) -> None:
        try:  # its URL and title, as the HTML ingest finds them
            doc = parse_document((html / page).read_bytes(), page.as_posix(), ParseConfig())
        except ParseSkip:  # a page the HTML ingest skips too (no text): not converted
            return
        target = (out / page).with_suffix(f".{fmt}")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            if fmt == "pdf":
                command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--print-to-pdf={target}"]
                subprocess.run([*command, (html / page).as_uri()], check=True, capture_output=True, timeout=300)
            else:
                # pandoc stops at an image it cannot open (the pages link /assets/...); images hold no text here.
                text = re.sub(r"<img\b[^>]*>", "", (html / page).read_text(errors="replace"))
                command = ["pandoc", "-f", "html", "-t", fmt, "-o", str(target)]
                subprocess.run(command, input=text, text=True, check=True, capture_output=True, timeout=300)
        manifest.append({"path": target.relative_to(out).as_posix(), "url": doc.url, "title": doc.title})

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, pages))
    (out / "manifest.jsonl").write_text("".join(json.dumps(m) + "\n" for m in manifest))
    return out


def parse_speed(folder: Path, suffix: str) -> tuple[int, int, float]:
    """Files, pages (a PDF's pages; else files) and seconds to parse every ``suffix`` file of ``folder``."""
    import pypdfium2

    files = sorted(folder.rglob(f"*{suffix}"))
    pages, started = 0, time.perf_counter()
    for path in files:
        data = path.read_bytes()
        try:
            parse_document(data, path.name, RagConfig().parse)
        except ParseSkip:
            continue
        pages += len(pypdfium2.PdfDocument(data)) if suffix == ".pdf" else 1
    return len(files), pages, time.perf_counter() - started


def single_process(cfg: RagConfig, folder: Path) -> tuple[int, float]:
    """The PDF corpus as one process would ingest it with the same libraries: parse, chunk, embed, upsert."""
    store = MilvusChunkStore(cfg.milvus, cfg.embedder.dim)
    store.drop()
    store.ensure_collection()
    embedder = SentenceTransformersEmbedder(cfg.embedder)
    started, written = time.perf_counter(), 0
    for path in sorted(folder.rglob("*.pdf")):
        data = path.read_bytes()
        try:
            doc = parse_document(data, path.relative_to(folder).as_posix(), cfg.parse)
        except ParseSkip:
            continue
        rows = chunk_document(doc, source=path.name, doc_hash=sha256_hex(data), cfg=cfg.chunking)
        vectors = embedder.embed_documents([r.pop("embed_text") for r in rows])
        store.upsert([{**r, VECTOR_FIELD: v.tolist(), "ingest_time": 0} for r, v in zip(rows, vectors)])
        written += len(rows)
    store.flush()
    return written, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(REPO.parent / "shared" / "corpus" / "milvus-docs"))
    parser.add_argument("--limit", type=int, default=None, help="pages besides the FAQ's (a quick run)")
    parser.add_argument("--work", default=str(REPO / ".rag" / "bench" / "formats"))
    args = parser.parse_args()
    work = Path(args.work)
    print(f"# bench/formats.py, {time.strftime('%Y-%m-%d')}, CPU: {cpu()}")
    ensure_milvus(RagConfig().milvus)

    questions_file = work / "faq.jsonl"
    questions = extract_faq(args.corpus)
    work.mkdir(parents=True, exist_ok=True)
    questions_file.write_text("".join(json.dumps(q) + "\n" for q in questions))
    html = write_corpus_without_questions(args.corpus, work / "html", {q["question"] for q in questions})
    pages = html_pages(html, args.limit)
    if args.limit is not None:  # the quick run's HTML corpus holds the same pages as the others
        kept = work / "html-subset"
        shutil.rmtree(kept, ignore_errors=True)
        for page in pages:
            (kept / page).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(html / page, kept / page)
        shutil.copy(html / "manifest.jsonl", kept / "manifest.jsonl")
        html = kept
    started = time.perf_counter()
    corpora = {"html": html}
    for fmt in ("pdf", "docx"):
        corpora[fmt] = convert_corpus(html, pages, fmt, work / fmt)
    print(f"{len(pages)} pages converted to PDF and DOCX in {time.perf_counter() - started:.0f} s")

    print("\n| format | hybrid recall@5 | hybrid MRR@10 | vs HTML recall@5 | ingest s |")
    print("|---|---|---|---|---|")
    results, ingested = {}, {}
    for fmt, corpus in corpora.items():
        started = time.perf_counter()
        cfg, question_set, _ = load_evaluation(
            questions_path=str(questions_file), corpus=str(corpus), collection=f"bench_{fmt}", fresh=True
        )
        seconds = time.perf_counter() - started
        ingested[fmt] = (cfg, seconds)
        hybrid = evaluate_retrieval(cfg, question_set, ("hybrid",))["hybrid"]
        results[fmt] = hybrid
        gap = hybrid["recall@5"] - results["html"]["recall@5"]
        print(f"| {fmt} | {hybrid['recall@5']:.3f} | {hybrid['mrr@10']:.3f} | {gap:+.3f} | {seconds:.0f} |")
    for fmt in ("pdf", "docx"):
        met = results["html"]["recall@5"] - results[fmt]["recall@5"] <= RECALL_GAP
        print(f"{fmt} within {RECALL_GAP} recall@5 of HTML: {'met' if met else 'NOT met'}")

    print("\n| parsing | files | pages | seconds | pages/s |")
    print("|---|---|---|---|---|")
    for fmt, suffix in (("pdf", ".pdf"), ("docx", ".docx")):
        files, n, seconds = parse_speed(corpora[fmt], suffix)
        print(f"| {fmt} | {files} | {n} | {seconds:.1f} | {n / seconds:.1f} |")
    scans = work / "scans"
    shutil.rmtree(scans, ignore_errors=True)
    scans.mkdir()
    from PIL import Image

    for pdf in sorted(corpora["pdf"].rglob("*.pdf"))[:5]:
        subprocess.run(["pdftoppm", "-r", "150", "-f", "1", "-l", "1", "-png", str(pdf), str(scans / pdf.stem)])
    for png in scans.glob("*.png"):
        Image.open(png).save(png.with_suffix(".pdf"), "PDF", resolution=150)
    files, n, seconds = parse_speed(scans, ".pdf")
    print(f"| scanned PDF (OCR, {RagConfig().parse.ocr_dpi} dpi) | {files} | {n} | {seconds:.1f} | {n / seconds:.2f} |")

    pdf_cfg, job_seconds = ingested["pdf"]
    job = MilvusChunkStore(pdf_cfg.milvus, pdf_cfg.embedder.dim).count()
    script_cfg = pdf_cfg.model_copy(update={"milvus": pdf_cfg.milvus.model_copy(update={"collection": "bench_pdf_1p"})})
    written, script_seconds = single_process(script_cfg, corpora["pdf"])
    print(f"\nPDF corpus end to end: the job {job} chunks in {job_seconds:.0f} s ({job / job_seconds:.1f} chunks/s); ")
    print(
        f"a single-process script {written} chunks in {script_seconds:.0f} s ({written / script_seconds:.1f} chunks/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
