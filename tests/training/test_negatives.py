"""Tests of training.negatives: P5's negative sampling, reproduced byte for byte."""

from __future__ import annotations

import gzip
import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from shared_paths import shared_data_dir

from training.data import InteractionData, load_p5_folder
from training.negatives import (
    format_negatives,
    item_order,
    negatives_for,
    p5_negatives,
    p5_negatives_text,
    to_dense,
    to_p5_numbers,
    write_negatives,
)

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = shared_data_dir()


def _p5_reference(lines: list[str], test_num: int = 99, seed: int = 2022) -> str:
    """A transcription of P5's ``sample_test_data`` loop (global numpy state, string results)."""
    np.random.seed(seed)
    item_count: dict[int, int] = defaultdict(int)
    user_items = {}
    for line in lines:
        user, items = line.strip().split(" ", 1)
        seq = [int(item) for item in items.split(" ")]
        user_items[user] = seq
        for item in seq:
            item_count[item] += 1
    all_item = list(item_count.keys())
    out = []
    for user, user_seq in user_items.items():
        test_samples: list[str] = []
        while len(test_samples) < test_num:
            sample_ids = np.random.choice(all_item, test_num, replace=False)
            # P5 compares numpy ints with the strings already collected (never equal).
            test_samples.extend(
                str(item) for item in sample_ids if item not in user_seq and item not in test_samples
            )
        out.append(user + " " + " ".join(test_samples[:test_num]) + "\n")
    return "".join(out)


