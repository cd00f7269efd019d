import os

import boto3
import pytest

from ingest_jobs.read import Corpus, CorpusNotFound
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
    s3.put_object(Bucket="listing", Key="docs/skip.pdf", Body=b"%PDF")
    s3.put_object(Bucket="listing", Key="docs/manifest.jsonl", Body=b'{"path": "docs/../a.html"}\n')
    corpus = Corpus(CorpusConfig(path="s3://listing/docs", s3_endpoint=s3_endpoint))
    files, skipped = corpus.list()
    assert [f.source for f in files] == ["a.html", "sub/b.md"]
    assert [(s.source, s.reason) for s in skipped] == [("empty.txt", "empty file")]
    assert corpus.read(files[1]) == b"# b"
    with pytest.raises(CorpusNotFound):
        Corpus(CorpusConfig(path="s3://no-such-bucket/x", s3_endpoint=s3_endpoint)).list()
