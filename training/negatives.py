"""P5's evaluation negatives (99 random non-interacted items per user), reproduced byte for byte."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.data import InteractionData

logger = logging.getLogger(__name__)

__all__ = [
    "P5_NEGATIVES",
    "P5_SEED",
    "format_negatives",
    "item_order",
    "negatives_for",
    "p5_negatives",
    "p5_negatives_text",
    "to_dense",
    "to_p5_numbers",
    "write_negatives",
]

P5_NEGATIVES = 99
P5_SEED = 2022


def item_order(sequences: Sequence[Sequence[int]]) -> list[int]:
    """The distinct items of ``sequences`` in order of first appearance (P5's ``item_count`` key order)."""
    seen: dict[int, None] = {}
    for seq in sequences:
        for item in seq:
            seen.setdefault(int(item), None)
    return list(seen)


def p5_negatives(
    sequences: Sequence[Sequence[int]],
    n: int = P5_NEGATIVES,
    seed: int = P5_SEED,
    *,
    items: Sequence[int] | None = None,
) -> list[list[int]]:
    """Sample ``n`` negatives per user exactly as P5's ``sample_test_data`` does.

    P5 (``preprocess/data_preprocess_amazon``): ``numpy.random.seed(2022)``; ``all_item`` = the
    items in order of first appearance; for each user in file order, repeat
    ``np.random.choice(all_item, n, replace=False)``, keep the drawn items that are not in the
    user's sequence, append them, and stop once ``n`` are collected (the list is cut to ``n``).
    P5 also meant to skip items already collected, but it compares numpy ints with the *strings*
    it has collected, so that test never fires: a later draw can repeat an earlier negative
    (beauty has 9 such users, sports 6, toys 15). That is reproduced here.

    The result uses the same ids as ``sequences``. Given P5's numbers it is P5's file; given
    dense indices (numbered in first-appearance order, as the loaders do) it is the same sample
    in dense indices, because only the positions in the first-appearance order matter.

    ``items`` overrides the candidate pool (default: ``item_order(sequences)``), e.g. to sample
    for the first users of a dataset only while keeping the whole dataset's pool.
    """
    items = item_order(sequences) if items is None else [int(i) for i in items]
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if n > len(items):
        raise ValueError(f"cannot draw {n} distinct items from {len(items)} items")
    pool = np.asarray(items, dtype=np.int64)
    # A private RandomState(seed) is the legacy global generator after numpy.random.seed(seed).
    rng = np.random.RandomState(seed)
    out: list[list[int]] = []
    for u, seq in enumerate(sequences):
        history = {int(i) for i in seq}
        if len(history) >= len(items):
            raise ValueError(f"user {u} has interacted with every item; no negative exists")
        picked: list[int] = []
        while len(picked) < n:
            draw = rng.choice(pool, n, replace=False).tolist()
            picked.extend(i for i in draw if i not in history)
        out.append(picked[:n])
    return out


def to_dense(negatives: Sequence[Sequence[int]], p5_item_numbers: Sequence[int]) -> list[list[int]]:
    """Map negatives written with P5's item numbers to dense item indices."""
    index = {int(num): i for i, num in enumerate(p5_item_numbers)}
    return [[index[int(x)] for x in negs] for negs in negatives]


def to_p5_numbers(negatives: Sequence[Sequence[int]], p5_item_numbers: Sequence[int]) -> list[list[int]]:
    """Map negatives in dense item indices to P5's item numbers."""
    return [[int(p5_item_numbers[i]) for i in negs] for negs in negatives]


def format_negatives(user_numbers: Sequence[int | str], negatives: Sequence[Sequence[int]]) -> str:
    """P5's ``negative_samples.txt`` text: ``user neg neg ...`` per line, space separated, LF endings."""
    if len(user_numbers) != len(negatives):
        raise ValueError(f"{len(user_numbers)} users but {len(negatives)} negative lists")
    return "".join(
        f"{user} {' '.join(map(str, negs))}\n" for user, negs in zip(user_numbers, negatives, strict=True)
    )


def write_negatives(
    path: Path, user_numbers: Sequence[int | str], negatives: Sequence[Sequence[int]]
) -> None:
    """Write :func:`format_negatives` to ``path`` (gzip level 9, mtime 0, when the name ends in .gz)."""
    data = format_negatives(user_numbers, negatives).encode("utf-8")
    path = Path(path)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    path.write_bytes(data)


def p5_negatives_text(data: InteractionData, n: int = P5_NEGATIVES, seed: int = P5_SEED) -> str:
    """Regenerate P5's ``negative_samples.txt`` for a dataset loaded from a P5 folder."""
    if data.p5_user_numbers is None or data.p5_item_numbers is None:
        raise ValueError(f"{data.name}: no P5 numbers (not loaded from a P5 folder)")
    numbers = data.p5_item_numbers
    p5_sequences = [[numbers[i] for i in seq] for seq in data.sequences]
    return format_negatives(data.p5_user_numbers, p5_negatives(p5_sequences, n, seed))


def negatives_for(data: InteractionData, n: int = P5_NEGATIVES, seed: int = P5_SEED) -> list[list[int]]:
    """Evaluation negatives in dense indices: the P5 file's when it was loaded, else P5's procedure.

    For a dataset with no more than ``n`` items, ``n`` is lowered to ``n_items - 1`` (logged).
    """
    if data.negatives is not None:
        return data.negatives
    if n >= data.n_items:
        logger.warning(
            "%s: only %d items; sampling %d negatives per user instead of %d",
            data.name,
            data.n_items,
            data.n_items - 1,
            n,
        )
        n = data.n_items - 1
    return p5_negatives(data.sequences, n, seed)
