"""The item co-occurrence graph: ItemKNN's similarity, history score, storage, and the prior's mix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from safetensors.numpy import save_file

from model_store.bundle import ITEM_GRAPH, load_bundle, write_manifest
from model_store.engine import GraphPrior
from model_store.errors import BundleError
from model_store.item_graph import ItemGraph, keep_top_k

# 4 users x 5 items; item 4 is never co-consumed with anything
USERS = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3])
ITEMS = np.array([0, 1, 2, 0, 1, 1, 2, 3, 4])


def test_cosine_with_shrinkage_by_hand() -> None:
    graph = ItemGraph.build(4, 5, USERS, ITEMS, shrink=1.0)
    sim = graph.similarity.toarray()
    # items 0 and 1: users {0,1} and {0,1,2}: 2 / (√2 √3 + 1)
    assert sim[0, 1] == pytest.approx(2 / (np.sqrt(2) * np.sqrt(3) + 1), rel=1e-6)
    assert sim[1, 0] == pytest.approx(sim[0, 1])
    assert np.all(np.diag(sim) == 0) and sim[0, 3] == 0
    assert sim[3, 4] == pytest.approx(1 / 2)


def test_history_score_weights_recent_items_more() -> None:
    graph = ItemGraph.build(4, 5, USERS, ITEMS, shrink=0.0)
    sim = graph.similarity.toarray()
    scores = graph.history_scores([0, 3], decay=0.5)  # item 3 is the most recent
    assert scores == pytest.approx(0.5 * sim[0] + 1.0 * sim[3])
    assert not graph.history_scores([], decay=0.5).any()


def test_top_k_keeps_each_rows_strongest() -> None:
    dense = np.array([[0, 3, 1, 2], [1, 0, 1, 1], [0, 0, 0, 0], [5, 4, 0, 0]], dtype=np.float64)
    kept = keep_top_k(sp.csr_matrix(dense), 2).toarray()
    assert kept.tolist() == [[0, 3, 0, 2], [1, 0, 1, 0], [0, 0, 0, 0], [5, 4, 0, 0]]


def test_tensor_round_trip_and_corrupt_arrays() -> None:
    graph = ItemGraph.build(4, 5, USERS, ITEMS)
    again = ItemGraph.from_tensors(graph.to_tensors(), 5)
    assert (again.similarity != graph.similarity).nnz == 0
    bad = graph.to_tensors()
    bad["indices"] = bad["indices"] + 10
    with pytest.raises(BundleError, match="CSR"):
        ItemGraph.from_tensors(bad, 5)
    with pytest.raises(BundleError, match="CSR"):
        ItemGraph.from_tensors(graph.to_tensors(), 6)
    with pytest.raises(BundleError, match="missing"):
        ItemGraph.from_tensors({"indptr": graph.to_tensors()["indptr"]}, 5)


def test_prior_mix_moves_from_omega_to_cooccurrence(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    n = bundle.codec.n_items
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(30), 3)
    items = rng.integers(0, n, size=len(users))
    graph = ItemGraph.build(30, n, users, items)
    history = [int(items[0]), int(items[1])]
    omega_only = GraphPrior(bundle.omega)
    assert GraphPrior(bundle.omega, item_graph=graph, cooc_mix=0.0).history_scores(history) == \
        pytest.approx(omega_only.history_scores(history))
    full = GraphPrior(bundle.omega, item_graph=graph, cooc_mix=1.0, cooc_decay=0.5).history_scores(history)
    cooc = graph.history_scores(history, 0.5)
    assert np.argsort(-full, kind="stable").tolist() == np.argsort(-cooc, kind="stable").tolist()
    half = GraphPrior(bundle.omega, item_graph=graph, cooc_mix=0.5, cooc_decay=0.5).history_scores(history)
    expected = 0.5 * GraphPrior.standardised(omega_only.history_scores(history)) + \
        0.5 * GraphPrior.standardised(cooc)
    assert half == pytest.approx(expected)


def test_direct_mix_uses_the_history_cooccurrence_of_the_candidates(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    n = bundle.codec.n_items
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(40), 4)
    graph = ItemGraph.build(40, n, users, rng.integers(0, n, size=len(users)))
    row, cands, history = bundle.omega.users[0], list(range(10)), [3, 7, 11]
    prior = GraphPrior(bundle.omega, item_graph=graph, direct_cooc_mix=0.5, direct_cooc_decay=0.6)
    omega = GraphPrior.standardised(bundle.omega.items[cands] @ row)
    cooc = GraphPrior.standardised(graph.history_scores(history, 0.6)[cands])
    assert prior.direct_scores(cands, row, history) == pytest.approx(0.5 * omega + 0.5 * cooc)
    assert prior.direct_scores(cands, row, None) == pytest.approx(omega)  # no history: Ω alone
    assert prior.direct_scores(cands, row, history, mix=0.0) == pytest.approx(omega)


def _with_config(folder: Path, **prior: float) -> None:
    raw = json.loads((folder / "config.json").read_text())
    raw["graph_prior"].update(prior)
    (folder / "config.json").write_text(json.dumps(raw))


def test_bundle_item_graph_is_verified(tiny_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "b"
    shutil.copytree(tiny_bundle, folder)
    n = load_bundle(folder).codec.n_items
    _with_config(folder, cooc_mix=0.5)
    write_manifest(folder)
    with pytest.raises(BundleError, match=r"item_graph\.safetensors is missing"):
        load_bundle(folder)
    graph = ItemGraph.build(2, n, np.array([0, 0, 1]), np.array([0, 1, 1]))
    save_file(graph.to_tensors(), str(folder / ITEM_GRAPH))
    with pytest.raises(BundleError, match="not in the manifest"):
        load_bundle(folder)
    write_manifest(folder)
    loaded = load_bundle(folder)
    assert loaded.item_graph is not None and loaded.engine().prior is not None
    assert loaded.engine().prior.cooc_mix == 0.5  # type: ignore[union-attr]
