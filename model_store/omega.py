"""Graph-aware whole-word embeddings Ω: random-feature propagation (paper) and its spectral variant."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from model_store.config import OmegaConfig
from model_store.errors import BundleError, DataError

Side = Literal["user", "item"]
Solver = Literal["svds", "randomized"]
ParamValue = float | int | bool | str

# Eigenvalues below this are treated as zero by fold_in (no division by them).
_EIG_EPS = 1e-10


@dataclass
class Omega:
    """Ω rows for every user and item of the training graph, plus what fold-in needs."""

    kind: str  # "random" | "spectral"
    users: np.ndarray  # (U, k) float32
    items: np.ndarray  # (I, k) float32
    eigenvalues: np.ndarray | None  # spectral only, (k,) float64, descending
    params: dict[str, ParamValue] = field(default_factory=dict)
    user_degree: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    item_degree: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def dim(self) -> int:
        """Width k of the Ω rows."""
        return int(self.users.shape[1])

    def rows(self, side: Side, idx: np.ndarray | int) -> np.ndarray:
        """Ω rows of users (``side="user"``) or items (``side="item"``) at the dense indices ``idx``."""
        table = _table(self, side)
        index = np.asarray(idx)
        if index.size and (
            not np.issubdtype(index.dtype, np.integer) or index.min() < 0 or index.max() >= len(table)
        ):
            raise DataError(f"Ω {side} index out of range 0..{len(table) - 1}")
        return np.asarray(table[index])

    def to_tensors(self) -> dict[str, np.ndarray]:
        """Arrays to store (e.g. in a safetensors file); ``kind``/``params`` go to the metadata."""
        out: dict[str, np.ndarray] = {
            "users": np.ascontiguousarray(self.users, dtype=np.float32),
            "items": np.ascontiguousarray(self.items, dtype=np.float32),
            "user_degree": np.ascontiguousarray(self.user_degree, dtype=np.int64),
            "item_degree": np.ascontiguousarray(self.item_degree, dtype=np.int64),
        }
        if self.eigenvalues is not None:
            out["eigenvalues"] = np.ascontiguousarray(self.eigenvalues, dtype=np.float64)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], kind: str, params: dict[str, ParamValue]) -> Omega:
        """Inverse of :meth:`to_tensors`; raises BundleError on missing or inconsistent arrays."""
        if kind not in ("random", "spectral"):
            raise BundleError(f"unknown Ω kind {kind!r} (expected 'random' or 'spectral')")
        required = ["users", "items", "user_degree", "item_degree"]
        if kind == "spectral":
            required.append("eigenvalues")
        missing = [name for name in required if name not in tensors]
        if missing:
            raise BundleError(f"Ω tensors missing: {', '.join(missing)}")
        users = np.asarray(tensors["users"], dtype=np.float32)
        items = np.asarray(tensors["items"], dtype=np.float32)
        user_degree = np.asarray(tensors["user_degree"], dtype=np.int64)
        item_degree = np.asarray(tensors["item_degree"], dtype=np.int64)
        eigenvalues = np.asarray(tensors["eigenvalues"], dtype=np.float64) if kind == "spectral" else None
        if users.ndim != 2 or items.ndim != 2 or users.shape[1] != items.shape[1]:
            raise BundleError(f"Ω tables have incompatible shapes {users.shape} and {items.shape}")
        if user_degree.shape != (users.shape[0],) or item_degree.shape != (items.shape[0],):
            raise BundleError("Ω degree arrays do not match the number of users / items")
        if eigenvalues is not None and eigenvalues.shape != (users.shape[1],):
            raise BundleError(f"Ω eigenvalues shape {eigenvalues.shape} != ({users.shape[1]},)")
        return cls(kind, users, items, eigenvalues, dict(params), user_degree, item_degree)


def _table(omega: Omega, side: str) -> np.ndarray:
    if side == "user":
        return omega.users
    if side == "item":
        return omega.items
    raise DataError(f"side must be 'user' or 'item', got {side!r}")


def _check_indices(values: np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{what} indices must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{what} indices must be integers, got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise DataError(f"{what} index {bad} out of range 0..{n - 1}")
    return arr.astype(np.int64)


def _interactions(
    n_users: int, n_items: int, users: np.ndarray, items: np.ndarray
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Binary user×item matrix R (duplicates counted once) and the node degrees."""
    if n_users < 0 or n_items < 0:
        raise DataError(f"n_users and n_items must be >= 0, got {n_users}, {n_items}")
    u = _check_indices(users, n_users, "user")
    i = _check_indices(items, n_items, "item")
    if u.shape != i.shape:
        raise DataError(f"users and items differ in length ({len(u)} != {len(i)})")
    keys = np.unique(u * np.int64(max(n_items, 1)) + i)
    u_unique, i_unique = np.divmod(keys, np.int64(max(n_items, 1)))
    data = np.ones(len(keys), dtype=np.float64)
    r = sp.csr_matrix((data, (u_unique, i_unique)), shape=(n_users, n_items))
    user_degree = np.bincount(u_unique, minlength=n_users).astype(np.int64)
    item_degree = np.bincount(i_unique, minlength=n_items).astype(np.int64)
    return r, user_degree, item_degree


