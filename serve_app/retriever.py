"""retrieve: dense, BM25 and hybrid search over the collection the ingest job wrote, with metadata filters."""

from __future__ import annotations

from typing import Any

from pymilvus import AnnSearchRequest, RRFRanker

from rag.config import MilvusConfig, RetrievalConfig
from rag.store import METADATA_FIELDS, MilvusChunkStore
from serve_app.protocol import RetrievalFilter, SearchMode, Source

OUTPUT_FIELDS = ["text", *METADATA_FIELDS]


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


def _minmax(sources: list[Source]) -> dict[str, float]:
    if not sources:
        return {}
    low, high = min(s.score for s in sources), max(s.score for s in sources)
    return {s.id: (s.score - low) / (high - low) if high > low else 1.0 for s in sources}


def fuse_minmax(dense: list[Source], bm25: list[Source], *, dense_weight: float, top_k: int) -> list[Source]:
    """Weighted sum of each list's scores scaled to [0, 1]; a passage missing from a list gets 0 there.

    Unlike RRF it keeps how far apart the scores are, and unlike Milvus' WeightedRanker it does not squash
    BM25 through atan, which lets one list drown the other (STACK.md has the SciFact figures).
    """
    dense_scores, bm25_scores = _minmax(dense), _minmax(bm25)
    by_id = {s.id: s for s in [*bm25, *dense]}
    fused = {
        i: dense_weight * dense_scores.get(i, 0.0) + (1 - dense_weight) * bm25_scores.get(i, 0.0) for i in by_id
    }
    ranked = sorted(fused, key=fused.__getitem__, reverse=True)[:top_k]
    return [by_id[i].model_copy(update={"index": n, "score": fused[i]}) for n, i in enumerate(ranked, start=1)]


class MilvusRetriever:
    """Searches one collection. ``retrieve`` takes both the query text (for BM25) and its vector (for dense)."""

    def __init__(self, cfg: MilvusConfig, dim: int, retrieval: RetrievalConfig | None = None, *,
                 store: MilvusChunkStore | None = None):  # fmt: skip
        self.cfg = cfg
        self.retrieval = retrieval or RetrievalConfig()
        self.store = store if store is not None else MilvusChunkStore(cfg, dim)
        self.client = self.store.client
        self.collection = cfg.collection

    def _dense_params(self) -> dict[str, Any]:
        params = {"ef": self.cfg.search_ef} if self.cfg.index_type in ("HNSW", "AUTOINDEX") else {}
        return {"metric_type": self.cfg.metric_type, "params": params}

    def retrieve(
        self, query: str, vector: list[float] | None, *, mode: SearchMode, top_k: int,
        flt: RetrievalFilter | None = None,
    ) -> list[Source]:  # fmt: skip
        """One search; for ``hybrid`` with client-side fusion, callers may run the two halves themselves."""
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
        elif self.retrieval.fusion == "rrf":
            # Milvus ignores a top-level filter on hybrid_search: it must sit in each request.
            limit = self.retrieval.candidates_for(top_k)
            requests = [
                AnnSearchRequest([vector], "vector", self._dense_params(), limit, expr=expr or None),
                AnnSearchRequest([query], "sparse", {"metric_type": "BM25"}, limit, expr=expr or None),
            ]
            hits = self.client.hybrid_search(
                self.collection, requests, RRFRanker(self.retrieval.rrf_k), limit=top_k, output_fields=OUTPUT_FIELDS
            )[0]
        else:
            limit = self.retrieval.candidates_for(top_k)
            return fuse_minmax(
                self.retrieve(query, vector, mode="dense", top_k=limit, flt=flt),
                self.retrieve(query, None, mode="bm25", top_k=limit, flt=flt),
                dense_weight=self.retrieval.dense_weight, top_k=top_k,
            )  # fmt: skip
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
