"""The Milvus collection both paths share: its schema, batched upserts, stale-chunk bookkeeping and search.

Everything goes through a URI, so the same code talks to a local ``milvus-lite server`` and to a
Milvus cluster.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymilvus import DataType, Function, FunctionType, MilvusClient, MilvusException

from rag.config import MilvusConfig
from rag.schema import FIELDS, PRIMARY_KEY, SPARSE_FIELD, TEXT_FIELD, VECTOR_FIELD, quote, quote_list

# The collection property naming the embedder its vectors came from (EmbedderConfig.identity()).
EMBEDDER_PROPERTY = "rag.embedder"


class MilvusUnavailable(RuntimeError):
    """Milvus cannot be reached at the configured URI."""


class EmbedderMismatch(ValueError):
    """The collection's vectors came from another model, backend or precision than the config's."""


class CollectionOutdated(ValueError):
    """The collection lacks a field of the current schema (``rag/schema.py``): it was created by an earlier one."""


@dataclass(frozen=True)
class DocState:
    """What the collection holds for one document: its fingerprints and how many chunks it should have."""

    hashes: frozenset[str]
    rows: int
    chunk_count: int


@dataclass
class _DocStateBuilder:
    hashes: set[str] = field(default_factory=set)
    rows: int = 0
    chunk_count: int = 0


def _client(cfg: MilvusConfig) -> MilvusClient:
    # A gRPC server with default limits (milvus-lite's) answers pings more often than every 5 minutes without
    # data, or on an idle channel, with GOAWAY "too_many_pings", and the channel dies: ping no more than that.
    options = {"grpc.keepalive_permit_without_calls": False, "grpc.keepalive_time_ms": 300_000}
    return MilvusClient(uri=cfg.uri, token=cfg.token, timeout=cfg.timeout_s, grpc_options=options)


def connect(cfg: MilvusConfig) -> MilvusClient:
    """Opens a client and checks the server answers; raises MilvusUnavailable with a one-line reason."""
    try:
        client = _client(cfg)
        try:
            client.list_collections(timeout=cfg.timeout_s)
        except MilvusException:  # a cached channel the server has closed (GOAWAY, restart): once more, afresh
            client.close()
            client = _client(cfg)
            client.list_collections(timeout=cfg.timeout_s)
    except MilvusException as e:
        raise MilvusUnavailable(f"cannot reach Milvus at {cfg.uri}: {e.message}") from None
    except Exception as e:  # grpc and socket errors surface as many types
        raise MilvusUnavailable(f"cannot reach Milvus at {cfg.uri}: {type(e).__name__}: {e}") from None
    return client


class MilvusChunkStore:
    """One collection of chunks: id, text, dense vector, optional BM25 sparse vector and metadata."""

    def __init__(self, cfg: MilvusConfig, dim: int, *, client: MilvusClient | None = None):
        self.cfg = cfg
        self.dim = dim
        self.collection = cfg.collection
        self.client = client if client is not None else connect(cfg)

    # ---- schema -------------------------------------------------------------------------------
    def ensure_collection(self) -> None:
        """Creates the collection with its indexes if it is missing, checks its dimension, and loads it."""
        if self.client.has_collection(self.collection):
            self.check_schema()
            self._check_dim()
        else:
            self._create()
        self.client.load_collection(self.collection)

    def embedder(self) -> str | None:
        """The identity recorded by the ingest that created or re-embedded the collection; None before any."""
        return self.client.describe_collection(self.collection).get("properties", {}).get(EMBEDDER_PROPERTY)

    def record_embedder(self, identity: str) -> None:
        self.client.alter_collection_properties(self.collection, properties={EMBEDDER_PROPERTY: identity})

    def check_embedder(self, identity: str) -> None:
        """Raises EmbedderMismatch unless the collection was embedded as ``identity`` says: query vectors from
        another backend or precision would be compared with the stored ones as if they were the same."""
        recorded = self.embedder()
        if recorded is not None and recorded != identity:
            raise EmbedderMismatch(
                f"collection {self.collection!r} was embedded with {recorded} (model|backend|precision) but this "
                f"config embeds with {identity}: set embedder.backend and embedder.precision to match, or re-embed "
                "it with `rag ingest --force` under this config"
            )

    def check_schema(self) -> None:
        """Raises CollectionOutdated when a field of ``FIELDS`` is missing: its rows could not be written, nor
        its passages returned, as the current schema has them."""
        have = {f["name"] for f in self.client.describe_collection(self.collection)["fields"]}
        if missing := [f.name for f in FIELDS if f.name not in have]:
            raise CollectionOutdated(
                f"collection {self.collection!r} has no field {', '.join(missing)}: it was created by an earlier "
                "version of the schema; ingest into a new collection (--collection NAME) or drop this one and "
                "ingest again"
            )

    def _check_dim(self) -> None:
        info = self.client.describe_collection(self.collection)
        for f in info["fields"]:
            if f["name"] == VECTOR_FIELD:
                dim = int(f.get("params", {}).get("dim", self.dim))
                if dim != self.dim:
                    raise ValueError(
                        f"collection {self.collection!r} has {dim}-d vectors but embedder.dim is {self.dim}; "
                        "use another milvus.collection or drop this one"
                    )

    def _create(self) -> None:
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        for f in FIELDS:
            kwargs: dict[str, Any] = {"max_length": f.max_length} if f.max_length else {}
            if f.name == TEXT_FIELD:
                kwargs["enable_analyzer"] = self.cfg.bm25
            schema.add_field(f.name, f.dtype, is_primary=f.name == PRIMARY_KEY, **kwargs)
            if f.name == TEXT_FIELD:
                schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=self.dim)
        index_params = self.client.prepare_index_params()
        dense_params: dict[str, Any] = {}
        if self.cfg.index_type == "HNSW":
            dense_params = {"M": self.cfg.hnsw_m, "efConstruction": self.cfg.hnsw_ef_construction}
        index_params.add_index(
            VECTOR_FIELD, index_type=self.cfg.index_type, metric_type=self.cfg.metric_type, params=dense_params
        )
        if self.cfg.bm25:
            schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="text_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=[TEXT_FIELD],
                    output_field_names=[SPARSE_FIELD],
                )
            )
            # Nested "params": flat BM25 params are silently dropped by milvus-lite.
            index_params.add_index(
                SPARSE_FIELD,
                index_type="SPARSE_INVERTED_INDEX",
                metric_type="BM25",
                params={"params": {"bm25_k1": self.cfg.bm25_k1, "bm25_b": self.cfg.bm25_b}},
            )
        self.client.create_collection(self.collection, schema=schema, index_params=index_params)

    def drop(self) -> None:
        if self.client.has_collection(self.collection):
            self.client.drop_collection(self.collection)

    # ---- writes -------------------------------------------------------------------------------
    def upsert(self, rows: Sequence[dict[str, Any]]) -> int:
        """Upserts rows in batches of ``write_batch_size``; ids are deterministic, so re-runs replace, not add."""
        size = self.cfg.write_batch_size
        for start in range(0, len(rows), size):
            self.client.upsert(self.collection, list(rows[start : start + size]))
        return len(rows)

    def delete_stale_chunks(self, doc_id: str, keep_ids: Iterable[str]) -> int:
        """Deletes a document's chunks that the latest ingest did not write."""
        expr = f"doc_id == {quote(doc_id)} and id not in {quote_list(sorted(keep_ids))}"
        return self._delete(expr)

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        doc_ids = sorted(doc_ids)
        if not doc_ids:
            return 0
        return self._delete(f"doc_id in {quote_list(doc_ids)}")

    def _delete(self, expr: str) -> int:
        before = self._count(expr)
        if before:
            self.client.delete(self.collection, filter=expr)
        return before

    def flush(self) -> None:
        self.client.flush(self.collection)

    # ---- reads --------------------------------------------------------------------------------
    def _count(self, expr: str = "") -> int:
        res = self.client.query(self.collection, filter=expr, output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def count(self) -> int:
        return self._count()

    def document_states(self) -> dict[str, DocState]:
        """Per document id, the fingerprints and row count stored, for skipping unchanged documents."""
        states: dict[str, _DocStateBuilder] = defaultdict(_DocStateBuilder)
        for row in self.iter_rows(["doc_id", "doc_hash", "chunk_count"]):
            state = states[row["doc_id"]]
            state.hashes.add(row["doc_hash"])
            state.rows += 1
            state.chunk_count = int(row["chunk_count"])
        return {k: DocState(frozenset(v.hashes), v.rows, v.chunk_count) for k, v in states.items()}

    def iter_rows(self, output_fields: list[str], expr: str = "", batch_size: int = 1000) -> Iterator[dict[str, Any]]:
        iterator = self.client.query_iterator(
            self.collection, batch_size=batch_size, filter=expr, output_fields=output_fields
        )
        try:
            while batch := iterator.next():
                yield from batch
        finally:
            iterator.close()
