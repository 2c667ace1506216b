"""What every baseline shares: train-only statistics, the validation users it is tuned on, and its
validation score through the one `evaluate`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from model_store.item_graph import cosine_similarity, interaction_matrix
from training.evaluate import EvalCase, evaluate, split_cases
from training.ranking import ScoreTable, TableRanker
from training.records import Task

TASKS: tuple[Task, ...] = ("direct", "sequential")
VALID_USERS = 3000  # validation users used for tuning and early stopping (the first ones, file order)


class Harness:
    """Train-only statistics shared by the baselines."""

    def __init__(self, n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> None:
        self.n_users, self.n_items = n_users, n_items
        self.users, self.items = users, items
        self.popularity = np.bincount(self.items, minlength=n_items).astype(np.float64)
        self.matrix = interaction_matrix(n_users, n_items, users, items)
        self._similarity: dict[float, sp.csr_matrix] = {}

    def item_similarity(self, shrink: float = 10.0) -> sp.csr_matrix:
        """Cosine item-item similarity with shrinkage, diagonal removed; computed once per shrinkage
        (decay tuning asks for it once per candidate decay). Shared: callers must not modify it."""
        if shrink not in self._similarity:
            self._similarity[shrink] = cosine_similarity(self.matrix, shrink)
        return self._similarity[shrink]


def tuning_cases(sequences: Sequence[Sequence[int]], negatives: Sequence[Sequence[int]]) -> EvalCase:
    """The validation users every baseline is tuned on: the first VALID_USERS in file order."""
    return split_cases(sequences, negatives, "valid", range(min(len(sequences), VALID_USERS)))


def valid_ndcg(table: ScoreTable, case: EvalCase, task: Task) -> float:
    """NDCG@10 of a score table on (validation) cases, by `training.evaluate.evaluate`."""
    return float(evaluate(TableRanker(table), case, task)["ndcg@10"])
