"""Ranking metrics: HR@k and NDCG@k from the 0-based rank of the held-out item (None = not ranked), and
the one tie rule: every other item scoring at least as high as the held-out one ranks above it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

CUTOFFS: tuple[int, ...] = (5, 10)


def hit(rank: int | None, k: int) -> float:
    return 1.0 if rank is not None and rank < k else 0.0


def ndcg(rank: int | None, k: int) -> float:
    """One relevant item: 1 / log2(rank + 2) inside the top k."""
    return 1.0 / math.log2(rank + 2) if rank is not None and rank < k else 0.0


def summarize(ranks: Sequence[int | None], cutoffs: Iterable[int] = CUTOFFS) -> dict[str, float]:
    """Mean HR@k / NDCG@k over users (each user counted once)."""
    n = max(len(ranks), 1)
    out: dict[str, float] = {}
    for k in cutoffs:
        out[f"hr@{k}"] = sum(hit(r, k) for r in ranks) / n
        out[f"ndcg@{k}"] = sum(ndcg(r, k) for r in ranks) / n
    return out


def rank_with_ties_against(scores: Mapping[int, float], positive: int) -> int:
    """0-based rank of `positive` when every other item with an equal score is ranked above it."""
    target = scores[positive]
    return sum(1 for item, s in scores.items() if item != positive and s >= target)


def rank_if_present(scores: Mapping[int, float], positive: int) -> int | None:
    """`rank_with_ties_against` when `positive` was ranked (is in `scores`), else None (a miss)."""
    return rank_with_ties_against(scores, positive) if positive in scores else None
