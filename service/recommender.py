"""From requests to answers: ids, histories and fallbacks resolved here, the model run through the batchers.

The model work is two plain functions (`run_direct_batch`, `run_sequential_batch`) that call the
shared `InferenceEngine` exactly as the offline evaluator does; everything else is bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_store.bundle import Bundle
from model_store.engine import InferenceEngine, Scored, filter_rerank
from model_store.omega import fold_in
from model_store.retrieval import popular, retrieve
from model_store.topk import top_k_items
from service.batching import MicroBatcher
from service.errors import BadRequestError, StoreUnavailableError, UnknownItemsError
from service.metrics import ServiceMetrics
from service.schemas import (
    DirectRequest,
    Fallback,
    HistoryResponse,
    InteractionsResponse,
    RecommendResponse,
    ScoredItem,
    SequentialRequest,
)
from service.store import HistoryStore

MIN_BEAM = 20  # the paper's beam; the served beam is max(20, bundle beam, k + N)


@dataclass(frozen=True)
class DirectJob:
    """Rank `candidates` (dense ids) for `user` (None = cold start with its folded-in Ω row).

    `history` is read only by a graph prior that mixes in item co-occurrence (else None)."""

    user: int | None
    candidates: tuple[int, ...]
    k: int
    user_row: np.ndarray | None = None
    history: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SequentialJob:
    """Constrained beam of width `beam` on `history`, then history-filtering reranking to k."""

    user: int | None
    history: tuple[int, ...]
    k: int
    extra: int
    filter_history: bool
    beam: int


def top_k(scores: dict[int, float], k: int) -> list[Scored]:
    """Best first; ties broken by the lower dense index, as `InferenceEngine.rank_direct` does."""
    return [Scored(item, score) for item, score in top_k_items(scores, k)]


def run_direct_batch(engine: InferenceEngine, jobs: Sequence[DirectJob]) -> list[list[Scored]]:
    """All candidates of all jobs scored in one `score_direct` call (the evaluator's call)."""
    live = [j for j in jobs if j.candidates]
    scores = iter(engine.score_direct([j.user for j in live], [list(j.candidates) for j in live],
                                      [j.user_row for j in live], histories=[j.history for j in live])
                  ) if live else iter(())
    return [top_k(next(scores), j.k) if j.candidates else [] for j in jobs]


def run_sequential_batch(engine: InferenceEngine, jobs: Sequence[SequentialJob]) -> list[list[Scored]]:
    """One `beam_sequential` call per beam width, then `filter_rerank` per job (the evaluator's steps)."""
    out: list[list[Scored]] = [[] for _ in jobs]
    for beam in sorted({j.beam for j in jobs}):
        picked = [i for i, j in enumerate(jobs) if j.beam == beam]
        generated = engine.beam_sequential([jobs[i].user for i in picked],
                                           [list(jobs[i].history) for i in picked], beam)
        for i, items in zip(picked, generated, strict=True):
            job = jobs[i]
            out[i] = filter_rerank(items, job.history, job.k, job.extra, job.filter_history)
    return out


class Recommender:
    """Answers the API's questions for one loaded bundle, one history store and the model batchers."""

    def __init__(
        self,
        bundle: Bundle,
        store: HistoryStore,
        direct: MicroBatcher[DirectJob, list[Scored]],
        sequential: MicroBatcher[SequentialJob, list[Scored]],
        metrics: ServiceMetrics,
        max_candidates: int,
        history_max_len: int,
        rerank_extra: int | None,
    ) -> None:
        self.bundle = bundle
        self.codec = bundle.codec
        self.store = store
        self.direct_batcher = direct
        self.sequential_batcher = sequential
        self.metrics = metrics
        self.max_candidates = max_candidates
        self.history_max_len = history_max_len
        self.rerank_extra = bundle.config.rerank_n if rerank_extra is None else rerank_extra
        self.min_beam = max(MIN_BEAM, bundle.config.beam)
        self.popularity_rank = {item: r for r, item in enumerate(bundle.config.popular_items)}

    @property
    def model_version(self) -> str:
        return self.bundle.config.model_version

    # -- ids and histories -------------------------------------------------------------------
    def item_indices(self, field: str, ids: Sequence[str]) -> list[int]:
        """Dense ids of external item ids, in order; any unknown id -> 422 naming them all."""
        found, unknown = self.codec.index_of_items(ids)
        if unknown:
            raise UnknownItemsError(field, unknown)
        return found

    def bundle_history(self, user: int | None) -> list[str]:
        return [] if user is None else [self.codec.items[i] for i in self.bundle.data.sequences[user]]

    async def history_ids(self, user_id: str) -> tuple[list[str], int]:
        """(bundle history + stored history, oldest first, capped at HISTORY_MAX_LEN; stored count)."""
        stored = await self.store.get(user_id)
        merged = self.bundle_history(self.codec.find_user(user_id)) + stored
        capped = merged[-self.history_max_len :]
        return capped, min(len(stored), len(capped))

    async def history_indices(self, user_id: str) -> list[int]:
        """The merged history as dense ids; stored items a newer bundle no longer knows are skipped."""
        ids, _ = await self.history_ids(user_id)
        return self.codec.index_of_items(ids)[0]

    async def history(self, user_id: str) -> HistoryResponse:
        items, stored = await self.history_ids(user_id)
        return HistoryResponse(user_id=user_id, items=items, length=len(items),
                               known_user=self.codec.find_user(user_id) is not None, stored=stored)

    async def add_interactions(self, user_id: str, items: Sequence[str]) -> InteractionsResponse:
        """Validate, append, and answer only once the store acknowledged the write."""
        self.item_indices("items", items)
        stored = await self.store.append(user_id, list(items))
        bundle_len = len(self.bundle_history(self.codec.find_user(user_id)))
        return InteractionsResponse(user_id=user_id, length=min(bundle_len + stored, self.history_max_len))

    # -- answers ---------------------------------------------------------------------------------
    def _answer(self, user_id: str, items: Sequence[Scored], fallback: Fallback | None) -> RecommendResponse:
        if fallback is not None:
            self.metrics.fallbacks.labels(kind=fallback).inc()
        return RecommendResponse(
            user_id=user_id,
            items=[ScoredItem(item_id=self.codec.items[s.item], score=s.score) for s in items],
            model_version=self.model_version,
            fallback=fallback,
        )

    def by_popularity(self, items: Sequence[int], k: int) -> list[Scored]:
        """Items ordered by training popularity; score = minus the popularity rank (0 = most popular)."""
        unranked = len(self.popularity_rank)
        ranked = sorted(set(items), key=lambda i: (self.popularity_rank.get(i, unranked), i))
        return [Scored(i, float(-self.popularity_rank.get(i, unranked))) for i in ranked[:k]]

    async def recommend_direct(self, request: DirectRequest) -> RecommendResponse:
        candidates: list[int] | None = None
        if request.candidates is not None:
            if len(request.candidates) > self.max_candidates:
                raise BadRequestError(f"candidates: at most {self.max_candidates} ids are allowed "
                                      f"(ELMREC_MAX_CANDIDATES), got {len(request.candidates)}")
            candidates = self.item_indices("candidates", request.candidates)
        user = self.codec.find_user(request.user_id)
        reads_history = self.bundle.config.direct_reads_history
        if user is not None and candidates is not None:  # needs the history only if the prior reads it
            known_user: tuple[int, ...] | None = None
            if reads_history:  # with the store down, a known user degrades to the bundle's history
                try:
                    known_user = tuple(await self.history_indices(request.user_id))
                except StoreUnavailableError:
                    known_user = tuple(self.bundle.data.sequences[user][-self.history_max_len :])
            job = DirectJob(user, tuple(candidates), request.k, history=known_user)
            return self._answer(request.user_id, await self.direct_batcher.submit(job), None)
        history = await self.history_indices(request.user_id)
        known = tuple(history) if reads_history else None
        fallback: Fallback | None = None
        if user is not None:
            row = self.bundle.omega.users[user]
        elif history:
            row, fallback = fold_in(self.bundle.omega, np.asarray(history, dtype=np.int64), side="user"), \
                "cold_start"
        else:
            pool = candidates if candidates is not None else popular(self.bundle.config.popular_items,
                                                                     request.k)
            return self._answer(request.user_id, self.by_popularity(pool, request.k), "popularity")
        if candidates is None:
            candidates = retrieve(self.bundle.omega, row, self.max_candidates, exclude=history)
        job = DirectJob(user, tuple(candidates), request.k, None if user is not None else row, known)
        return self._answer(request.user_id, await self.direct_batcher.submit(job), fallback)

    async def recommend_sequential(self, request: SequentialRequest) -> RecommendResponse:
        if request.history is not None:
            if len(request.history) > self.history_max_len:
                raise BadRequestError(f"history: at most {self.history_max_len} ids are allowed "
                                      f"(ELMREC_HISTORY_MAX_LEN), got {len(request.history)}")
            history = self.item_indices("history", request.history)
        else:
            history = await self.history_indices(request.user_id)
        user = self.codec.find_user(request.user_id)
        extra = self.rerank_extra if request.extra is None else request.extra
        if user is None and not history:  # nothing to filter either
            pool = popular(self.bundle.config.popular_items, request.k)
            return self._answer(request.user_id, self.by_popularity(pool, request.k), "popularity")
        job = SequentialJob(user, tuple(history), request.k, extra, request.filter_history,
                            max(self.min_beam, request.k + extra))
        items = await self.sequential_batcher.submit(job)
        return self._answer(request.user_id, items, None if user is not None else "cold_start")

    # -- description -----------------------------------------------------------------------------
    def describe(self, device: str, backend: str) -> dict[str, Any]:
        config = self.bundle.config
        metrics = {k: v for k, v in self.bundle.metrics.items() if k != "training"}
        training = self.bundle.metrics.get("training")
        if isinstance(training, dict):
            metrics["training"] = {k: v for k, v in training.items() if k != "curve"}
        return {
            "model_version": config.model_version,
            "preset": config.preset,
            "model_kind": config.model.kind,
            "created": config.created,
            "protocol": {**config.protocol.model_dump(), "label": config.protocol.label},
            "dataset": config.dataset.model_dump(),
            "omega": config.omega.model_dump(),
            "rerank_n": self.rerank_extra,
            "beam": self.min_beam,
            "max_history": config.max_history,
            "device": device,
            "backend": backend,
            "metrics": metrics,
        }
