"""Tests of model_store.omega: adjacency, random and spectral Ω, fold-in."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse.linalg import eigsh

from model_store.errors import BundleError, DataError
from model_store.omega import (
    Omega,
    filter_response,
    fold_in,
    normalized_adjacency,
    random_omega,
    spectral_omega,
)
from training.split import leave_one_out, train_edges


def random_graph(
    n_users: int = 40, n_items: int = 30, per_user: int = 5, seed: int = 1
) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Every user and item has at least one edge; a few duplicate edges are included."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        chosen = rng.choice(n_items, size=per_user, replace=False)
        users += [u] * per_user
        items += chosen.tolist()
    users += list(range(n_items))  # make sure every item is used (n_items <= n_users here)
    items += list(range(n_items))
    users += users[:7]  # duplicates
    items += items[:7]
    return n_users, n_items, np.array(users, dtype=np.int64), np.array(items, dtype=np.int64)


def clustered_graph(
    n_users: int = 200, n_items: int = 120, per_user: int = 6, blocks: int = 4, seed: int = 5
) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Users pick most items inside their block: ``blocks`` top eigenvalues stand clear of the rest."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        inside = np.arange(u % blocks, n_items, blocks)
        chosen = [*rng.choice(inside, size=per_user - 1, replace=False).tolist(), int(rng.integers(n_items))]
        users += [u] * len(chosen)
        items += chosen
    return n_users, n_items, np.array(users, dtype=np.int64), np.array(items, dtype=np.int64)


def dense_adjacency(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    a = np.zeros((n_users + n_items, n_users + n_items))
    for u, i in zip(users, items, strict=True):
        a[u, n_users + i] = a[n_users + i, u] = 1.0
    deg = a.sum(axis=1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    return np.asarray(inv[:, None] * a * inv[None, :])


# ---------------------------------------------------------------- normalized adjacency


def test_adjacency_entries_symmetry_and_duplicates() -> None:
    users = np.array([0, 0, 1, 0, 2], dtype=np.int64)  # (0, 1) given twice; item 2 isolated
    items = np.array([0, 1, 1, 1, 0], dtype=np.int64)
    a = normalized_adjacency(3, 3, users, items).toarray()
    assert a.shape == (6, 6)
    np.testing.assert_allclose(a, a.T)
    # degrees: users 0:2, 1:1, 2:1 ; items 0:2, 1:2, 2:0
    np.testing.assert_allclose(a[0, 3 + 0], 1 / np.sqrt(2 * 2))
    np.testing.assert_allclose(a[0, 3 + 1], 1 / np.sqrt(2 * 2))
    np.testing.assert_allclose(a[1, 3 + 1], 1 / np.sqrt(1 * 2))
    np.testing.assert_allclose(a[2, 3 + 0], 1 / np.sqrt(1 * 2))
    assert np.all(a[5] == 0) and np.all(a[:, 5] == 0)  # isolated item: zero row, no NaN
    assert np.all(a[:3, :3] == 0) and np.all(a[3:, 3:] == 0)  # bipartite
    assert np.isfinite(a).all()
    np.testing.assert_allclose(a, dense_adjacency(3, 3, users, items))


def test_adjacency_matches_dense_on_random_graph() -> None:
    n_users, n_items, users, items = random_graph()
    np.testing.assert_allclose(
        normalized_adjacency(n_users, n_items, users, items).toarray(),
        dense_adjacency(n_users, n_items, users, items),
        atol=1e-12,
    )


def test_held_out_interactions_are_not_edges_of_the_train_graph() -> None:
    """Real interactions held out by leave-one-out (validation and test items) are no edges of the graph
    built from the split's train edges, while the same graph over all interactions has every one of them."""
    rng = np.random.default_rng(3)
    n_users, n_items = 40, 30
    sequences = [rng.choice(n_items, size=int(rng.integers(4, 9)), replace=False).tolist()
                 for _ in range(n_users)]
    split = leave_one_out(sequences)
    train = normalized_adjacency(n_users, n_items, *train_edges(split))
    everything = normalized_adjacency(
        n_users, n_items, np.repeat(np.arange(n_users), [len(s) for s in sequences]),
        np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]),
    )
    held_out = [(u, int(i)) for held in (split.valid, split.test) for u, i in enumerate(held.tolist())]
    assert len(held_out) == 2 * n_users  # no repeats: every held-out item is new to its user
    for u, i in held_out:
        assert everything[u, n_users + i] > 0  # a real interaction: the check below can fail
        assert train[u, n_users + i] == 0 and train[n_users + i, u] == 0
    assert train.nnz == 2 * sum(len(t) for t in split.train)


