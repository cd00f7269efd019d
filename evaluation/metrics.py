"""IR metrics through ir-measures, so the numbers match the published tooling instead of hand-written code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ir_measures
from ir_measures import RR, R, nDCG

MEASURES = {"recall@1": R @ 1, "recall@5": R @ 5, "recall@10": R @ 10, "mrr@10": RR @ 10, "ndcg@10": nDCG @ 10}


def score(qrels: Mapping[str, set[str]], runs: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Mean metrics over the queries in ``qrels``. ``runs`` maps a query to its ranked document ids.

    Scores handed to ir-measures come from the rank, not from Milvus: BM25 distances come back negated
    from milvus-lite, and a tool that sorts by score would then read the ranking upside down.
    """
    qrel_rows = [ir_measures.Qrel(q, d, 1) for q, docs in qrels.items() for d in docs]
    run_rows = [
        ir_measures.ScoredDoc(q, d, float(len(ranked) - i))
        for q, ranked in runs.items()
        for i, d in enumerate(dict.fromkeys(ranked))
    ]
    results = ir_measures.calc_aggregate(list(MEASURES.values()), qrel_rows, run_rows)
    return {name: float(results.get(measure, 0.0)) for name, measure in MEASURES.items()}
