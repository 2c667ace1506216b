"""Baselines in the same harness as ELMRec: same split, same candidates, same metrics, train-only fitting."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from model_store.codec import IdCodec
from model_store.errors import DataError
from model_store.item_graph import ItemGraph, cosine_similarity, interaction_matrix
from model_store.omega import Omega
from training.data import load_data
from training.evaluate import EvalCase, sample_users, split_cases
from training.metrics import rank_in_list, summarize
from training.negatives import negatives_for
from training.omega_variants import SYNTAX, build_omega, parse_omega
from training.split import leave_one_out, train_edges
from training.trainer import subset_users

Scorer = Callable[[int, Sequence[int]], np.ndarray]  # (user, history) -> scores over all items
LEARNED = ("als", "bpr", "lightgcn", "sasrec")  # minutes each: run only when named in `methods`
VALID_USERS = 3000  # validation users used for tuning and early stopping (the first ones, file order)
METHODS = ("popularity", "itemknn", "omega-spectral", "omega-random", "p5-leak", *LEARNED)


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


def popularity_scorer(harness: Harness) -> Scorer:
    """Training popularity, the same for every user."""
    return lambda user, history: harness.popularity


def itemknn_scorer(harness: Harness, decay: float, shrink: float = 10.0) -> Scorer:
    """Σ_t decay^(n-1-t) · sim(h_t, ·): similarity to the history, recent items weighing more."""
    graph = ItemGraph(harness.item_similarity(shrink))
    pop = harness.popularity / max(harness.popularity.max(), 1.0) * 1e-6  # tie-break by popularity

    def score(user: int, history: Sequence[int]) -> np.ndarray:
        return graph.history_scores(history, decay) + pop

    return score


def omega_scorer(omega: Omega) -> Scorer:
    """Ω alone: user row · item row for direct (known user), sum of history rows · item row otherwise."""

    def score(user: int, history: Sequence[int]) -> np.ndarray:
        if user >= 0:
            return omega.items @ omega.users[user]
        return omega.items @ omega.items[np.asarray(history, dtype=np.int64)].sum(axis=0)

    return score


def sequential_omega_scorer(omega: Omega) -> Scorer:
    inner = omega_scorer(omega)
    return lambda user, history: inner(-1, history)


def leak_scorer(codec: IdCodec) -> Scorer:
    """The P5 id leak: score items by closeness above max(history) in P5's consecutive numbering."""
    numbers = codec.item_numbers.astype(np.float64)

    def score(user: int, history: Sequence[int]) -> np.ndarray:
        top = max(numbers[np.asarray(history, dtype=np.int64)]) if history else 0.0
        gap = numbers - top
        return np.where(gap > 0, -gap, -1e9 + gap)

    return score


def rank_direct(score: Scorer, case: EvalCase, rng: np.random.Generator) -> list[int | None]:
    """Rank of the positive among its candidates; ties broken at random (seeded), never in its favour."""
    ranks: list[int | None] = []
    for user, history, target, negs in zip(case.users, case.histories, case.targets, case.negatives,
                                           strict=True):
        scores = score(user, history)
        cands = np.asarray([target, *negs], dtype=np.int64)
        s = scores[cands]
        above = int((s[1:] > s[0]).sum())
        ties = int((s[1:] == s[0]).sum())
        ranks.append(above + int(rng.integers(0, ties + 1)) if ties else above)
    return ranks


def rank_sequential(score: Scorer, case: EvalCase, filter_history: bool, k: int = 10) -> list[int | None]:
    ranks: list[int | None] = []
    for user, history, target in zip(case.users, case.histories, case.targets, strict=True):
        scores = score(user, history).astype(np.float64)
        if filter_history and history:
            scores[np.asarray(history, dtype=np.int64)] = -np.inf
        top = np.argpartition(-scores, k)[: k + 1] if len(scores) > k + 1 else np.arange(len(scores))
        ranked = sorted(top.tolist(), key=lambda i: (-scores[i], i))[:k]
        ranks.append(rank_in_list(ranked, target))
    return ranks


def evaluate_scorer(score: Scorer, case: EvalCase, task: str, seed: int) -> dict[str, Any]:
    if task == "direct":
        return dict(summarize(rank_direct(score, case, np.random.default_rng([seed, 5]))))
    out: dict[str, Any] = dict(summarize(rank_sequential(score, case, True)))
    out["unfiltered"] = summarize(rank_sequential(score, case, False))
    return out


