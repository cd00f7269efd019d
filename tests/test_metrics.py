"""The metrics on a tiny hand-made set whose right answers are known."""

import math

import pytest

from evaluation.metrics import score

QRELS = {"q1": {"a"}, "q2": {"b"}, "q3": {"c", "d"}, "q4": {"z"}}


def test_known_values():
    runs = {
        "q1": ["a", "x", "y"],  # right answer first
        "q2": ["x", "b"],  # second
        "q3": ["d", "x", "x2", "x3", "x4", "c"],  # one of two in the top 1, both by rank 6
        "q4": ["x", "y"],  # missed
    }
    got = score(QRELS, runs)
    assert got["recall@1"] == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert got["recall@5"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert got["recall@10"] == pytest.approx((1 + 1 + 1 + 0) / 4)
    assert got["mrr@10"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    ideal_q3 = 1 + 1 / math.log2(3)
    ndcg_q3 = (1 + 1 / math.log2(7)) / ideal_q3
    assert got["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + ndcg_q3 + 0) / 4)


def test_rank_not_raw_score_decides_and_duplicates_count_once():
    # Chunks of one page collapse to the page: a repeated id keeps its first (best) rank.
    assert score({"q": {"p"}}, {"q": ["x", "x", "p", "p"]})["mrr@10"] == pytest.approx(0.5)


def test_query_without_a_run_scores_zero():
    assert score({"q1": {"a"}, "q2": {"b"}}, {"q1": ["a"]})["recall@1"] == pytest.approx(0.5)


def test_token_f1_against_a_reference_answer():
    from evaluation.chat import token_f1

    assert token_f1("The HNSW index.", "HNSW index") == pytest.approx(1.0)  # articles and punctuation ignored
    assert token_f1("HNSW", "HNSW index") == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert token_f1("the index is HNSW", "HNSW index") == pytest.approx(0.8)  # precision 2/3, recall 1
    assert token_f1("nothing shared", "HNSW index") == 0.0
    assert token_f1("", "HNSW") == 0.0
