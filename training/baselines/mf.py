"""Matrix factorisation on train interactions: implicit's ALS and BPR, grid-searched on validation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from training.baselines.fitting import FitInputs, Fitted, blas_single_thread, grid_search
from training.ranking import ScoreTable

INPUTS = {  # what each model scores from, recorded in its result JSON
    "als": "user vector refit by least squares from the given history (test: train + validation item)",
    "bpr": "user vector learned on train interactions (the history argument is not used)",
}
ALS_GRID: tuple[dict[str, float], ...] = tuple(
    {"factors": f, "regularization": r, "alpha": a, "iterations": 15}
    for f in (64, 128) for r in (0.01, 0.1) for a in (1.0, 10.0))
BPR_GRID: tuple[dict[str, float], ...] = tuple(
    {"factors": f, "learning_rate": lr, "regularization": 0.05, "iterations": 200}
    for f in (64, 128) for lr in (0.05, 0.1))


def _user_items(histories: Sequence[Sequence[int]], n_items: int) -> sp.csr_matrix:
    """Binary CSR of one row per history (repeats count once)."""
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.fromiter((i for h in histories for i in h), dtype=np.int64, count=len(rows))
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(histories), n_items))
    m.data[:] = 1.0
    return m


def fit_als(inputs: FitInputs) -> Fitted:
    """implicit's CPU ALS on the binary train matrix; a user's vector is refit from the given history."""
    from implicit.cpu.als import AlternatingLeastSquares

    h = inputs.harness
    matrix = h.matrix.astype(np.float32).tocsr()

    def fit(params: dict[str, float]) -> ScoreTable:
        model = AlternatingLeastSquares(
            factors=int(params["factors"]), regularization=params["regularization"], alpha=params["alpha"],
            iterations=int(params["iterations"]), num_threads=1, random_state=inputs.seed)
        with blas_single_thread():
            model.fit(matrix, show_progress=False)
        items = np.asarray(model.item_factors)

        def scores(users: list[int], histories: list[list[int]]) -> np.ndarray:  # noqa: ARG001 (refit)
            with blas_single_thread():
                vec = model.recalculate_user(np.arange(len(histories)), _user_items(histories, h.n_items))
            return np.asarray(vec).reshape(len(histories), -1) @ items.T

        return scores

    return grid_search(inputs, ALS_GRID, fit)


def fit_bpr(inputs: FitInputs) -> Fitted:
    """implicit's CPU BPR on the binary train matrix; users keep their train vectors."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    matrix = inputs.harness.matrix.astype(np.float32).tocsr()

    def fit(params: dict[str, float]) -> ScoreTable:
        model = BayesianPersonalizedRanking(
            factors=int(params["factors"]), learning_rate=params["learning_rate"],
            regularization=params["regularization"], iterations=int(params["iterations"]),
            num_threads=1, random_state=inputs.seed)
        with blas_single_thread():
            model.fit(matrix, show_progress=False)
        users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)
        def scores(u: list[int], histories: list[list[int]]) -> np.ndarray:  # noqa: ARG001 (BPR: no fold-in)
            return users[np.asarray(u, dtype=np.int64)] @ items.T

        return scores

    return grid_search(inputs, BPR_GRID, fit)
