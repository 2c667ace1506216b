"""Rank direct-recommendation candidates by Ω_user · Ω_item alone (no T5) on a P5 dataset folder."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_store.errors import DataError
from model_store.omega import Omega, random_omega, spectral_omega
from training.split import leave_one_out, train_edges


@dataclass
class Beauty:
    """Just what this benchmark needs of a P5 folder, in dense indices."""

    n_users: int
    n_items: int
    train_users: np.ndarray  # (E,) int64, training edges
    train_items: np.ndarray  # (E,) int64
    test: np.ndarray  # (U,) last item of each user
    negatives: np.ndarray  # (U, n_neg) int64


def load_p5(folder: Path) -> Beauty:
    """Read sequential_data.txt and negative_samples.txt; leave-one-out split, train edges only."""
    seq_path, neg_path = folder / "sequential_data.txt", folder / "negative_samples.txt"
    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {}
    sequences: list[list[int]] = []
    with seq_path.open() as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 4:
                raise DataError(f"{seq_path}:{line_no}: need a user and at least 3 items")
            if fields[0] in user_index:
                raise DataError(f"{seq_path}:{line_no}: user {fields[0]} repeated")
            user_index[fields[0]] = len(sequences)
            sequences.append([item_index.setdefault(tok, len(item_index)) for tok in fields[1:]])
    negatives: list[list[int] | None] = [None] * len(sequences)
    with neg_path.open() as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            user = user_index.get(fields[0])
            if user is None:
                raise DataError(f"{neg_path}:{line_no}: unknown user {fields[0]}")
            try:
                negatives[user] = [item_index[tok] for tok in fields[1:]]
            except KeyError as exc:
                raise DataError(f"{neg_path}:{line_no}: unknown item {exc.args[0]}") from None
    if any(n is None for n in negatives) or len({len(n or []) for n in negatives}) != 1:
        raise DataError(f"{neg_path}: every user needs the same number of negatives")
    split = leave_one_out(sequences)
    train_users, train_items = train_edges(split)
    return Beauty(
        n_users=len(sequences),
        n_items=len(item_index),
        train_users=train_users,
        train_items=train_items,
        test=split.test,
        negatives=np.array(negatives, dtype=np.int64),
    )


def hr_ndcg(scores: np.ndarray, k: int = 10) -> tuple[float, float]:
    """scores[:, 0] is the positive; ties count as ranked above it. Returns (HR@k, NDCG@k)."""
    rank = (scores[:, 1:] >= scores[:, :1]).sum(axis=1)  # 0-based rank of the positive
    hit = rank < k
    return float(hit.mean()), float(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0).mean())


def candidates(data: Beauty) -> np.ndarray:
    return np.concatenate([data.test[:, None], data.negatives], axis=1)


def omega_scores(omega: Omega, cand: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Ω_user · Ω_item for every (user, candidate), in float64, a block of users at a time."""
    items_t = omega.items.astype(np.float64).T
    out = np.empty(cand.shape, dtype=np.float64)
    for start in range(0, len(cand), chunk):
        block = omega.users[start : start + chunk].astype(np.float64) @ items_t
        out[start : start + chunk] = np.take_along_axis(block, cand[start : start + chunk], axis=1)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/beauty"))
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--ks", type=int, nargs="+", default=[32, 64, 128, 256])
    args = parser.parse_args(argv)

    data = load_p5(args.data)
    cand = candidates(data)
    print(
        f"{args.data.name}: {data.n_users} users, {data.n_items} items, {len(data.train_users)} train edges"
    )

    def build(kind: str, size: int, include_e0: bool) -> Omega:
        edges = (data.n_users, data.n_items, data.train_users, data.train_items)
        if kind == "random":
            return random_omega(*edges, dim=size, sigma=1.0, layers=4, seed=0, include_e0=include_e0)
        return spectral_omega(*edges, k=size, layers=4, include_e0=include_e0)

    configs = [("random", args.dim, e0) for e0 in (True, False)]
    configs += [("spectral", k, e0) for k in args.ks for e0 in (True, False)]
    popularity = np.bincount(data.train_items, minlength=data.n_items).astype(np.float64)
    hr, ndcg = hr_ndcg(popularity[cand])
    rows: list[tuple[str, float, float, str]] = [("popularity (train count)", hr, ndcg, "-")]
    for kind, size, e0 in configs:
        start = time.perf_counter()
        omega = build(kind, size, e0)
        seconds = time.perf_counter() - start
        hr, ndcg = hr_ndcg(omega_scores(omega, cand))
        name = f"{kind} {'d' if kind == 'random' else 'k'}={size} layers {0 if e0 else 1}..4"
        rows.append((name, hr, ndcg, f"{seconds:.2f}"))
    print(f"{'score':<32} {'HR@10':>7} {'NDCG@10':>8} {'build s':>8}")
    for name, hr, ndcg, build_s in rows:
        print(f"{name:<32} {hr:7.4f} {ndcg:8.4f} {build_s:>8}")


if __name__ == "__main__":
    main()
