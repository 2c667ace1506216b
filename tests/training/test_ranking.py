"""The one evaluation harness: score tables as rankers, the tie rule in evaluate, early stopping."""

from __future__ import annotations

import numpy as np
import pytest

from training.early_stopping import EarlyStopping
from training.evaluate import EvalCase, evaluate
from training.ranking import TableRanker


def _fixed(rows: list[list[float]]) -> TableRanker:
    table = np.asarray(rows, dtype=np.float64)
    return TableRanker(lambda users, histories: table[np.asarray(users)])


def test_recommend_filters_history_and_keeps_every_item_tied_at_the_cut() -> None:
    ranker = _fixed([[5.0, 4.0, 3.0, 3.0, 3.0, 1.0]])
    filtered = ranker.recommend([0], [[0]], 2, True)[0]
    assert [s.item for s in filtered] == [1, 2, 3, 4]  # 2, 3, 4 tie for the second place
    plain = ranker.recommend([0], [[0]], 2, False)[0]
    assert [(s.item, s.score) for s in plain] == [(0, 5.0), (1, 4.0)]


def test_evaluate_counts_ties_against_the_held_out_item_on_both_tasks() -> None:
    scores = [[1.0] * 12 + [0.0] * 8]  # twelve items tie at the top
    case = EvalCase(users=[0], histories=[[19]], targets=[0], negatives=[list(range(1, 12))])
    direct = evaluate(_fixed(scores), case, "direct")
    assert direct["hr@10"] == 0.0  # eleven candidates score as high as the positive
    sequential = evaluate(_fixed(scores), case, "sequential")
    assert sequential["hr@10"] == 0.0 and sequential["unfiltered"]["hr@10"] == 0.0
    better = evaluate(_fixed([[2.0] + [1.0] * 11 + [0.0] * 8]), case, "sequential")
    assert better["hr@5"] == better["ndcg@10"] == 1.0


def test_an_item_absent_from_the_list_is_a_miss() -> None:
    case = EvalCase(users=[0], histories=[[]], targets=[19], negatives=[[]])
    assert evaluate(_fixed([list(np.linspace(1.0, 0.0, 20))]), case, "sequential")["hr@10"] == 0.0


def test_early_stopping_counts_updates_without_improvement() -> None:
    stop = EarlyStopping(patience=2)
    assert [stop.update(s) for s in (0.1, 0.3, 0.3, 0.2)] == [True, True, False, False]
    assert stop.should_stop and stop.best == 0.3
    low = EarlyStopping(patience=1, mode="min")
    assert low.update(2.0) and low.update(1.0) and not low.update(1.5) and low.should_stop
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)