def _inv_sqrt(degree: np.ndarray) -> np.ndarray:
    out = np.zeros(len(degree), dtype=np.float64)
    nz = degree > 0
    out[nz] = 1.0 / np.sqrt(degree[nz])
    return out


def _normalized_biadjacency(
    n_users: int, n_items: int, users: np.ndarray, items: np.ndarray
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """D_u^-1/2 R D_i^-1/2 (users × items) and the degrees."""
    r, user_degree, item_degree = _interactions(n_users, n_items, users, items)
    rn = sp.diags(_inv_sqrt(user_degree)) @ r @ sp.diags(_inv_sqrt(item_degree))
    return sp.csr_matrix(rn), user_degree, item_degree


def normalized_adjacency(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> sp.csr_matrix:
    """(U+I)×(U+I) symmetric D^-1/2 A D^-1/2 of the bipartite graph; users first, items after.

    Duplicate (user, item) edges count once; isolated nodes get all-zero rows.
    """
    rn, _, _ = _normalized_biadjacency(n_users, n_items, users, items)
    return sp.csr_matrix(sp.bmat([[None, rn], [rn.T, None]], format="csr"))


def _check_layers(layers: int, include_e0: bool) -> int:
    if layers < 0:
        raise DataError(f"layers must be >= 0, got {layers}")
    if not include_e0 and layers < 1:
        raise DataError("include_e0=False needs layers >= 1")
    return 0 if include_e0 else 1


def _propagate(matrix: sp.csr_matrix, source: np.ndarray, accumulator: np.ndarray) -> np.ndarray:
    """matrix @ source, added in place to accumulator; returns the product."""
    out = np.asarray(matrix @ source)
    accumulator += out
    return out


def random_omega(
    n_users: int,
    n_items: int,
    users: np.ndarray,
    items: np.ndarray,
    dim: int,
    sigma: float,
    layers: int = 4,
    seed: int = 0,
    include_e0: bool = True,
) -> Omega:
    """The paper's Ω: E0 ~ N(0, σ²), E(l+1) = Â E(l), Ω = mean(E0..EL) (or mean(E1..EL)).

    E0 is drawn in float32 from ``numpy.random.default_rng(seed)``; the propagation is a sparse
    product per layer, O(L·|E|·dim).
    """
    if dim < 1:
        raise DataError(f"dim must be >= 1, got {dim}")
    if not sigma > 0:
        raise DataError(f"sigma must be > 0, got {sigma}")
    first = _check_layers(layers, include_e0)
    rn, user_degree, item_degree = _normalized_biadjacency(n_users, n_items, users, items)
    rn32 = rn.astype(np.float32)
    rn32_t = sp.csr_matrix(rn32.T)
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((n_users + n_items, dim), dtype=np.float32)
    e *= np.float32(sigma)
    eu, ei = e[:n_users], e[n_users:]
    acc_u = eu.copy() if first == 0 else np.zeros_like(eu)
    acc_i = ei.copy() if first == 0 else np.zeros_like(ei)
    # Â [eu; ei] = [Rn ei; Rnᵀ eu]: the two halves of a LightGCN layer run on two threads
    # (scipy's sparse products release the GIL); each half is computed exactly as serially.
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(layers):
            next_u = pool.submit(_propagate, rn32, ei, acc_u)
            next_i = pool.submit(_propagate, rn32_t, eu, acc_i)
            eu, ei = next_u.result(), next_i.result()
    count = np.float32(layers + 1 - first)
    acc_u /= count
    acc_i /= count
    params: dict[str, ParamValue] = {
        "dim": int(dim),
        "sigma": float(sigma),
        "layers": int(layers),
        "seed": int(seed),
        "include_e0": bool(include_e0),
    }
    return Omega(
        "random",
        np.ascontiguousarray(acc_u, dtype=np.float32),
        np.ascontiguousarray(acc_i, dtype=np.float32),
        None,
        params,
        user_degree,
        item_degree,
    )


def filter_response(eigenvalues: np.ndarray, layers: int, include_e0: bool) -> np.ndarray:
    """mean(λ^p for p = first..L) per eigenvalue, first = 0 (with E0) or 1."""
    first = _check_layers(layers, include_e0)
    lam = np.asarray(eigenvalues, dtype=np.float64)
    powers = np.stack([lam**p for p in range(first, layers + 1)])
    return np.asarray(powers.mean(axis=0))


def _fix_signs(vectors: np.ndarray) -> np.ndarray:
    """Flip each column so that its largest-|value| entry (first one on ties) is positive."""
    if vectors.shape[0] == 0:
        return vectors
    pivot = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[pivot, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return np.asarray(vectors * signs)


def spectral_omega(
    n_users: int,
    n_items: int,
    users: np.ndarray,
    items: np.ndarray,
    k: int = 64,
    layers: int = 4,
    include_e0: bool = True,
    sigma: float = 1.0,
    solver: Solver = "svds",
    power_iters: int = 32,
) -> Omega:
    """Deterministic Ω: top-k eigenvectors of Â (largest algebraic), column j × mean(λ_j^0..λ_j^L).

    Â is bipartite, so its eigenpairs with λ >= 0 come from the SVD of Rn = D_u^-1/2 R D_i^-1/2:
    eigenvalue = singular value, eigenvector = [u; v]/√2. Signs are fixed (largest-|value| entry of
    each column positive), columns sorted by eigenvalue descending, and the table is rescaled by one
    global scalar (``params["scale"]``) so that the standard deviation of its entries is ``sigma``.

    ``solver="svds"`` (default) is ARPACK, exact to its tolerance; ``solver="randomized"`` is
    scikit-learn's ``randomized_svd`` (seed 0, k oversamples, ``power_iters`` power iterations), for
    graphs too large for ARPACK: Â's spectrum decays slowly, so it needs many iterations to match
    (see docs/OMEGA.md). ``params["solver"]`` records the solver only when it is not the default.
    """
    if not sigma > 0:
        raise DataError(f"sigma must be > 0, got {sigma}")
    if solver not in ("svds", "randomized"):
        raise DataError(f"solver must be 'svds' or 'randomized', got {solver!r}")
    if power_iters < 0:
        raise DataError(f"power_iters must be >= 0, got {power_iters}")
    _check_layers(layers, include_e0)
    rn, user_degree, item_degree = _normalized_biadjacency(n_users, n_items, users, items)
    smallest = min(n_users, n_items)
    if not 1 <= k <= smallest:
        raise DataError(f"k must be in 1..{smallest} (min of n_users, n_items), got {k}")
    if k < smallest and solver == "randomized":
        from sklearn.utils.extmath import randomized_svd

        u, s, vt = randomized_svd(rn, k, n_oversamples=k, n_iter=power_iters, random_state=0)
    elif k < smallest:
        v0 = np.random.default_rng(0).uniform(0.5, 1.5, size=smallest)
        u, s, vt = svds(rn, k=k, v0=v0, solver="arpack")
    else:
        u, s, vt = np.linalg.svd(rn.toarray(), full_matrices=False)
    order = np.argsort(-s, kind="stable")[:k]
    eigenvalues = np.clip(s[order], 0.0, None)
    vectors = np.vstack([u[:, order], vt[order].T]) / np.sqrt(2.0)
    vectors = _fix_signs(vectors)
    vectors = vectors * filter_response(eigenvalues, layers, include_e0)
    std = float(vectors.std())
    scale = sigma / std if std > 0 else 1.0
    vectors *= scale
    params: dict[str, ParamValue] = {
        "k": int(k),
        "sigma": float(sigma),
        "layers": int(layers),
        "include_e0": bool(include_e0),
        "scale": float(scale),
    }
    if solver != "svds":
        params.update(solver=solver, power_iters=int(power_iters))
    return Omega(
        "spectral",
        np.ascontiguousarray(vectors[:n_users], dtype=np.float32),
        np.ascontiguousarray(vectors[n_users:], dtype=np.float32),
        eigenvalues.astype(np.float64),
        params,
        user_degree,
        item_degree,
    )


def fold_in(omega: Omega, neighbours: np.ndarray, side: str = "user") -> np.ndarray:
    """Ω row of a node absent from the training graph, from its neighbours' dense indices.

    ``side="user"``: a new user from its items; ``side="item"``: a new item from its users.
    With deg = number of distinct neighbours and deg_v the neighbour's *training* degree
    (floored at 1 for a neighbour isolated in training):

    - spectral: row = (Σ_v Ω_v / sqrt(deg·deg_v)) / λ column-wise — the eigen-equation
      λ x = Â x solved for one row, so a node already in the graph gets its own row back exactly
      (this is why deg_v is the stored degree, not deg_v + 1); columns with λ ≈ 0 are zero.
    - random: row = Σ_v Ω_v / sqrt(deg·deg_v), one propagation step of the stored rows. This
      approximates the node's Ω: it yields mean(E1..E(L+1)) where the graph node would have
      mean(E0..EL), and the node's own E0 (never drawn) is left out.

    No neighbours -> a zero row. Neighbour indices out of range -> DataError.
    """
    if side == "user":
        table, degree, other = omega.items, omega.item_degree, "item"
    elif side == "item":
        table, degree, other = omega.users, omega.user_degree, "user"
    else:
        raise DataError(f"side must be 'user' or 'item', got {side!r}")
    idx = np.unique(_check_indices(np.asarray(neighbours).reshape(-1), len(table), f"neighbour {other}"))
    if idx.size == 0:
        return np.zeros(table.shape[1], dtype=np.float32)
    weights = 1.0 / np.sqrt(float(len(idx)) * np.maximum(degree[idx], 1).astype(np.float64))
    row = weights @ table[idx].astype(np.float64)
    if omega.kind == "spectral":
        if omega.eigenvalues is None:
            raise BundleError("spectral Ω without eigenvalues")
        lam = np.asarray(omega.eigenvalues, dtype=np.float64)
        safe = np.abs(lam) > _EIG_EPS
        row = np.where(safe, row / np.where(safe, lam, 1.0), 0.0)
    elif omega.kind != "random":
        raise BundleError(f"unknown Ω kind {omega.kind!r}")
    return np.asarray(row, dtype=np.float32)


def build_omega(config: OmegaConfig, n_users: int, n_items: int, users: np.ndarray,
                items: np.ndarray) -> Omega:
    """Ω of `config` from TRAIN edges only (the caller passes the split's train edges)."""
    if config.kind == "random":
        return random_omega(n_users, n_items, users, items, dim=config.dim, sigma=config.sigma,
                            layers=config.layers, seed=config.seed, include_e0=config.include_e0)
    return spectral_omega(n_users, n_items, users, items, k=config.dim, layers=config.layers,
                          include_e0=config.include_e0, sigma=config.sigma, solver=config.solver)