def run_baselines(
    data_path: Path, task: str, split: str = "test", id_scheme: str = "shuffled",
    limit_users: int | None = None, seed: int = 0, methods: Sequence[str] | None = None,
    max_minutes: float | None = None, test_users: int | None = None,
) -> list[dict[str, Any]]:
    """Every baseline on one dataset/task/split; ItemKNN's recency decay is chosen on validation.

    The learned ones (als, bpr, lightgcn, sasrec: `training.baselines_mf`) are fit on train
    interactions, tuned on validation users; the neural ones are time-boxed at `max_minutes` each.
    `test_users`: evaluate on the fixed random sample of users that a bundle trained with that many
    test users is evaluated on (`sample_users`, same seed).
    """
    chosen = list(methods or [m for m in METHODS
                              if (m != "p5-leak" or id_scheme == "p5") and m not in LEARNED])
    unknown = [m for m in chosen if m not in METHODS and parse_omega(m) is None]
    if unknown:
        raise DataError(f"unknown baseline(s) {unknown}; choose from {', '.join(METHODS)} or {SYNTAX}")
    data = load_data(data_path)
    if limit_users is not None:
        data = subset_users(data, limit_users)
    negatives = negatives_for(data)
    users, items = train_edges(leave_one_out(data.sequences))
    harness = Harness(data.n_users, data.n_items, users, items)
    case = split_cases(data.sequences, negatives, split,
                       sample_users(data.n_users, test_users, seed) if test_users else None)
    codec = IdCodec.build(data.user_ids, data.item_ids, scheme=id_scheme, seed=seed,
                          p5_user_numbers=data.p5_user_numbers, p5_item_numbers=data.p5_item_numbers)
    results: list[dict[str, Any]] = []
    for method in chosen:
        start = time.perf_counter()
        extra: dict[str, Any] = {}
        if method == "popularity":
            scorer: Scorer = popularity_scorer(harness)
        elif method == "itemknn":
            decay = tune_decay(harness, data.sequences, negatives, task, seed)
            scorer = itemknn_scorer(harness, decay)
            extra["decay"] = decay
        elif method in LEARNED:
            from training.baselines_mf import learned_scorer

            scorer, extra = learned_scorer(method, harness, data.sequences, negatives, case, task, seed,
                                           max_minutes)
        elif (variant := parse_omega(method)) is not None:
            omega = build_omega(variant, data.n_users, data.n_items, users, items, seed)
            scorer = omega_scorer(omega) if task == "direct" else sequential_omega_scorer(omega)
            extra["omega"] = omega.params
        else:
            if id_scheme != "p5":
                raise DataError("the p5-leak rule only means something under --id-scheme p5")
            scorer = leak_scorer(codec)
        metrics = evaluate_scorer(scorer, case, task, seed)
        results.append({
            "method": method, "preset": None, "dataset": data.name, "task": task, "split": split,
            "seed": seed,
            "users": len(case.users), "device": f"cpu ({os.cpu_count()} cores)",
            "seconds": round(time.perf_counter() - start, 2),
            "protocol": {"id_scheme": id_scheme, "graph": "train", "split": "leave-one-out",
                         "label": "honest" if id_scheme == "shuffled" else "reproduction"},
            **metrics, **extra,
        })
    return results


def tune_decay(harness: Harness, sequences: Sequence[Sequence[int]], negatives: Sequence[Sequence[int]],
                task: str, seed: int, grid: Sequence[float] = (1.0, 0.8, 0.6, 0.4, 0.2)) -> float:
    """Recency decay with the best validation NDCG@10 (on up to 3,000 validation users)."""
    valid = tuning_cases(sequences, negatives)
    best, best_score = grid[0], -1.0
    for decay in grid:
        score = evaluate_scorer(itemknn_scorer(harness, decay), valid, task, seed)["ndcg@10"]
        if score > best_score:
            best, best_score = decay, score
    return best


def tuning_cases(sequences: Sequence[Sequence[int]], negatives: Sequence[Sequence[int]]) -> EvalCase:
    """The validation users every baseline is tuned on: the first VALID_USERS in file order."""
    return split_cases(sequences, negatives, "valid", range(min(len(sequences), VALID_USERS)))
