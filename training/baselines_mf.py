"""Learned baselines fit on train interactions only: implicit ALS and BPR, LightGCN; tuned on validation.

Every model here is fit once per dataset (on the train part of the leave-one-out split) and cached for
the other task of the same process; the hyper-parameters (ALS/BPR grid) or the stopping epoch
(LightGCN, SASRec) are chosen per task on validation users only, and the chosen fitted model is
evaluated on test as is (never refit on train + validation).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from model_store.errors import DataError
from model_store.omega import normalized_adjacency
from training.baselines import VALID_USERS, Harness, Scorer, evaluate_scorer, tuning_cases
from training.evaluate import EvalCase

logger = logging.getLogger(__name__)

LEARNED = ("als", "bpr", "lightgcn", "sasrec")
TASKS = ("direct", "sequential")
DEFAULT_MINUTES = 5.0  # time box of each neural baseline (training + validation checks)
INPUTS = {  # what each learned model scores from, recorded in its result JSON
    "als": "user vector refit by least squares from the given history (test: train + validation item)",
    "bpr": "user vector learned on train interactions (the history argument is not used)",
    "lightgcn": "user vector learned on train interactions (the history argument is not used)",
    "sasrec": "next-item logits given the last 50 items of the history (test: train + validation item); "
              "direct ranks the 100 candidates by these logits, so it sees the validation item",
}
BatchFn = Callable[[list[int], list[list[int]]], np.ndarray]  # (users, histories) -> (n, n_items)

ALS_GRID: tuple[dict[str, float], ...] = tuple(
    {"factors": f, "regularization": r, "alpha": a, "iterations": 15}
    for f in (64, 128) for r in (0.01, 0.1) for a in (1.0, 10.0))
BPR_GRID: tuple[dict[str, float], ...] = tuple(
    {"factors": f, "learning_rate": lr, "regularization": 0.05, "iterations": 200}
    for f in (64, 128) for lr in (0.05, 0.1))


class BatchScorer:
    """A Scorer over a known EvalCase that scores the next `batch` users in one model call.

    Cases are served in any order; a (user, history) pair that is not the case's falls back to a
    one-user call, so the Scorer contract holds for every input.
    """

    def __init__(self, fn: BatchFn, case: EvalCase, batch: int = 256) -> None:
        self.fn, self.case, self.batch = fn, case, batch
        self.position = {u: i for i, u in enumerate(case.users)}
        self.start = 0
        self.block: np.ndarray = np.empty((0, 0), dtype=np.float32)

    def __call__(self, user: int, history: Sequence[int]) -> np.ndarray:
        i = self.position.get(user)
        if i is None or list(history) != self.case.histories[i]:
            return self.fn([user], [list(history)])[0]
        if not self.start <= i < self.start + len(self.block):
            end = min(len(self.case.users), i + self.batch)
            self.start, self.block = i, self.fn(self.case.users[i:end], self.case.histories[i:end])
        return self.block[i - self.start]


@dataclass
class Fitted:
    """What a learned baseline keeps: per task the chosen batch scorer, its settings and a report."""

    scorers: dict[str, BatchFn]
    chosen: dict[str, dict[str, Any]]
    report: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class FitInputs:
    """Everything a learned baseline may see: train statistics and the validation cases (no test item)."""

    harness: Harness
    train: list[list[int]]  # per user, the train part of the sequence (time order)
    valid: dict[str, EvalCase]  # per task: validation users with train history and validation target
    seed: int
    max_minutes: float


_CACHE: dict[tuple[str, str], Fitted] = {}


def fingerprint(sequences: Sequence[Sequence[int]], negatives: Sequence[Sequence[int]], n_items: int,
                seed: int, max_minutes: float) -> str:
    """A key for the fits of one dataset (the whole sequences, so the validation items count too)."""
    h = hashlib.sha1(repr((len(sequences), n_items, seed, max_minutes)).encode())
    for rows in (sequences, negatives):
        h.update(np.fromiter((len(s) for s in rows), dtype=np.int64, count=len(rows)).tobytes())
        h.update(np.fromiter((i for s in rows for i in s), dtype=np.int64).tobytes())
    return h.hexdigest()


def valid_cases(sequences: Sequence[Sequence[int]],
                negatives: Sequence[Sequence[int]]) -> dict[str, EvalCase]:
    return dict.fromkeys(TASKS, tuning_cases(sequences, negatives))


def valid_ndcg(fn: BatchFn, case: EvalCase, task: str, seed: int) -> float:
    return float(evaluate_scorer(BatchScorer(fn, case), case, task, seed)["ndcg@10"])


def learned_scorer(
    method: str, harness: Harness, sequences: Sequence[Sequence[int]], negatives: Sequence[Sequence[int]],
    case: EvalCase, task: str, seed: int, max_minutes: float | None = None,
) -> tuple[Scorer, dict[str, Any]]:
    """Fit (or reuse) `method` on train interactions, pick its settings for `task` on validation.

    Returns the Scorer for `case` and what goes in the result JSON (chosen settings, fit minutes and
    epochs, validation NDCG@10 of what was tried).
    """
    if method not in LEARNED:
        raise DataError(f"unknown learned baseline {method!r}; choose from {', '.join(LEARNED)}")
    if max_minutes is not None and not max_minutes > 0:
        raise DataError(f"--max-minutes must be > 0, got {max_minutes}")
    budget = DEFAULT_MINUTES if max_minutes is None else float(max_minutes)
    key = (fingerprint(sequences, negatives, harness.n_items, seed, budget), method)
    cached = key in _CACHE
    if not cached:
        if not any(k[0] == key[0] for k in _CACHE):
            _CACHE.clear()  # keep the fits of one dataset at a time
        inputs = FitInputs(harness, [list(s[:-2]) for s in sequences], valid_cases(sequences, negatives),
                           seed, budget)
        start = time.perf_counter()
        _CACHE[key] = FITTERS[method](inputs)
        _CACHE[key].seconds = time.perf_counter() - start
    fitted = _CACHE[key]
    extra = {
        "input": INPUTS[method],
        "hyperparameters": fitted.chosen[task],
        "fit": {"minutes": round(fitted.seconds / 60, 2), "shared_with_other_task": cached,
                "valid_users": min(len(sequences), VALID_USERS), "valid_metric": f"{task} ndcg@10",
                "refit_on_train_plus_valid": False, **fitted.report.get(task, {})},
    }
    return BatchScorer(fitted.scorers[task], case), extra


@functools.cache
def _threadpools() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # scanning the loaded libraries is the slow part: once


def _blas_single_thread() -> Any:
    """One BLAS thread inside the block (implicit warns and slows down with a threaded OpenBLAS)."""
    return _threadpools().limit(limits=1, user_api="blas")


def _user_items(histories: Sequence[Sequence[int]], n_items: int) -> sp.csr_matrix:
    """Binary CSR of one row per history (repeats count once)."""
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    cols = np.fromiter((i for h in histories for i in h), dtype=np.int64, count=len(rows))
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(histories), n_items))
    m.data[:] = 1.0
    return m


def _grid_search(inputs: FitInputs, grid: Sequence[dict[str, float]],
                 fit: Callable[[dict[str, float]], BatchFn]) -> Fitted:
    """Fit every setting once; per task keep the one with the best validation NDCG@10."""
    best: dict[str, tuple[float, int]] = {t: (-1.0, 0) for t in TASKS}
    fns: list[BatchFn] = []
    tried: dict[str, list[dict[str, Any]]] = {t: [] for t in TASKS}
    for n, params in enumerate(grid):
        fn = fit(params)
        fns.append(fn)
        for task in TASKS:
            score = valid_ndcg(fn, inputs.valid[task], task, inputs.seed)
            tried[task].append({**params, "valid_ndcg@10": round(score, 5)})
            if score > best[task][0]:
                best[task] = (score, n)
        logger.info("%s: valid ndcg@10 direct %.4f sequential %.4f", params, *(s["valid_ndcg@10"] for s in
                    (tried["direct"][-1], tried["sequential"][-1])))
    keep = {t: fns[best[t][1]] for t in TASKS}
    return Fitted(scorers=keep, chosen={t: dict(grid[best[t][1]]) for t in TASKS},
                  report={t: {"valid_ndcg@10": round(best[t][0], 5), "grid": tried[t]} for t in TASKS})


def fit_als(inputs: FitInputs) -> Fitted:
    """implicit's CPU ALS on the binary train matrix; a user's vector is refit from the given history."""
    from implicit.cpu.als import AlternatingLeastSquares

    h = inputs.harness
    matrix = h.matrix.astype(np.float32).tocsr()

    def fit(params: dict[str, float]) -> BatchFn:
        model = AlternatingLeastSquares(
            factors=int(params["factors"]), regularization=params["regularization"], alpha=params["alpha"],
            iterations=int(params["iterations"]), num_threads=1, random_state=inputs.seed)
        with _blas_single_thread():
            model.fit(matrix, show_progress=False)
        items = np.asarray(model.item_factors)

        def scores(users: list[int], histories: list[list[int]]) -> np.ndarray:
            with _blas_single_thread():
                vec = model.recalculate_user(np.arange(len(histories)), _user_items(histories, h.n_items))
            return np.asarray(vec).reshape(len(histories), -1) @ items.T

        return scores

    return _grid_search(inputs, ALS_GRID, fit)


def fit_bpr(inputs: FitInputs) -> Fitted:
    """implicit's CPU BPR on the binary train matrix; users keep their train vectors."""
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    matrix = inputs.harness.matrix.astype(np.float32).tocsr()

    def fit(params: dict[str, float]) -> BatchFn:
        model = BayesianPersonalizedRanking(
            factors=int(params["factors"]), learning_rate=params["learning_rate"],
            regularization=params["regularization"], iterations=int(params["iterations"]),
            num_threads=1, random_state=inputs.seed)
        with _blas_single_thread():
            model.fit(matrix, show_progress=False)
        users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)
        return lambda u, hist: users[np.asarray(u, dtype=np.int64)] @ items.T

    return _grid_search(inputs, BPR_GRID, fit)


