"""The one ranker interface every method implements, with its two adapters: the inference engine and
score tables (every baseline)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from model_store.engine import InferenceEngine, Scored, filter_rerank
from model_store.topk import top_k_indices

# (users, histories) -> (len(users), n_items) scores of every item, higher is better
ScoreTable = Callable[[list[int], list[list[int]]], np.ndarray]


class Ranker(Protocol):
    """What `training.evaluate.evaluate` asks of a method: scores of given candidates (direct) and a
    recommendation list with its scores (sequential)."""

    def score_candidates(
        self, users: Sequence[int], histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]
    ) -> list[dict[int, float]]:
        """{candidate: score} per user, higher is better."""
        ...

    def recommend(
        self, users: Sequence[int], histories: Sequence[Sequence[int]], k: int, filter_history: bool
    ) -> list[list[Scored]]:
        """k items per user (fewer when fewer can be ranked; more only to include every item tied with
        the k-th), best first, scores included; history items dropped when `filter_history`."""
        ...


@dataclass
class EngineRanker:
    """ELMRec through the shared inference engine: exact likelihood (direct), constrained beam + the
    history-filtering rerank of `extra` items (sequential); `pure` = the T5 without the graph prior."""

    engine: InferenceEngine
    extra: int
    beam: int = 20
    pure: bool = False
    _last: tuple[tuple[object, ...], list[list[Scored]]] | None = field(default=None, repr=False)

    def score_candidates(
        self, users: Sequence[int], histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]
    ) -> list[dict[int, float]]:
        return self.engine.score_direct(list(users), [list(c) for c in candidates], pure=self.pure,
                                        histories=[list(h) for h in histories])

    def recommend(
        self, users: Sequence[int], histories: Sequence[Sequence[int]], k: int, filter_history: bool
    ) -> list[list[Scored]]:
        generated = self._generate(users, histories, max(self.beam, k + self.extra))
        return [filter_rerank(g, h, k, self.extra, filter_history)
                for g, h in zip(generated, histories, strict=True)]

    def _generate(
        self, users: Sequence[int], histories: Sequence[Sequence[int]], width: int
    ) -> list[list[Scored]]:
        """The beam's items, best first; the last call is kept, so the filtered and unfiltered lists of
        one batch share one beam. (Becomes `engine.recommend_sequential(..., pure=self.pure)` in
        `recommend` once the engine takes `pure` there.)"""
        key = (tuple(users), tuple(tuple(h) for h in histories), width)
        if self._last is None or self._last[0] != key:
            self._last = (key, self.engine.beam_sequential(list(users), [list(h) for h in histories], width,
                                                           pure=self.pure))
        return self._last[1]


@dataclass
class TableRanker:
    """A method that scores every item for a (user, history): popularity, ItemKNN, Ω, ALS, BPR, LightGCN,
    SASRec. Candidates keep their table scores; recommendations are the tie-ordered top k, with every
    item tied with the k-th (ties then count against a held-out item at the cut too)."""

    table: ScoreTable

    def score_candidates(
        self, users: Sequence[int], histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]
    ) -> list[dict[int, float]]:
        scores = self.table(list(users), [list(h) for h in histories])
        return [{int(c): float(row[c]) for c in cands} for row, cands in zip(scores, candidates, strict=True)]

    def recommend(
        self, users: Sequence[int], histories: Sequence[Sequence[int]], k: int, filter_history: bool
    ) -> list[list[Scored]]:
        scores = np.array(self.table(list(users), [list(h) for h in histories]), dtype=np.float64)
        out: list[list[Scored]] = []
        for row, history in zip(scores, histories, strict=True):
            if filter_history and len(history):
                row[np.asarray(history, dtype=np.int64)] = -np.inf
            out.append([Scored(int(i), float(row[i])) for i in top_k_indices(row, k, with_ties=True)])
        return out


def per_user(score: Callable[[int, Sequence[int]], np.ndarray]) -> ScoreTable:
    """A score table from a one-user scorer (user, history) -> scores of every item."""
    return lambda users, histories: np.stack([score(u, h) for u, h in zip(users, histories, strict=True)])
