"""search: dense, BM25 and hybrid search of the chunk collection, with metadata filters and fusion. Shared by
the Serve app's Retriever and the evaluation, so both rank exactly alike; it imports neither."""

from __future__ import annotations

import logging
import string
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pymilvus import AnnSearchRequest, MilvusClient, MilvusException, RRFRanker

from rag.config import MilvusConfig, RetrievalConfig
from rag.schema import SOURCE_FIELDS, SPARSE_FIELD, VECTOR_FIELD, DocType, quote, quote_list
from rag.store import MilvusChunkStore, MilvusUnavailable

logger = logging.getLogger(__name__)
COLLECTION_NOT_LOADED = 101  # Milvus' error code (milvus-lite's too) for a search on a released collection
SearchMode = Literal["dense", "bm25", "hybrid"]
# No control characters (a newline would end the quoted string in the Milvus expression) and no backslash (Milvus'
# LIKE reads it as an escape, and its own matching of an escaped one is unreliable).
PREFIX_CHARS = r"^[^\x00-\x1f\x7f\\]*$"


class RetrievalFilter(BaseModel):
    """Metadata filters; each becomes part of every Milvus search request."""

    model_config = ConfigDict(extra="forbid")

    url_prefix: str | None = Field(
        None, pattern=PREFIX_CHARS, description="Only passages whose URL starts with this (no backslash)."
    )
    source_prefix: str | None = Field(
        None, pattern=PREFIX_CHARS, description="Only passages whose corpus path starts with this (no backslash)."
    )
    doc_type: list[DocType] | None = Field(None, description="Only these document types.")


class Source(BaseModel):
    """A retrieved passage and where it comes from; ``index`` is the number the answer cites as [index]. A chat
    answer returns the passages its prompt held, text included, so a client can show what a citation points to."""

    index: int
    id: str
    url: str
    title: str
    heading: str
    source: str
    doc_type: str
    score: float
    text: str
    page: int | None = Field(None, description="The PDF page (or slide) the passage is on; none for a web page.")

    @property
    def document_url(self) -> str:
        """The URL of the whole document: a PDF passage's ``url`` points at its page (``#page=N``)."""
        return self.url.removesuffix(f"#page={self.page}") if self.page else self.url


# Lucene's English stop words (Elasticsearch's `_english_`), which milvus-lite's analyzer does not have.
ENGLISH_STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they "
    "this to was will with".split()
)


def without_stop_words(query: str) -> str:
    """The query less its stop words, or the query itself if nothing else is left."""
    words = [w for w in query.split() if w.strip(string.punctuation).lower() not in ENGLISH_STOP_WORDS]
    return " ".join(words) or query


def _like_prefix(prefix: str) -> str:
    """A LIKE pattern matching exactly the strings that start with ``prefix``: its own % and _ are literal."""
    return prefix.replace("%", "\\%").replace("_", "\\_") + "%"


def filter_expr(flt: RetrievalFilter | None) -> str:
    """A Milvus boolean expression from the structured filter (never from raw user text)."""
    if flt is None:
        return ""
    clauses = []
    if flt.url_prefix:
        clauses.append(f"url like {quote(_like_prefix(flt.url_prefix))}")
    if flt.source_prefix:
        clauses.append(f"source like {quote(_like_prefix(flt.source_prefix))}")
    if flt.doc_type:
        clauses.append(f"doc_type in {quote_list(flt.doc_type)}")
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
    fused = {i: dense_weight * dense_scores.get(i, 0.0) + (1 - dense_weight) * bm25_scores.get(i, 0.0) for i in by_id}
    ranked = sorted(fused, key=fused.__getitem__, reverse=True)[:top_k]
    return [by_id[i].model_copy(update={"index": n, "score": fused[i]}) for n, i in enumerate(ranked, start=1)]


def answer_or_raise(answer: list[Source] | Exception) -> list[Source]:
    if isinstance(answer, Exception):
        raise answer
    return answer


