"""The one tie-ordered top-k: best score first, equal scores by the lower dense index (deterministic)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def top_k_indices(scores: np.ndarray, k: int, with_ties: bool = False) -> np.ndarray:
    """Indices of the k best finite scores (-inf marks an excluded item), best first; ties: lower index.

    `with_ties`: also every further item tied with the k-th (so a tie rule can see them all)."""
    values = np.asarray(scores)
    finite = np.flatnonzero(np.isfinite(values))
    k = max(0, min(k, finite.size))
    if k == 0:
        return np.empty(0, dtype=np.int64)
    if k < finite.size:
        kth = np.partition(values[finite], finite.size - k)[finite.size - k]  # the k-th largest score
        finite = finite[values[finite] >= kth]  # every item tied with it stays in the race
    order = np.lexsort((finite, -values[finite]))
    return finite[order if with_ties else order[:k]].astype(np.int64)


def top_k_items(scores: Mapping[int, float], k: int | None = None) -> list[tuple[int, float]]:
    """(item, score) pairs of a score map, best first; ties: lower item first; all when k is None."""
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked if k is None else ranked[:k]
