"""retrieve: dense, BM25 and hybrid search over the collection the ingest job wrote, with metadata filters."""

from __future__ import annotations

from typing import Any

from pymilvus import AnnSearchRequest, RRFRanker

from rag.config import MilvusConfig
from rag.store import METADATA_FIELDS, MilvusChunkStore
from serve_app.protocol import RetrievalFilter, SearchMode, Source

OUTPUT_FIELDS = ["text", *METADATA_FIELDS]
RRF_K = 60


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def filter_expr(flt: RetrievalFilter | None) -> str:
    """A Milvus boolean expression from the structured filter (never from raw user text)."""
    if flt is None:
        return ""
    clauses = []
    if flt.url_prefix:
        clauses.append(f"url like {_quote(flt.url_prefix + '%')}")
    if flt.source_prefix:
        clauses.append(f"source like {_quote(flt.source_prefix + '%')}")
    if flt.doc_type:
        clauses.append(f"doc_type in [{', '.join(_quote(t) for t in flt.doc_type)}]")
    return " and ".join(clauses)


class MilvusRetriever:
    """Searches one collection. ``retrieve`` takes both the query text (for BM25) and its vector (for dense)."""

    def __init__(self, cfg: MilvusConfig, dim: int, *, store: MilvusChunkStore | None = None):
        self.cfg = cfg
        self.store = store if store is not None else MilvusChunkStore(cfg, dim)
        self.client = self.store.client
        self.collection = cfg.collection

    def _dense_params(self) -> dict[str, Any]:
        params = {"ef": self.cfg.search_ef} if self.cfg.index_type in ("HNSW", "AUTOINDEX") else {}
        return {"metric_type": self.cfg.metric_type, "params": params}

    def retrieve(
        self, query: str, vector: list[float], *, mode: SearchMode, top_k: int, flt: RetrievalFilter | None = None
    ) -> list[Source]:
        expr = filter_expr(flt)
        if mode == "dense":
            hits = self.client.search(
                self.collection, data=[vector], anns_field="vector", limit=top_k, filter=expr,
                output_fields=OUTPUT_FIELDS, search_params=self._dense_params(),
            )[0]  # fmt: skip
        elif mode == "bm25":
            hits = self.client.search(
                self.collection, data=[query], anns_field="sparse", limit=top_k, filter=expr,
                output_fields=OUTPUT_FIELDS, search_params={"metric_type": "BM25"},
            )[0]  # fmt: skip
        else:
            # Milvus ignores a top-level filter on hybrid_search: it must sit in each request.
            candidates = max(top_k * 4, 20)
            requests = [
                AnnSearchRequest([vector], "vector", self._dense_params(), candidates, expr=expr or None),
                AnnSearchRequest([query], "sparse", {"metric_type": "BM25"}, candidates, expr=expr or None),
            ]
            hits = self.client.hybrid_search(
                self.collection, requests, RRFRanker(RRF_K), limit=top_k, output_fields=OUTPUT_FIELDS
            )[0]
        return [self._source(i, hit, mode) for i, hit in enumerate(hits, start=1)]

    @staticmethod
    def _source(index: int, hit: dict[str, Any], mode: SearchMode) -> Source:
        entity = hit["entity"]
        score = float(hit["distance"])
        if mode == "bm25":
            score = abs(score)  # milvus-lite returns BM25 as a negated distance; Milvus as a positive score
        return Source(
            index=index, id=str(hit.get("id", entity.get("id", ""))), score=score,
            **{k: entity.get(k, "") for k in ("url", "title", "heading", "source", "doc_type", "text")},
        )  # fmt: skip