@dataclass(frozen=True)
class Search:
    """One question for ``MilvusRetriever.retrieve_many``: the text (BM25) and its vector (dense), or either."""

    query: str
    vector: list[float] | None
    mode: SearchMode
    top_k: int
    flt: RetrievalFilter | None = None


class MilvusRetriever:
    """Searches one collection. ``retrieve`` takes both the query text (for BM25) and its vector (for dense)."""

    def __init__(
        self,
        cfg: MilvusConfig,
        dim: int,
        retrieval: RetrievalConfig | None = None,
        *,
        embedder: str | None = None,
        store: MilvusChunkStore | None = None,
    ):
        """``embedder``: the identity (EmbedderConfig.identity()) the query vectors come from; a collection that
        recorded another is refused with EmbedderMismatch, at start or at its first search."""
        self.cfg = cfg
        self.dim = dim
        self.retrieval = retrieval or RetrievalConfig()
        self.collection = cfg.collection
        self.embedder = embedder
        self._embedder_checked = embedder is None
        self._store = store
        # A Milvus that does not answer yet, or a collection not created yet (the endpoint deployed before Milvus
        # or before the first ingest), is no reason to fail the deploy: searches answer 503 until both are there.
        try:
            self._connect()
        except MilvusUnavailable as e:
            logger.warning("%s; searches answer 503 until it does", e)

    def _connect(self) -> MilvusChunkStore:
        if self._store is None:
            self._store = MilvusChunkStore(self.cfg, self.dim)
            if self._store.client.has_collection(self.collection):
                self._store.check_schema()
                self._check_embedder()
                self._store.client.load_collection(self.collection)  # Milvus serves only loaded collections
        return self._store

    def _check_embedder(self) -> None:
        if self.embedder is not None and not self._embedder_checked:
            self.store.check_embedder(self.embedder)
            self._embedder_checked = True

    @property
    def store(self) -> MilvusChunkStore:
        return self._connect()

    @property
    def client(self) -> MilvusClient:
        return self._connect().client

    def _dense_params(self) -> dict[str, Any]:
        params = {"ef": self.cfg.search_ef} if self.cfg.index_type in ("HNSW", "AUTOINDEX") else {}
        return {"metric_type": self.cfg.metric_type, "params": params}

    def retrieve(
        self,
        query: str,
        vector: list[float] | None,
        *,
        mode: SearchMode,
        top_k: int,
        flt: RetrievalFilter | None = None,
    ) -> list[Source]:
        return answer_or_raise(self.retrieve_many([Search(query, vector, mode, top_k, flt)])[0])

    def retrieve_many(self, searches: list[Search]) -> list[list[Source] | Exception]:
        """Answers many questions with one Milvus search per (field, limit, filter): Milvus scores a batch of
        queries for much less than one call each, so concurrent questions share their searches. A Milvus call
        that fails fails only the questions it carried: their answer is its exception."""
        calls: list[Search] = []
        plan: list[list[int]] = []  # per search, the calls whose hits make its answer
        for search in searches:
            if search.mode == "hybrid" and self.retrieval.fusion == "minmax":
                limit = self.retrieval.candidates_for(search.top_k)
                plan.append([len(calls), len(calls) + 1])
                calls += [replace(search, mode="dense", top_k=limit), replace(search, mode="bm25", top_k=limit)]
            else:
                plan.append([len(calls)])
                calls.append(search)
        hits = self._run(calls)
        answers: list[list[Source] | Exception] = []
        for search, slots in zip(searches, plan):
            parts = [hits[i] for i in slots]
            lists = [p for p in parts if not isinstance(p, Exception)]
            if len(lists) < len(parts):
                answers.append(next(p for p in parts if isinstance(p, Exception)))
            elif len(lists) == 2:
                answers.append(fuse_minmax(*lists, dense_weight=self.retrieval.dense_weight, top_k=search.top_k))
            else:
                answers.append(lists[0])
        return answers

    def _run(self, calls: list[Search]) -> list[list[Source] | Exception]:
        groups: dict[tuple[SearchMode, int, str], list[int]] = defaultdict(list)
        for i, call in enumerate(calls):
            groups[(call.mode, call.top_k, filter_expr(call.flt))].append(i)
        results: list[list[Source] | Exception] = [[] for _ in calls]
        for (mode, limit, expr), members in groups.items():
            batch = [calls[i] for i in members]
            try:
                found = self._search_reloading(mode, batch, limit, expr)
                self._check_embedder()  # a collection created after this retriever started: checked at its first search
            except Exception as e:  # handed to each of its callers, who raise it
                for i in members:
                    results[i] = e
                continue
            for i, hits in zip(members, found):
                results[i] = [self._source(n, hit, mode) for n, hit in enumerate(hits, start=1)]
        return results

    def _search_reloading(
        self, mode: SearchMode, batch: list[Search], limit: int, expr: str
    ) -> list[list[dict[str, Any]]]:
        """A restarted milvus-lite, or an operator's release, leaves the collection released, and every search
        would fail until this replica restarts: load it again and search once more. A collection that does not
        exist (yet) is the service being unavailable, not the request being wrong."""
        try:
            return self._search(mode, batch, limit, expr)
        except MilvusException as e:
            if e.code != COLLECTION_NOT_LOADED:
                if not self.client.has_collection(self.collection):
                    raise MilvusUnavailable(
                        f"collection {self.collection!r} does not exist at {self.cfg.uri}: run the ingest job first"
                    ) from e
                raise
        self.client.load_collection(self.collection, timeout=self.cfg.timeout_s)  # a stalled load: 503, not a hang
        return self._search(mode, batch, limit, expr)

    def _search(self, mode: SearchMode, batch: list[Search], limit: int, expr: str) -> list[list[dict[str, Any]]]:
        vectors, queries = [s.vector for s in batch], [s.query for s in batch]
        if self.retrieval.bm25_stop_words and mode != "dense":
            queries = [without_stop_words(q) for q in queries]
        # Each list: its field, its query data and its search parameters.
        lists = {
            "dense": (VECTOR_FIELD, vectors, self._dense_params()),
            "bm25": (SPARSE_FIELD, queries, {"metric_type": "BM25"}),
        }
        if mode in lists:
            field, data, params = lists[mode]
            return self.client.search(
                self.collection,
                data=data,
                anns_field=field,
                limit=limit,
                filter=expr,
                output_fields=list(SOURCE_FIELDS),
                search_params=params,
            )
        # rrf in Milvus. It ignores a top-level filter on hybrid_search: the filter must sit in each request.
        candidates = self.retrieval.candidates_for(limit)
        requests = [
            AnnSearchRequest(data, field, params, candidates, expr=expr or None)
            for field, data, params in lists.values()
        ]
        return self.client.hybrid_search(
            self.collection, requests, RRFRanker(self.retrieval.rrf_k), limit=limit, output_fields=list(SOURCE_FIELDS)
        )

    @staticmethod
    def _source(index: int, hit: dict[str, Any], mode: SearchMode) -> Source:
        entity = hit["entity"]
        score = float(hit["distance"])
        if mode == "bm25":
            score = abs(score)  # milvus-lite returns BM25 as a negated distance; Milvus as a positive score
        fields = {k: entity.get(k, "") for k in SOURCE_FIELDS}
        fields["page"] = int(fields["page"] or 0) or None
        if fields["page"] and fields["doc_type"] == "pdf":  # a browser's PDF viewer opens the cited page
            fields["url"] = f"{fields['url']}#page={fields['page']}"
        return Source(index=index, id=str(hit.get("id", entity.get("id", ""))), score=score, **fields)
