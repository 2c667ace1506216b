"""Tests of training.split: leave-one-out and train edges."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.errors import DataError
from training.data import load_p5_folder
from training.split import Split, leave_one_out, train_edges

REPO = Path(__file__).resolve().parents[2]


def test_leave_one_out_small() -> None:
    sequences = [[4, 1, 2, 3], [0, 5, 6], [7, 7, 8, 9, 7]]
    split = leave_one_out(sequences)
    assert isinstance(split, Split)
    assert split.train == [[4, 1], [0], [7, 7, 8]]
    assert split.valid.tolist() == [2, 5, 9]
    assert split.test.tolist() == [3, 6, 7]
    assert split.valid.dtype == np.int64 and split.test.dtype == np.int64
    assert split.n_users == 3
    # The input is not modified and the train lists are copies.
    split.train[0].append(99)
    assert sequences[0] == [4, 1, 2, 3]


def test_leave_one_out_rejects_short_sequences() -> None:
    with pytest.raises(DataError, match=r"user index 1: 2 item\(s\)"):
        leave_one_out([[1, 2, 3], [4, 5], [6, 7, 8]])
    with pytest.raises(DataError, match="user index 0: 0 item"):
        leave_one_out([[]])


def test_train_edges() -> None:
    split = leave_one_out([[4, 1, 2, 3], [0, 5, 6], [7, 7, 8, 9, 7]])
    users, items = train_edges(split)
    assert users.dtype == np.int64 and items.dtype == np.int64
    assert users.tolist() == [0, 0, 1, 2, 2, 2]
    assert items.tolist() == [4, 1, 0, 7, 7, 8]
    # Valid and test items never enter the train edges of their user.
    for u, i in zip(users.tolist(), items.tolist(), strict=True):
        assert i in split.train[u]


def test_empty() -> None:
    split = leave_one_out([])
    users, items = train_edges(split)
    assert split.valid.shape == (0,) and users.shape == (0,) and items.shape == (0,)


def test_split_on_bundled_beauty() -> None:
    data = load_p5_folder(REPO / "data" / "beauty")
    split = leave_one_out(data.sequences)
    users, items = train_edges(split)
    # 198,502 interactions, 22,363 users: two held out per user.
    assert len(users) == 198_502 - 2 * 22_363
    assert split.valid.shape == split.test.shape == (22_363,)
    for u in (0, 5, 22_362):
        assert split.train[u] + [int(split.valid[u]), int(split.test[u])] == data.sequences[u]
    assert int(items.max()) < data.n_items and int(users.max()) == data.n_users - 1