@pytest.mark.parametrize(
    ("users", "items", "match"),
    [
        ([0, 3], [0, 1], "user index 3"),
        ([0, -1], [0, 1], "user index -1"),
        ([0, 1], [0, 2], "item index 2"),
        ([0, 1], [0], "differ in length"),
        ([0.0, 1.0], [0, 1], "integers"),
    ],
)
def test_adjacency_rejects_bad_indices(users: list[float], items: list[int], match: str) -> None:
    with pytest.raises(DataError, match=match):
        normalized_adjacency(3, 2, np.array(users), np.array(items))


# ---------------------------------------------------------------- random Ω


def test_random_omega_shapes_and_determinism() -> None:
    n_users, n_items, users, items = random_graph()
    a = random_omega(n_users, n_items, users, items, dim=16, sigma=0.5, seed=3)
    b = random_omega(n_users, n_items, users, items, dim=16, sigma=0.5, seed=3)
    c = random_omega(n_users, n_items, users, items, dim=16, sigma=0.5, seed=4)
    assert a.kind == "random" and a.eigenvalues is None
    assert a.users.shape == (n_users, 16) and a.items.shape == (n_items, 16)
    assert a.users.dtype == np.float32 and a.items.dtype == np.float32
    assert a.user_degree.dtype == np.int64 and a.item_degree.dtype == np.int64
    np.testing.assert_array_equal(a.users, b.users)
    np.testing.assert_array_equal(a.items, b.items)
    assert not np.allclose(a.users, c.users)
    assert a.params["seed"] == 3 and a.params["sigma"] == 0.5 and a.params["dim"] == 16


