"""First-stage candidate retrieval by Ω inner product, and the popularity fallback."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from model_store.omega import Omega
from model_store.topk import top_k_indices


def retrieve(omega: Omega, user_row: np.ndarray, k: int, exclude: Iterable[int] = ()) -> list[int]:
    """The k items with the largest Ω_user · Ω_item, excluding `exclude`, best first (ties: lower index)."""
    scores = omega.items @ np.asarray(user_row, dtype=np.float32)
    blocked = np.fromiter(set(exclude), dtype=np.int64)
    if blocked.size:
        scores[blocked] = -np.inf
    return [int(i) for i in top_k_indices(scores, k)]


def popular(popular_items: Sequence[int], k: int, exclude: Iterable[int] = ()) -> list[int]:
    """The k most popular training items not in `exclude`."""
    seen = set(exclude)
    return [i for i in popular_items if i not in seen][:k]