@dataclass
class LightGCNConfig:
    dim: int = 64
    layers: int = 3
    lr: float = 5e-3
    reg: float = 1e-4
    batch: int = 2048
    max_epochs: int = 1000
    eval_every: int = 2  # epochs between validation checks
    patience: int = 5  # validation checks without improvement (on both tasks) before stopping


def fit_lightgcn(inputs: FitInputs, config: LightGCNConfig | None = None) -> Fitted:
    """LightGCN (He et al. 2020) with BPR loss and Adam on the train graph; time-boxed, early-stopped."""
    import torch

    cfg = config or LightGCNConfig()
    h = inputs.harness
    torch.manual_seed(inputs.seed)
    rng = np.random.default_rng([inputs.seed, 11])
    spread = _Propagate(normalized_adjacency(h.n_users, h.n_items, h.users, h.items).astype(np.float32))
    emb = torch.nn.Parameter(torch.randn(h.n_users + h.n_items, cfg.dim) * 0.1)
    opt = torch.optim.Adam([emb], lr=cfg.lr, fused=True)
    pairs = h.matrix.tocoo()
    users, items = pairs.row.astype(np.int64), pairs.col.astype(np.int64)  # distinct train edges
    known = np.sort(users * h.n_items + items)

    def propagate() -> torch.Tensor:
        x, total = emb, emb
        for _ in range(cfg.layers):
            x = spread(x)
            total = total + x
        return total / (cfg.layers + 1)

    def sample_negatives(u: np.ndarray) -> np.ndarray:
        neg = rng.integers(0, h.n_items, size=len(u))
        for _ in range(5):  # resample the draws that hit a train item of the user
            hit = _contains(known, u * h.n_items + neg)
            if not hit.any():
                break
            neg[hit] = rng.integers(0, h.n_items, size=int(hit.sum()))
        return neg

    def snapshot() -> BatchFn:
        with torch.no_grad():
            final = propagate().numpy().copy()
        ue, ie = final[: h.n_users], final[h.n_users:]
        return lambda u, hist: ue[np.asarray(u, dtype=np.int64)] @ ie.T

    def train_epoch() -> float:
        order = rng.permutation(len(users))
        total = 0.0
        for s in range(0, len(order), cfg.batch):
            b = order[s: s + cfg.batch]
            u = torch.from_numpy(users[b])
            i = torch.from_numpy(items[b] + h.n_users)
            j = torch.from_numpy(sample_negatives(users[b]) + h.n_users)
            final = propagate()
            pos = (final[u] * final[i]).sum(-1)
            neg = (final[u] * final[j]).sum(-1)
            reg = (emb[u].pow(2).sum() + emb[i].pow(2).sum() + emb[j].pow(2).sum()) / (2 * len(b))
            loss = -torch.nn.functional.logsigmoid(pos - neg).mean() + cfg.reg * reg
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        return total / len(order)

    params = {"dim": cfg.dim, "layers": cfg.layers, "lr": cfg.lr, "reg": cfg.reg, "batch": cfg.batch,
              "optimizer": "adam", "loss": "bpr"}
    return early_stopped(inputs, train_epoch, snapshot, params, cfg.max_epochs, cfg.eval_every, cfg.patience)


