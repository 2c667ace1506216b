"""HR@k / NDCG@k on hand-computed cases, and tie handling that never favours the positive."""

import math

import pytest

from training.metrics import hit, ndcg, rank_if_present, rank_with_ties_against, summarize


def test_hit_and_ndcg_by_hand() -> None:
    assert hit(0, 5) == 1.0 and hit(4, 5) == 1.0 and hit(5, 5) == 0.0 and hit(None, 10) == 0.0
    assert ndcg(0, 10) == 1.0
    assert ndcg(1, 10) == pytest.approx(1 / math.log2(3))
    assert ndcg(9, 10) == pytest.approx(1 / math.log2(11))
    assert ndcg(10, 10) == 0.0


def test_summarize_counts_each_user_once() -> None:
    ranks = [0, 2, 7, None]
    out = summarize(ranks)
    assert out["hr@5"] == pytest.approx(2 / 4)
    assert out["hr@10"] == pytest.approx(3 / 4)
    assert out["ndcg@5"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert out["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(9)) / 4)


def test_ties_are_ranked_above_the_positive() -> None:
    scores = {1: 0.5, 2: 0.5, 3: 0.9, 4: 0.1}
    assert rank_with_ties_against(scores, 1) == 2
    assert rank_with_ties_against({1: 1.0, 2: 1.0, 3: 1.0}, 3) == 2
    assert rank_with_ties_against({1: 2.0, 2: 1.0}, 1) == 0


def test_rank_if_present_uses_the_tie_rule_and_misses_absent_items() -> None:
    assert rank_if_present({5: -1.0, 3: -2.0, 9: -3.0}, 9) == 2
    assert rank_if_present({5: -1.0, 3: -2.0, 9: -2.0}, 3) == 2  # tied with 9: 9 counts above it
    assert rank_if_present({5: -1.0, 3: -2.0, 9: -3.0}, 4) is None
