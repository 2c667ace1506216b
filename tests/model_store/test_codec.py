"""Tests of model_store.codec.IdCodec: bijections, schemes and JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_store.codec import IdCodec, UnknownIdError
from model_store.errors import BundleError, DataError

REPO = Path(__file__).resolve().parents[2]

USERS = [f"U{k}" for k in range(7)]
ITEMS = [f"B{k:05d}" for k in range(50)]


def _assert_bijective(codec: IdCodec) -> None:
    assert codec.n_users == len(codec.users) == len(set(codec.users))
    assert codec.n_items == len(codec.items) == len(set(codec.items))
    assert len(set(codec.user_numbers.tolist())) == codec.n_users
    assert len(set(codec.item_numbers.tolist())) == codec.n_items
    for u, ext in enumerate(codec.users):
        assert codec.user_index(ext) == u
        assert codec.user_from_number(codec.user_number(u)) == u
        assert codec.parse_user_token(codec.user_token(u)) == u
    for i, ext in enumerate(codec.items):
        assert codec.item_index(ext) == i
        assert codec.item_from_number(codec.item_number(i)) == i
        assert codec.parse_item_token(codec.item_token(i)) == i
        assert codec.item_token(i) == f"item_{codec.item_numbers[i]}"


def test_shuffled_scheme() -> None:
    codec = IdCodec.build(USERS, ITEMS, scheme="shuffled", seed=0)
    _assert_bijective(codec)
    assert codec.scheme == "shuffled"
    assert sorted(codec.item_numbers.tolist()) == list(range(1, 51))
    assert codec.item_numbers.tolist() != list(range(1, 51))  # not the identity
    assert codec.user_numbers.tolist() == list(range(1, 8))  # users keep file order
    assert codec.user_token(0) == "user_1"
    assert codec.item_numbers.dtype == np.int64 and codec.user_numbers.dtype == np.int64
    # Seeded: same seed, same numbers; another seed, other numbers.
    assert IdCodec.build(USERS, ITEMS, seed=0) == codec
    assert IdCodec.build(USERS, ITEMS, seed=1).item_numbers.tolist() != codec.item_numbers.tolist()
    expected = (np.random.default_rng(0).permutation(50) + 1).tolist()
    assert codec.item_numbers.tolist() == expected


def test_shuffled_keeps_p5_user_numbers() -> None:
    codec = IdCodec.build(
        USERS, ITEMS, p5_user_numbers=[10, 3, 5, 7, 9, 11, 2], p5_item_numbers=list(range(50))
    )
    assert codec.user_numbers.tolist() == [10, 3, 5, 7, 9, 11, 2]
    assert codec.item_numbers.tolist() != list(range(50))
    _assert_bijective(codec)


def test_p5_scheme() -> None:
    p5_items = [int(x) for x in np.random.default_rng(5).permutation(np.arange(100, 150))]
    p5_users = [7, 6, 5, 4, 3, 2, 1]
    codec = IdCodec.build(USERS, ITEMS, scheme="p5", p5_user_numbers=p5_users, p5_item_numbers=p5_items)
    _assert_bijective(codec)
    assert codec.item_numbers.tolist() == p5_items and codec.user_numbers.tolist() == p5_users
    assert codec.item_token(3) == f"item_{p5_items[3]}"
    assert codec.item_from_number(p5_items[10]) == 10
    # Without P5 numbers: 1..n in dense order.
    plain = IdCodec.build(USERS, ITEMS, scheme="p5")
    assert plain.item_numbers.tolist() == list(range(1, 51))
    assert plain.user_numbers.tolist() == list(range(1, 8))
    _assert_bijective(plain)


def test_unknown_ids() -> None:
    codec = IdCodec.build(USERS, ITEMS)
    with pytest.raises(UnknownIdError) as info:
        codec.item_index("nope")
    assert isinstance(info.value, KeyError) and isinstance(info.value, DataError)
    assert str(info.value) == "unknown item id 'nope'" and info.value.ids == ["nope"]
    with pytest.raises(KeyError):
        codec.user_index("B00001")
    assert codec.find_item("nope") is None and codec.find_user("U3") == 3
    indices, unknown = codec.index_of_items(["B00003", "x", "B00001", "x", "y"])
    assert indices == [3, 1] and unknown == ["x", "y"]
    assert codec.index_of_users(["U1", "U0"]) == ([1, 0], [])
    with pytest.raises(UnknownIdError):
        codec.item_from_number(0)
    with pytest.raises(UnknownIdError):
        codec.user_from_number(999)
    assert codec.parse_item_token("item_999") is None
    assert codec.parse_item_token("itm_1") is None
    assert codec.parse_item_token(" item_1 ") == codec.item_from_number(1)
    with pytest.raises(IndexError):
        codec.item_token(50)
    with pytest.raises(IndexError):
        codec.item_token(-1)


def test_invalid_construction() -> None:
    with pytest.raises(DataError, match="appears twice"):
        IdCodec.build(USERS, [*ITEMS, "B00003"])
    with pytest.raises(DataError, match="number 4 is used twice"):
        IdCodec.build(USERS, ITEMS[:3], scheme="p5", p5_item_numbers=[4, 5, 4])
    with pytest.raises(DataError, match="expected 3 numbers"):
        IdCodec.build(USERS, ITEMS[:3], scheme="p5", p5_item_numbers=[1, 2])
    with pytest.raises(ValueError, match="unknown id scheme"):
        IdCodec.build(USERS, ITEMS, scheme="random")
    with pytest.raises(ValueError, match="graph_item_numbers"):
        IdCodec.build(USERS, ITEMS, scheme="graph")


def test_graph_scheme_takes_the_given_numbers() -> None:
    numbers = list(range(len(ITEMS), 0, -1))
    codec = IdCodec.build(USERS, ITEMS, scheme="graph", graph_item_numbers=numbers)
    assert codec.item_numbers.tolist() == numbers and codec.scheme == "graph" and codec.seed is None
    again = IdCodec.from_json(json.loads(json.dumps(codec.to_json())))
    assert again == codec and again.scheme == "graph"
    with pytest.raises(DataError, match="used twice"):
        IdCodec.build(USERS, ITEMS, scheme="graph", graph_item_numbers=[1] * len(ITEMS))


@pytest.mark.parametrize("scheme", ["shuffled", "p5"])
def test_json_round_trip(scheme: str) -> None:
    codec = IdCodec.build(USERS, ITEMS, scheme=scheme, seed=3)
    doc = json.loads(json.dumps(codec.to_json()))  # plain JSON types only
    again = IdCodec.from_json(doc)
    assert again == codec
    assert again.scheme == scheme
    assert again.item_numbers.tolist() == codec.item_numbers.tolist()
    assert again.users == codec.users and again.items == codec.items
    _assert_bijective(again)


def test_from_json_rejects_corrupt_documents() -> None:
    good = IdCodec.build(USERS, ITEMS).to_json()
    bad: object
    for bad in (
        [],
        {**good, "format": "other"},
        {**good, "version": 99},
        {k: v for k, v in good.items() if k != "items"},
        {**good, "item_numbers": good["item_numbers"][:-1]},
        {**good, "item_numbers": [1] * len(ITEMS)},
        {**good, "item_numbers": [str(n) for n in good["item_numbers"]]},
        {**good, "users": "U0"},
        {**good, "scheme": "nope"},
    ):
        with pytest.raises(BundleError):
            IdCodec.from_json(bad)


def test_codec_for_bundled_beauty() -> None:
    from training.data import load_p5_folder

    data = load_p5_folder(REPO / "data" / "beauty")
    shuffled = IdCodec.build(
        data.user_ids,
        data.item_ids,
        p5_user_numbers=data.p5_user_numbers,
        p5_item_numbers=data.p5_item_numbers,
    )
    p5 = IdCodec.build(
        data.user_ids,
        data.item_ids,
        scheme="p5",
        p5_user_numbers=data.p5_user_numbers,
        p5_item_numbers=data.p5_item_numbers,
    )
    assert shuffled.n_items == p5.n_items == 12_101 and shuffled.n_users == 22_363
    assert sorted(shuffled.item_numbers.tolist()) == list(range(1, 12_102))
    # P5's numbers leak first-appearance order; the shuffled numbers must not reproduce them.
    agree = int(np.sum(shuffled.item_numbers == p5.item_numbers))
    assert agree < 20
    assert IdCodec.from_json(json.loads(json.dumps(shuffled.to_json()))) == shuffled
