"""Leave-one-out split: per user, the last item is the test item and the one before it validation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model_store.errors import DataError

__all__ = ["HELD_OUT", "Split", "held_out", "leave_one_out", "train_edges"]

HELD_OUT = {"valid": 2, "test": 1}  # position from the end of the held-out item of each split


@dataclass
class Split:
    """Leave-one-out split of per-user sequences (dense indices)."""

    train: list[list[int]]  # per user, all but the last two items
    valid: np.ndarray  # (n_users,) int64, second-last item
    test: np.ndarray  # (n_users,) int64, last item

    @property
    def n_users(self) -> int:
        return len(self.train)


def leave_one_out(sequences: Sequence[Sequence[int]]) -> Split:
    """Split each time-ordered sequence into train (all but the last two), valid and test items."""
    train: list[list[int]] = []
    valid = np.empty(len(sequences), dtype=np.int64)
    test = np.empty(len(sequences), dtype=np.int64)
    for u, seq in enumerate(sequences):
        if len(seq) < 3:
            raise DataError(f"sequences, user index {u}: {len(seq)} item(s); leave-one-out needs at least 3")
        history, valid[u] = held_out(seq, "valid")
        train.append(history)
        test[u] = held_out(seq, "test")[1]
    return Split(train=train, valid=valid, test=test)


def held_out(sequence: Sequence[int], split: str) -> tuple[list[int], int]:
    """The leave-one-out cut: (history, held-out item); valid: (train part, second-last), test: (all
    but the last, last)."""
    if split not in HELD_OUT:
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    cut = HELD_OUT[split]
    return [int(i) for i in sequence[:-cut]], int(sequence[-cut])


def train_edges(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) int64 arrays with one entry per train interaction (repeats kept)."""
    lengths = np.fromiter((len(s) for s in split.train), dtype=np.int64, count=len(split.train))
    users = np.repeat(np.arange(len(split.train), dtype=np.int64), lengths)
    items = np.fromiter((i for s in split.train for i in s), dtype=np.int64, count=int(lengths.sum()))
    return users, items