def _random_sequences(n_users: int, n_items: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [
        rng.choice(np.arange(1, n_items + 1) * 3, size=int(rng.integers(3, 40)), replace=True).tolist()
        for _ in range(n_users)
    ]


def test_matches_p5_reference_loop() -> None:
    sequences = _random_sequences(25, 130, seed=1)
    lines = [f"{u + 1} " + " ".join(map(str, s)) for u, s in enumerate(sequences)]
    ours = format_negatives(list(range(1, 26)), p5_negatives(sequences, n=99, seed=2022))
    assert ours == _p5_reference(lines)
    # Another seed and sample size.
    ours = format_negatives(list(range(1, 26)), p5_negatives(sequences, n=40, seed=7))
    assert ours == _p5_reference(lines, test_num=40, seed=7)


def test_negatives_properties_and_duplicate_quirk() -> None:
    sequences = _random_sequences(200, 120, seed=2)
    negatives = p5_negatives(sequences, n=99)
    assert len(negatives) == len(sequences)
    n_dup = 0
    for seq, negs in zip(sequences, negatives, strict=True):
        assert len(negs) == 99
        assert not set(negs) & set(seq)
        assert set(negs) <= set(item_order(sequences))
        n_dup += len(set(negs)) < len(negs)
    # Only ~120 items for 99 negatives: P5's cross-draw duplicates must show up.
    assert n_dup > 0
    assert p5_negatives(sequences, n=99) == negatives  # deterministic
    assert p5_negatives(sequences, n=99, seed=1) != negatives


def test_dense_and_p5_numbers_give_the_same_sample() -> None:
    sequences = _random_sequences(80, 300, seed=3)
    numbers = item_order(sequences)
    dense_index = {n: i for i, n in enumerate(numbers)}
    dense_sequences = [[dense_index[n] for n in s] for s in sequences]
    by_numbers = p5_negatives(sequences)
    by_dense = p5_negatives(dense_sequences)
    assert to_dense(by_numbers, numbers) == by_dense
    assert to_p5_numbers(by_dense, numbers) == by_numbers


def test_item_order() -> None:
    assert item_order([[5, 3, 5], [9, 3, 1]]) == [5, 3, 9, 1]


def test_errors() -> None:
    with pytest.raises(ValueError, match="cannot draw 5 distinct items from 4"):
        p5_negatives([[1, 2, 3], [4, 1, 2]], n=5)
    with pytest.raises(ValueError, match="every item"):
        p5_negatives([[1, 2, 3], [1, 2, 3]], n=1)
    with pytest.raises(ValueError, match="2 users but 1"):
        format_negatives([1, 2], [[3]])


def _data(sequences: list[list[int]], negatives: list[list[int]] | None = None) -> InteractionData:
    n_items = 1 + max(i for s in sequences for i in s)
    return InteractionData(
        name="t",
        user_ids=[f"u{u}" for u in range(len(sequences))],
        item_ids=[f"i{i}" for i in range(n_items)],
        sequences=sequences,
        negatives=negatives,
        p5_user_numbers=None,
        p5_item_numbers=None,
    )


def test_negatives_for() -> None:
    data = _data([[0, 1, 2], [3, 4, 5, 6]], negatives=[[3], [0]])
    assert negatives_for(data) is data.negatives
    data = _data([[0, 1, 2], [3, 4, 5, 6]])
    negs = negatives_for(data)  # 7 items < 99: n is lowered to 6
    assert [len(n) for n in negs] == [6, 6]
    assert all(not set(n) & set(s) for n, s in zip(negs, data.sequences, strict=True))
    assert negatives_for(data, n=2) == p5_negatives(data.sequences, n=2)
    with pytest.raises(ValueError, match="no P5 numbers"):
        p5_negatives_text(data)


def test_write_and_reload(tmp_path: Path) -> None:
    (tmp_path / "sequential_data.txt").write_text("7 10 11 12 13\n3 12 14 15\n5 16 10 14 17 18\n")
    data = load_p5_folder(tmp_path)
    assert data.negatives is None
    negs = p5_negatives(data.sequences, n=3)
    write_negatives(
        tmp_path / "negative_samples.txt.gz",
        data.p5_user_numbers or [],
        to_p5_numbers(negs, data.p5_item_numbers or []),
    )
    packed = (tmp_path / "negative_samples.txt.gz").read_bytes()
    assert gzip.decompress(packed).decode() == p5_negatives_text(data, n=3)
    assert packed[4:8] == b"\0\0\0\0"  # mtime 0: reproducible bytes
    reloaded = load_p5_folder(tmp_path)
    assert reloaded.negatives == negs
    assert negatives_for(reloaded) == negs


@pytest.mark.skipif(not (SHARED_DATA / "toys").is_dir(), reason=f"{SHARED_DATA}/toys is absent")
def test_toys_regenerated_byte_identical() -> None:
    # shared/data/toys/negative_samples.txt matches P5's real file (see PROVENANCE.md).
    reference = (SHARED_DATA / "toys" / "negative_samples.txt").read_bytes()
    data = load_p5_folder(SHARED_DATA / "toys")
    assert data.negatives is not None
    assert data.p5_user_numbers is not None and data.p5_item_numbers is not None
    numbers = data.p5_item_numbers
    sampled = p5_negatives([[numbers[i] for i in seq] for seq in data.sequences])
    assert format_negatives(data.p5_user_numbers, sampled).encode() == reference
    # The same sample in dense indices, as the trainer sees it.
    assert to_dense(sampled, numbers) == data.negatives
    # P5's str/int bug leaves a few duplicated negatives: 15 lines for toys (PROVENANCE.md).
    assert sum(len(set(n)) < len(n) for n in data.negatives) == 15
    for seq, negs in zip(data.sequences, data.negatives, strict=True):
        assert len(negs) == 99 and not set(negs) & set(seq)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["beauty", "sports"])
def test_beauty_sports_regenerated(name: str) -> None:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    data = load_p5_folder(folder)
    text = p5_negatives_text(data).encode()
    assert text == (folder / "negative_samples.txt").read_bytes()
    expected_md5 = {
        "beauty": "2328a44ab8551607530e133330eb7c82",
        "sports": "14b45fe8cd9188c974c0748cf3765fa5",
    }
    assert hashlib.md5(text).hexdigest() == expected_md5[name]


def test_bundled_beauty_negatives_match_shared() -> None:
    """The bundled copy (no negatives file) regenerates the shared Beauty negatives exactly."""
    folder = SHARED_DATA / "beauty"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    data = load_p5_folder(REPO / "data" / "beauty")
    assert data.p5_user_numbers is not None and data.p5_item_numbers is not None
    # The first users' draws only depend on the pool and the RNG stream so far.
    k = 2000
    head = p5_negatives(data.sequences[:k], items=range(data.n_items))
    text = format_negatives(data.p5_user_numbers[:k], to_p5_numbers(head, data.p5_item_numbers))
    with (folder / "negative_samples.txt").open() as fh:
        expected = "".join(next(fh) for _ in range(k))
    assert text == expected