class _Propagate:
    """x -> A x for the symmetric normalised train graph A, by scipy (about 3x torch.sparse.mm on CPU)."""

    def __init__(self, adj: sp.csr_matrix) -> None:
        import torch

        graph = adj.tocsr()

        class Spread(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(graph @ x.detach().numpy())

            @staticmethod
            def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(graph @ grad.contiguous().numpy())  # A is symmetric: Aᵀ = A

        self.apply = Spread.apply

    def __call__(self, x: Any) -> Any:
        return self.apply(x)


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(sorted_keys, keys).clip(max=len(sorted_keys) - 1)
    return np.asarray(sorted_keys[pos] == keys)


def early_stopped(
    inputs: FitInputs, train_epoch: Callable[[], float], snapshot: Callable[[], BatchFn],
    params: dict[str, Any], max_epochs: int, eval_every: int, patience: int,
) -> Fitted:
    """Train epoch by epoch inside the time box; per task keep the snapshot with the best validation NDCG@10.

    Stops at `max_epochs`, after `patience` validation checks with no gain on either task, or when the
    time box (`inputs.max_minutes`, training and validation together) is spent.
    """
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine's cores are shared; one thread per model
    try:
        return _early_stopped(inputs, train_epoch, snapshot, params, max_epochs, eval_every, patience)
    finally:
        torch.set_num_threads(saved)


def _early_stopped(
    inputs: FitInputs, train_epoch: Callable[[], float], snapshot: Callable[[], BatchFn],
    params: dict[str, Any], max_epochs: int, eval_every: int, patience: int,
) -> Fitted:
    deadline = time.perf_counter() + inputs.max_minutes * 60
    best = {t: (-1.0, 0) for t in TASKS}
    keep: dict[str, BatchFn] = {}
    curve: list[dict[str, float]] = []
    stale, epoch, stopped = 0, 0, "max_epochs"
    start = time.perf_counter()
    while epoch < max_epochs:
        loss = train_epoch()
        epoch += 1
        out_of_time = time.perf_counter() >= deadline
        if epoch % eval_every and not out_of_time and epoch < max_epochs:
            continue
        fn = snapshot()
        point: dict[str, float] = {"epoch": epoch, "loss": round(loss, 5),
                                   "minutes": round((time.perf_counter() - start) / 60, 2)}
        gained = False
        for task in TASKS:
            score = valid_ndcg(fn, inputs.valid[task], task, inputs.seed)
            point[f"valid_{task}_ndcg@10"] = round(score, 5)
            if score > best[task][0]:
                best[task], keep[task], gained = (score, epoch), fn, True
        curve.append(point)
        logger.info("epoch %d: %s", epoch, point)
        stale = 0 if gained else stale + 1
        if out_of_time:
            stopped = "time_box"
            break
        if stale >= patience:
            stopped = "early_stopping"
            break
    run = {"epochs": epoch, "stopped": stopped, "max_minutes": inputs.max_minutes}
    return Fitted(scorers=keep, chosen={t: {**params, "epoch": best[t][1]} for t in TASKS},
                  report={t: {**run, "best_epoch": best[t][1], "valid_ndcg@10": round(best[t][0], 5),
                              "curve": curve} for t in TASKS})


def _fit_sasrec(inputs: FitInputs) -> Fitted:
    from training.baselines_sasrec import fit_sasrec

    return fit_sasrec(inputs)


FITTERS: dict[str, Callable[[FitInputs], Fitted]] = {
    "als": fit_als, "bpr": fit_bpr, "lightgcn": fit_lightgcn, "sasrec": _fit_sasrec,
}
