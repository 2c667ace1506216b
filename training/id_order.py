"""Collaborative item numbering: items close in the training graph get numbers sharing id-token prefixes.

With shuffled numbers the first token of an item's id (`item_58|31`) groups unrelated items, so the T5
must memorise every id; here it names a cluster of graph neighbours, so one decoding step already picks
a neighbourhood (Hua et al., "How to Index Item IDs for Recommendation Foundation Models", 2023,
collaborative indexing). Built from TRAINING interactions only (the Ω item rows), so it leaks nothing
the graph does not already hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

LEAF = 4  # subsets this small are ordered along their own principal direction without splitting


def similarity_order(rows: np.ndarray) -> np.ndarray:
    """A permutation of the rows in which neighbours are similar: a median-split principal-axis tree.

    Rows are L2-normalised (cosine geometry); all-zero rows (items without training edges) go last.
    Each subset is split at the median of its projection on its top principal direction, left half
    first, recursively, so every contiguous run of the order is a compact region of the row space.
    """
    norms = np.linalg.norm(rows, axis=1)
    known = np.flatnonzero(norms > 0)
    unit = rows[known] / norms[known, None]
    out: list[np.ndarray] = []
    stack: list[np.ndarray] = [np.arange(len(known))]
    while stack:  # explicit stack, depth-first, left before right: no recursion limit
        idx = stack.pop()
        sub = unit[idx]
        centred = sub - sub.mean(axis=0)
        if len(idx) <= 1 or not np.any(centred):
            out.append(idx)
            continue
        axis = np.linalg.svd(centred, full_matrices=False)[2][0]
        projection = centred @ axis
        ranked = idx[np.argsort(projection, kind="stable")]
        if len(idx) <= LEAF:
            out.append(ranked)
            continue
        half = len(ranked) // 2
        stack.append(ranked[half:])
        stack.append(ranked[:half])
    order = known[np.concatenate(out)] if out else known
    return np.concatenate([order, np.flatnonzero(norms <= 0)]).astype(np.int64)


def numbers_by_token_path(numbers: Sequence[int], tokenize: Callable[[list[str]], list[list[int]]]
                          ) -> np.ndarray:
    """The numbers sorted by the token sequence of `item_<n>`: numbers sharing a first token are adjacent."""
    paths = tokenize([f"item_{n}" for n in numbers])
    keyed = sorted(zip(paths, numbers, strict=True), key=lambda pair: (pair[0], pair[1]))
    return np.asarray([n for _, n in keyed], dtype=np.int64)


def graph_item_numbers(item_rows: np.ndarray, tokenize: Callable[[list[str]], list[list[int]]]
                       ) -> np.ndarray:
    """Numbers 1..n for the n items (dense order): the i-th item of the similarity order gets the
    i-th number in token-path order, so graph neighbours share id-token prefixes."""
    n = len(item_rows)
    order = similarity_order(np.asarray(item_rows, dtype=np.float64))
    numbers = numbers_by_token_path(list(range(1, n + 1)), tokenize)
    out = np.empty(n, dtype=np.int64)
    out[order] = numbers
    return out
