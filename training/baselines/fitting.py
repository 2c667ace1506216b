"""Fitting helpers of the learned baselines: their inputs (train + validation only), a grid search and an
early-stopped, time-boxed epoch loop, both choosing per task on validation, and the per-dataset fit cache.

Every model is fit once per dataset (on the train part of the leave-one-out split) and cached for the
other task of the same process; the chosen fitted model is evaluated on test as is (never refit on
train + validation).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model_store.errors import DataError
from training.baselines.harness import TASKS, VALID_USERS, Harness, tuning_cases, valid_ndcg
from training.early_stopping import EarlyStopping
from training.evaluate import EvalCase
from training.ranking import ScoreTable
from training.records import Task
from training.split import leave_one_out

logger = logging.getLogger(__name__)

DEFAULT_MINUTES = 5.0  # time box of each neural baseline (training + validation checks)


@dataclass
class Fitted:
    """What a learned baseline keeps: per task the chosen score table, its settings and a report."""

    scorers: dict[str, ScoreTable]
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


Fitter = Callable[[FitInputs], Fitted]
_CACHE: dict[tuple[str, str], Fitted] = {}


def fingerprint(sequences: Sequence[Sequence[int]], negatives: Sequence[Sequence[int]], n_items: int,
                seed: int, max_minutes: float) -> str:
    """A key for the fits of one dataset (the whole sequences, so the validation items count too)."""
    h = hashlib.sha1(repr((len(sequences), n_items, seed, max_minutes)).encode())
    for rows in (sequences, negatives):
        h.update(np.fromiter((len(s) for s in rows), dtype=np.int64, count=len(rows)).tobytes())
        h.update(np.fromiter((i for s in rows for i in s), dtype=np.int64).tobytes())
    return h.hexdigest()


def fit_inputs(harness: Harness, sequences: Sequence[Sequence[int]], negatives: Sequence[Sequence[int]],
               seed: int, max_minutes: float) -> FitInputs:
    """The train part of every sequence and the validation cases of both tasks."""
    valid = tuning_cases(sequences, negatives)
    return FitInputs(harness, leave_one_out(sequences).train, dict.fromkeys(TASKS, valid), seed, max_minutes)


def fit_learned(
    method: str, fitter: Fitter, harness: Harness, sequences: Sequence[Sequence[int]],
    negatives: Sequence[Sequence[int]], task: Task, seed: int, max_minutes: float | None = None,
) -> tuple[ScoreTable, dict[str, Any]]:
    """Fit (or reuse) `method` with `fitter` on train interactions, pick its settings for `task` on
    validation. Returns its score table and what goes in the result JSON (chosen settings, fit minutes
    and epochs, validation NDCG@10 of what was tried)."""
    if max_minutes is not None and not max_minutes > 0:
        raise DataError(f"--max-minutes must be > 0, got {max_minutes}")
    budget = DEFAULT_MINUTES if max_minutes is None else float(max_minutes)
    key = (fingerprint(sequences, negatives, harness.n_items, seed, budget), method)
    cached = key in _CACHE
    if not cached:
        if not any(k[0] == key[0] for k in _CACHE):
            _CACHE.clear()  # keep the fits of one dataset at a time
        start = time.perf_counter()
        _CACHE[key] = fitter(fit_inputs(harness, sequences, negatives, seed, budget))
        _CACHE[key].seconds = time.perf_counter() - start
    fitted = _CACHE[key]
    extra = {
        "hyperparameters": fitted.chosen[task],
        "fit": {"minutes": round(fitted.seconds / 60, 2), "shared_with_other_task": cached,
                "valid_users": min(len(sequences), VALID_USERS), "valid_metric": f"{task} ndcg@10",
                "refit_on_train_plus_valid": False, **fitted.report.get(task, {})},
    }
    return fitted.scorers[task], extra


@functools.cache
def _threadpools() -> Any:
    from threadpoolctl import ThreadpoolController  # scanning the loaded libraries is slow: once, on use

    return ThreadpoolController()


def blas_single_thread() -> Any:
    """One BLAS thread inside the block (implicit warns and slows down with a threaded OpenBLAS)."""
    return _threadpools().limit(limits=1, user_api="blas")


def grid_search(inputs: FitInputs, grid: Sequence[dict[str, float]],
                fit: Callable[[dict[str, float]], ScoreTable]) -> Fitted:
    """Fit every setting once; per task keep the one with the best validation NDCG@10."""
    best: dict[str, tuple[float, int]] = {t: (-1.0, 0) for t in TASKS}
    fns: list[ScoreTable] = []
    tried: dict[str, list[dict[str, Any]]] = {t: [] for t in TASKS}
    for n, params in enumerate(grid):
        fn = fit(params)
        fns.append(fn)
        for task in TASKS:
            score = valid_ndcg(fn, inputs.valid[task], task)
            tried[task].append({**params, "valid_ndcg@10": round(score, 5)})
            if score > best[task][0]:
                best[task] = (score, n)
        logger.info("%s: valid ndcg@10 direct %.4f sequential %.4f", params, *(s["valid_ndcg@10"] for s in
                    (tried["direct"][-1], tried["sequential"][-1])))
    keep: dict[str, ScoreTable] = {t: fns[best[t][1]] for t in TASKS}
    return Fitted(scorers=keep, chosen={t: dict(grid[best[t][1]]) for t in TASKS},
                  report={t: {"valid_ndcg@10": round(best[t][0], 5), "grid": tried[t]} for t in TASKS})


@contextlib.contextmanager
def _torch_single_thread() -> Iterator[None]:
    import torch  # only the neural baselines need torch threads pinned

    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # the machine's cores are shared; one thread per model
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@dataclass
class EpochPlan:
    """How long a neural baseline trains: epochs, validation every `eval_every`, early-stopping patience."""

    max_epochs: int
    eval_every: int
    patience: int


def early_stopped(
    inputs: FitInputs, train_epoch: Callable[[], float], snapshot: Callable[[], ScoreTable],
    params: dict[str, Any], plan: EpochPlan,
) -> Fitted:
    """Train epoch by epoch inside the time box; per task keep the snapshot with the best validation NDCG@10.

    Stops at `max_epochs`, after `patience` validation checks with no gain on either task, or when the
    time box (`inputs.max_minutes`, training and validation together) is spent.
    """
    with _torch_single_thread():
        return _early_stopped(inputs, train_epoch, snapshot, params, plan)


def _early_stopped(
    inputs: FitInputs, train_epoch: Callable[[], float], snapshot: Callable[[], ScoreTable],
    params: dict[str, Any], plan: EpochPlan,
) -> Fitted:
    deadline = time.perf_counter() + inputs.max_minutes * 60
    stoppers = {t: EarlyStopping(plan.patience, "max") for t in TASKS}
    best_epoch = dict.fromkeys(TASKS, 0)
    keep: dict[str, ScoreTable] = {}
    curve: list[dict[str, float]] = []
    epoch, stopped = 0, "max_epochs"
    start = time.perf_counter()
    while epoch < plan.max_epochs:
        loss = train_epoch()
        epoch += 1
        out_of_time = time.perf_counter() >= deadline
        if epoch % plan.eval_every and not out_of_time and epoch < plan.max_epochs:
            continue
        fn = snapshot()
        point: dict[str, float] = {"epoch": epoch, "loss": round(loss, 5),
                                   "minutes": round((time.perf_counter() - start) / 60, 2)}
        for task in TASKS:
            score = valid_ndcg(fn, inputs.valid[task], task)
            point[f"valid_{task}_ndcg@10"] = round(score, 5)
            if stoppers[task].update(score):
                best_epoch[task], keep[task] = epoch, fn
        curve.append(point)
        logger.info("epoch %d: %s", epoch, point)
        if out_of_time:
            stopped = "time_box"
            break
        if all(s.should_stop for s in stoppers.values()):  # no gain on either task for `patience` checks
            stopped = "early_stopping"
            break
    run = {"epochs": epoch, "stopped": stopped, "max_minutes": inputs.max_minutes}
    return Fitted(scorers=keep, chosen={t: {**params, "epoch": best_epoch[t]} for t in TASKS},
                  report={t: {**run, "best_epoch": best_epoch[t],
                              "valid_ndcg@10": round(stoppers[t].best or 0.0, 5), "curve": curve}
                          for t in TASKS})
