"""The simple baselines: training popularity, ItemKNN (recency decay tuned on validation), the P5 id leak."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model_store.codec import IdCodec
from model_store.item_graph import ItemGraph
from training.baselines.harness import Harness, tuning_cases, valid_ndcg
from training.ranking import ScoreTable, per_user
from training.records import Task

DECAYS: tuple[float, ...] = (1.0, 0.8, 0.6, 0.4, 0.2)


def popularity_table(harness: Harness) -> ScoreTable:
    """Training popularity, the same for every user."""

    def table(users: list[int], histories: list[list[int]]) -> np.ndarray:  # noqa: ARG001 (same for all)
        return np.tile(harness.popularity, (len(users), 1))

    return table


def itemknn_table(harness: Harness, decay: float, shrink: float = 10.0) -> ScoreTable:
    """Σ_t decay^(n-1-t) · sim(h_t, ·): similarity to the history, recent items weighing more."""
    graph = ItemGraph(harness.item_similarity(shrink))
    pop = harness.popularity / max(harness.popularity.max(), 1.0) * 1e-6  # tie-break by popularity
    return per_user(lambda _user, history: graph.history_scores(history, decay) + pop)


def tune_decay(harness: Harness, sequences: Sequence[Sequence[int]], negatives: Sequence[Sequence[int]],
               task: Task, grid: Sequence[float] = DECAYS) -> float:
    """ItemKNN's recency decay with the best validation NDCG@10 (on up to 3,000 validation users)."""
    valid = tuning_cases(sequences, negatives)
    best, best_score = grid[0], -1.0
    for decay in grid:
        score = valid_ndcg(itemknn_table(harness, decay), valid, task)
        if score > best_score:
            best, best_score = decay, score
    return best


def leak_table(codec: IdCodec) -> ScoreTable:
    """The P5 id leak: score items by closeness above max(history) in P5's consecutive numbering."""
    numbers = codec.item_numbers.astype(np.float64)

    def score(_user: int, history: Sequence[int]) -> np.ndarray:
        top = max(numbers[np.asarray(history, dtype=np.int64)]) if history else 0.0
        gap = numbers - top
        return np.where(gap > 0, -gap, -1e9 + gap)

    return per_user(score)
