"""Collaborative item numbering: graph neighbours share id-token prefixes; a bijection onto 1..n."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from model_store.bundle import load_bundle
from model_store.prompts import load_tokenizer, tokenize_ids
from training.id_order import graph_item_numbers, numbers_by_token_path, similarity_order
from training.trainer import RunSpec, train


def _tokenize(texts: list[str]) -> list[list[int]]:
    return tokenize_ids(load_tokenizer(), texts)


def _planted(n_clusters: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows around n_clusters random directions, shuffled; returns (rows, cluster of each row)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, 16))
    labels = rng.permutation(np.repeat(np.arange(n_clusters), size))
    return centres[labels] + 0.05 * rng.normal(size=(len(labels), 16)), labels


def test_similarity_order_is_a_permutation_keeping_clusters_nearly_contiguous() -> None:
    rows, labels = _planted(8, 32)
    rows[[3, 17]] = 0.0  # items without training edges
    order = similarity_order(rows)
    assert sorted(order.tolist()) == list(range(len(rows)))
    assert set(order[-2:].tolist()) == {3, 17}
    runs = labels[order[:-2]]
    changes = int((runs[1:] != runs[:-1]).sum())
    # 7 changes = every planted cluster one run; balanced (median) splits may cut a few clusters in two
    assert 7 <= changes <= 14
    shuffled = labels[np.random.default_rng(1).permutation(len(labels))]
    assert int((shuffled[1:] != shuffled[:-1]).sum()) > 100


def test_numbers_sharing_a_first_token_are_adjacent() -> None:
    numbers = numbers_by_token_path(list(range(1, 3000)), _tokenize)
    assert sorted(numbers.tolist()) == list(range(1, 3000))
    firsts = [path[2] for path in _tokenize([f"item_{n}" for n in numbers])]
    seen: set[int] = set()
    for previous, current in itertools.pairwise(firsts):
        if current != previous:
            assert current not in seen, "a first-token group is split in two"
            seen.add(previous)


def test_graph_numbers_give_neighbours_common_prefixes() -> None:
    rows, labels = _planted(20, 60)
    numbers = graph_item_numbers(rows, _tokenize)
    assert sorted(numbers.tolist()) == list(range(1, len(rows) + 1))
    first = {n: p[2] for n, p in zip(range(1, len(rows) + 1),
                                      _tokenize([f"item_{n}" for n in range(1, len(rows) + 1)]), strict=True)}

    def same_cluster_share(nums: np.ndarray) -> float:
        pairs = [(a, b) for a in range(len(rows)) for b in range(a + 1, len(rows)) if labels[a] == labels[b]]
        return float(np.mean([first[int(nums[a])] == first[int(nums[b])] for a, b in pairs]))

    shuffled = np.random.default_rng(0).permutation(len(rows)) + 1
    assert same_cluster_share(numbers) > 5 * same_cluster_share(shuffled)


def test_training_with_graph_ids_writes_an_honest_bundle(tiny_data: Path, tmp_path: Path) -> None:
    out = train(RunSpec(data=tiny_data, preset="tiny", out=tmp_path / "graph-ids", device="cpu",
                        id_scheme="graph", overrides={"max_steps": 4, "eval_every": 10_000}))
    bundle = load_bundle(out)
    assert bundle.codec.scheme == "graph"
    assert bundle.config.protocol.label == "honest"
    omega_items = bundle.omega.items
    expected = graph_item_numbers(omega_items, _tokenize)
    assert bundle.codec.item_numbers.tolist() == expected.tolist()
    with pytest.raises(Exception, match="id-scheme"):
        train(RunSpec(data=tiny_data, preset="tiny", out=tmp_path / "bad", device="cpu", id_scheme="sorted"))
