import os
import resource
import time

import boto3
import pytest

from ingest_jobs.read import Corpus, CorpusNotFound, FileChanged
from rag.config import CorpusConfig


def make_corpus(root):
    (root / "docs" / "deep").mkdir(parents=True)
    (root / "docs" / "a.html").write_text("<p>a</p>")
    (root / "docs" / "deep" / "b.md").write_text("# b")
    (root / "c.txt").write_text("c")
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / "empty.html").write_text("")
    (root / "big.txt").write_text("x" * 2000)
    (root / "manifest.jsonl").write_text('{"path": "docs/a.html", "url": "https://a", "title": "A"}\nnot json\n')
    outside = root.parent / "outside.html"
    outside.write_text("<p>secret</p>")
    (root / "escape.html").symlink_to(outside)
    (root / "inside.html").symlink_to(root / "docs" / "a.html")
    (root / "dangling.md").symlink_to(root / "missing.md")
    os.mkfifo(root / "pipe.txt")
    return root


def test_local_listing_filters_and_explains(tmp_path):
    root = make_corpus(tmp_path / "corpus")
    files, skipped = Corpus(CorpusConfig(path=str(root), max_file_bytes=1000)).list()
    assert sorted(f.source for f in files) == ["c.txt", "docs/a.html", "docs/deep/b.md", "inside.html"]
    reasons = {s.source: s.reason for s in skipped}
    assert reasons["escape.html"] == "outside the corpus root (symlink)"
    assert reasons["empty.html"] == "empty file"
    assert reasons["big.txt"].startswith("oversized")
    assert reasons["dangling.md"].startswith("unreadable")
    assert reasons["pipe.txt"] == "not a regular file"
    assert "image.png" not in reasons and "manifest.jsonl" not in reasons


def test_local_read_and_manifest(tmp_path):
    root = make_corpus(tmp_path / "corpus")
    corpus = Corpus(CorpusConfig(path=str(root)))
    files, _ = corpus.list()
    assert corpus.read(next(f for f in files if f.source == "c.txt")) == b"c"
    manifest = corpus.manifest()
    assert manifest["docs/a.html"].url == "https://a" and manifest["docs/a.html"].title == "A"


def test_hostile_names_and_links_are_skipped_with_reasons(tmp_path):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "ok.md").write_text("# ok")
    (root / "a.md").symlink_to("b.md")
    (root / "b.md").symlink_to("a.md")
    (root / "sub" / "up").symlink_to("..")
    (root / os.fsdecode(b"bad\xffname.txt")).write_text("bytes that are not UTF-8 in the name")
    (root / "new\nline.md").write_text("a newline in the name")
    (root / "caf\u00e9 notes.md").write_text("a non-ASCII name is fine")
    started = time.perf_counter()
    files, skipped = Corpus(CorpusConfig(path=str(root))).list()
    assert time.perf_counter() - started < 5
    assert sorted(f.source for f in files) == ["caf\u00e9 notes.md", "ok.md"]
    assert {s.source: s.reason for s in skipped} == {
        "a.md": "unreadable: Too many levels of symbolic links",
        "b.md": "unreadable: Too many levels of symbolic links",
        "sub/up/": "symlinked folder, not followed",
        "bad\\xffname.txt": "file name is not UTF-8",
        "new\\nline.md": "file name has control characters",
    }


def test_oversized_sparse_file_is_skipped_unread(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    with open(root / "sparse.txt", "wb") as f:
        f.truncate(1 << 30)  # a 1 GiB hole: no disk used
    corpus = Corpus(CorpusConfig(path=str(root)))
    corpus.read = None  # listing must not read
    files, skipped = corpus.list()
    assert files == []
    assert [(s.source, s.reason) for s in skipped] == [
        ("sparse.txt", "oversized: 1073741824 bytes > corpus.max_file_bytes=5000000")
    ]


def test_a_file_that_changed_since_listing_is_refused_without_reading_it_all(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    for name in ("grows.txt", "shrinks.txt", "same.txt"):
        (root / name).write_text("0123456789")
    corpus = Corpus(CorpusConfig(path=str(root)))
    files = {f.source: f for f in corpus.list()[0]}
    with open(root / "grows.txt", "r+b") as f:
        f.truncate(1 << 30)
    (root / "shrinks.txt").write_text("01234")
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(FileChanged, match=r"^changed while read: 10 bytes when listed, over 10 when read$"):
        corpus.read(files["grows.txt"])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 100_000  # KiB: far below 1 GiB
    with pytest.raises(FileChanged, match=r"^changed while read: 10 bytes when listed, 5 when read$"):
        corpus.read(files["shrinks.txt"])
    assert corpus.read(files["same.txt"]) == b"0123456789"


def test_missing_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusNotFound, match="not found"):
        Corpus(CorpusConfig(path=str(tmp_path / "nope")))
    with pytest.raises(CorpusNotFound, match="no corpus given"):
        Corpus(CorpusConfig())


@pytest.mark.integration
def test_s3_listing_and_read(s3_endpoint):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="listing")
    s3.put_object(Bucket="listing", Key="docs/a.html", Body=b"<p>a</p>")
    s3.put_object(Bucket="listing", Key="docs/sub/b.md", Body=b"# b")
    s3.put_object(Bucket="listing", Key="docs/empty.txt", Body=b"")
    s3.put_object(Bucket="listing", Key="docs/skip.xlsx", Body=b"PK")  # an extension the corpus does not read
    s3.put_object(Bucket="listing", Key="docs/manifest.jsonl", Body=b'{"path": "docs/../a.html"}\n')
    corpus = Corpus(CorpusConfig(path="s3://listing/docs", s3_endpoint=s3_endpoint))
    files, skipped = corpus.list()
    assert [f.source for f in files] == ["a.html", "sub/b.md"]
    assert [(s.source, s.reason) for s in skipped] == [("empty.txt", "empty file")]
    assert corpus.read(files[1]) == b"# b"
    with pytest.raises(CorpusNotFound):
        Corpus(CorpusConfig(path="s3://no-such-bucket/x", s3_endpoint=s3_endpoint)).list()