@pytest.mark.parametrize(("layers", "include_e0"), [(4, True), (4, False), (2, True), (0, True)])
def test_random_omega_is_mean_of_layers(layers: int, include_e0: bool) -> None:
    n_users, n_items, users, items = random_graph()
    sigma, dim, seed = 0.7, 8, 5
    omega = random_omega(n_users, n_items, users, items, dim, sigma, layers, seed, include_e0)
    # Same E0 as the implementation: float32 standard normal from default_rng(seed), times sigma.
    e0 = np.random.default_rng(seed).standard_normal((n_users + n_items, dim), dtype=np.float32)
    e = e0.astype(np.float64) * sigma
    a_hat = dense_adjacency(n_users, n_items, users, items)
    layers_out = [e]
    for _ in range(layers):
        layers_out.append(a_hat @ layers_out[-1])
    expected = np.mean(layers_out[0 if include_e0 else 1 :], axis=0)
    np.testing.assert_allclose(omega.users, expected[:n_users], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(omega.items, expected[n_users:], rtol=1e-4, atol=1e-5)


def test_random_omega_sigma_scales_linearly() -> None:
    n_users, n_items, users, items = random_graph()
    one = random_omega(n_users, n_items, users, items, 8, 1.0)
    three = random_omega(n_users, n_items, users, items, 8, 3.0)
    np.testing.assert_allclose(three.users, 3 * one.users, rtol=1e-5, atol=1e-6)


def test_random_omega_rejects_bad_parameters() -> None:
    n_users, n_items, users, items = random_graph()
    with pytest.raises(DataError):
        random_omega(n_users, n_items, users, items, 0, 1.0)
    with pytest.raises(DataError):
        random_omega(n_users, n_items, users, items, 8, 0.0)
    with pytest.raises(DataError):
        random_omega(n_users, n_items, users, items, 8, 1.0, layers=0, include_e0=False)
    with pytest.raises(DataError, match="item index"):
        random_omega(n_users, n_items, users, items + n_items, 8, 1.0)


# ---------------------------------------------------------------- spectral Ω


def _gap_k(eigenvalues_desc: np.ndarray, start: int) -> int:
    """A k >= start with a clear gap between eigenvalue k and k+1 (so the subspace is unique)."""
    for k in range(start, len(eigenvalues_desc) - 1):
        if eigenvalues_desc[k - 1] - eigenvalues_desc[k] > 1e-3:
            return k
    raise AssertionError("no eigen-gap found")


def test_spectral_matches_eigsh() -> None:
    n_users, n_items, users, items = random_graph()
    a_hat = normalized_adjacency(n_users, n_items, users, items)
    reference = np.sort(np.linalg.eigvalsh(a_hat.toarray()))[::-1]
    k = _gap_k(reference, 8)
    omega = spectral_omega(n_users, n_items, users, items, k=k, layers=4, sigma=1.0)
    values, vectors = eigsh(a_hat, k=k, which="LA")
    order = np.argsort(-values)
    values, vectors = values[order], vectors[:, order]
    assert omega.eigenvalues is not None
    np.testing.assert_allclose(omega.eigenvalues, values, atol=1e-8)
    np.testing.assert_allclose(omega.eigenvalues, reference[:k], atol=1e-8)
    assert np.all(np.diff(omega.eigenvalues) <= 1e-12)
    # Undo the filter and the global scale: columns must be orthonormal eigenvectors of Â.
    table = np.vstack([omega.users, omega.items]).astype(np.float64)
    h = filter_response(omega.eigenvalues, 4, True) * float(omega.params["scale"])
    basis = table / h
    np.testing.assert_allclose(basis.T @ basis, np.eye(k), atol=1e-5)
    np.testing.assert_allclose(a_hat @ basis, basis * omega.eigenvalues, atol=1e-5)
    # Same subspace as eigsh: all principal cosines are 1.
    cosines = np.linalg.svd(vectors.T @ basis, compute_uv=False)
    np.testing.assert_allclose(cosines, np.ones(k), atol=1e-5)


def test_spectral_sign_rule_scale_and_determinism() -> None:
    n_users, n_items, users, items = random_graph()
    omega = spectral_omega(n_users, n_items, users, items, k=6, sigma=0.25)
    again = spectral_omega(n_users, n_items, users, items, k=6, sigma=0.25)
    np.testing.assert_array_equal(omega.users, again.users)
    np.testing.assert_array_equal(omega.items, again.items)
    table = np.vstack([omega.users, omega.items])
    pivot = np.argmax(np.abs(table), axis=0)
    assert np.all(table[pivot, np.arange(6)] > 0)
    np.testing.assert_allclose(table.astype(np.float64).std(), 0.25, rtol=1e-5)
    assert omega.users.dtype == np.float32 and omega.users.shape == (n_users, 6)
    assert omega.items.shape == (n_items, 6)
    assert omega.kind == "spectral" and omega.params["k"] == 6


def test_spectral_filter_columns() -> None:
    n_users, n_items, users, items = random_graph()
    with_e0 = spectral_omega(n_users, n_items, users, items, k=5, layers=3, include_e0=True)
    without = spectral_omega(n_users, n_items, users, items, k=5, layers=3, include_e0=False)
    assert with_e0.eigenvalues is not None
    lam = with_e0.eigenvalues
    ratio = (filter_response(lam, 3, True) * float(with_e0.params["scale"])) / (
        filter_response(lam, 3, False) * float(without.params["scale"])
    )
    np.testing.assert_allclose(with_e0.users, without.users * ratio, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(filter_response(np.array([0.5]), 2, True), [(1 + 0.5 + 0.25) / 3])
    np.testing.assert_allclose(filter_response(np.array([0.5]), 2, False), [(0.5 + 0.25) / 2])


def test_spectral_rejects_bad_k() -> None:
    n_users, n_items, users, items = random_graph()
    with pytest.raises(DataError, match="k must be"):
        spectral_omega(n_users, n_items, users, items, k=n_items + 1)
    with pytest.raises(DataError, match="k must be"):
        spectral_omega(n_users, n_items, users, items, k=0)


def test_spectral_full_rank_path_matches_sparse_path() -> None:
    n_users, n_items, users, items = random_graph(n_users=12, n_items=8, per_user=3)
    full = spectral_omega(n_users, n_items, users, items, k=n_items)
    reference = np.sort(np.linalg.eigvalsh(normalized_adjacency(n_users, n_items, users, items).toarray()))
    assert full.eigenvalues is not None
    np.testing.assert_allclose(full.eigenvalues, reference[::-1][:n_items], atol=1e-8)


def test_spectral_randomized_solver_agrees_with_svds() -> None:
    n_users, n_items, users, items = clustered_graph()
    exact = spectral_omega(n_users, n_items, users, items, k=4)
    approx = spectral_omega(n_users, n_items, users, items, k=4, solver="randomized")
    again = spectral_omega(n_users, n_items, users, items, k=4, solver="randomized")
    assert exact.eigenvalues is not None and approx.eigenvalues is not None
    np.testing.assert_allclose(approx.eigenvalues, exact.eigenvalues, rtol=1e-6)
    # Same columns with the same (deterministically fixed) signs, hence the same table.
    np.testing.assert_allclose(approx.users, exact.users, atol=1e-4 * float(np.abs(exact.users).max()))
    np.testing.assert_allclose(approx.items, exact.items, atol=1e-4 * float(np.abs(exact.items).max()))
    np.testing.assert_array_equal(approx.users, again.users)
    table = np.vstack([approx.users, approx.items])
    assert np.all(table[np.argmax(np.abs(table), axis=0), np.arange(table.shape[1])] > 0)
    assert "solver" not in exact.params  # the default leaves stored params as they were
    assert approx.params["solver"] == "randomized" and approx.params["power_iters"] == 32


def test_spectral_randomized_power_iterations_matter() -> None:
    n_users, n_items, users, items = clustered_graph()
    exact = spectral_omega(n_users, n_items, users, items, k=4)
    rough = spectral_omega(n_users, n_items, users, items, k=4, solver="randomized", power_iters=0)
    tight = spectral_omega(n_users, n_items, users, items, k=4, solver="randomized", power_iters=32)
    assert exact.eigenvalues is not None and rough.eigenvalues is not None and tight.eigenvalues is not None
    rough_err = np.abs(rough.eigenvalues - exact.eigenvalues).max()
    tight_err = np.abs(tight.eigenvalues - exact.eigenvalues).max()
    assert rough_err > 1e-2 and tight_err < 1e-9


@pytest.mark.parametrize(("kwargs", "match"), [({"solver": "lobpcg"}, "solver must be"),
                                               ({"power_iters": -1}, "power_iters")])
def test_spectral_rejects_bad_solver(kwargs: dict[str, object], match: str) -> None:
    n_users, n_items, users, items = random_graph()
    with pytest.raises(DataError, match=match):
        spectral_omega(n_users, n_items, users, items, k=4, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- fold-in


def test_spectral_fold_in_recovers_own_row() -> None:
    n_users, n_items, users, items = random_graph()
    omega = spectral_omega(n_users, n_items, users, items, k=10)
    for u in (0, 7, 21):
        own_items = items[users == u]
        row = fold_in(omega, own_items, side="user")
        assert row.dtype == np.float32 and row.shape == (10,)
        np.testing.assert_allclose(row, omega.users[u], rtol=1e-3, atol=1e-5)
    for i in (0, 5):
        own_users = users[items == i]
        np.testing.assert_allclose(
            fold_in(omega, own_users, side="item"), omega.items[i], rtol=1e-3, atol=1e-5
        )


def test_random_fold_in_is_one_propagation_step() -> None:
    n_users, n_items, users, items = random_graph()
    omega = random_omega(n_users, n_items, users, items, 12, 1.0, seed=2)
    neighbours = np.array([3, 3, 9, 17])  # duplicate counted once
    distinct = np.array([3, 9, 17])
    deg = omega.item_degree[distinct].astype(np.float64)
    expected = (omega.items[distinct].astype(np.float64) / np.sqrt(len(distinct) * deg)[:, None]).sum(axis=0)
    np.testing.assert_allclose(fold_in(omega, neighbours, side="user"), expected, rtol=1e-5, atol=1e-6)
    # For a user of the graph, it equals (Â Ω)[u].
    a_hat = dense_adjacency(n_users, n_items, users, items)
    table = np.vstack([omega.users, omega.items]).astype(np.float64)
    u = 4
    np.testing.assert_allclose(
        fold_in(omega, items[users == u], side="user"), (a_hat @ table)[u], rtol=1e-4, atol=1e-5
    )


def test_fold_in_empty_and_bad_neighbours() -> None:
    n_users, n_items, users, items = random_graph()
    for omega in (
        random_omega(n_users, n_items, users, items, 4, 1.0),
        spectral_omega(n_users, n_items, users, items, k=4),
    ):
        np.testing.assert_array_equal(fold_in(omega, np.array([], dtype=np.int64)), np.zeros(4, np.float32))
        with pytest.raises(DataError, match="out of range"):
            fold_in(omega, np.array([0, n_items]), side="user")
        with pytest.raises(DataError, match="out of range"):
            fold_in(omega, np.array([-1]), side="item")
        with pytest.raises(DataError, match="side"):
            fold_in(omega, np.array([0]), side="both")


# ---------------------------------------------------------------- storage


@pytest.mark.parametrize("kind", ["random", "spectral"])
def test_tensors_round_trip(kind: str) -> None:
    n_users, n_items, users, items = random_graph()
    if kind == "random":
        omega = random_omega(n_users, n_items, users, items, 6, 1.0)
    else:
        omega = spectral_omega(n_users, n_items, users, items, k=6)
    tensors = omega.to_tensors()
    assert ("eigenvalues" in tensors) == (kind == "spectral")
    back = Omega.from_tensors(tensors, omega.kind, omega.params)
    np.testing.assert_array_equal(back.users, omega.users)
    np.testing.assert_array_equal(back.items, omega.items)
    np.testing.assert_array_equal(back.user_degree, omega.user_degree)
    assert back.params == omega.params and back.kind == kind
    np.testing.assert_array_equal(fold_in(back, np.array([1, 2])), fold_in(omega, np.array([1, 2])))
    np.testing.assert_array_equal(back.rows("item", np.array([2, 0])), omega.items[[2, 0]])


def test_from_tensors_rejects_corrupt() -> None:
    n_users, n_items, users, items = random_graph()
    tensors = spectral_omega(n_users, n_items, users, items, k=4).to_tensors()
    broken = dict(tensors)
    del broken["eigenvalues"]
    with pytest.raises(BundleError, match="eigenvalues"):
        Omega.from_tensors(broken, "spectral", {})
    broken = dict(tensors, items=tensors["items"][:, :3])
    with pytest.raises(BundleError):
        Omega.from_tensors(broken, "spectral", {})
    with pytest.raises(BundleError, match="kind"):
        Omega.from_tensors(tensors, "other", {})
