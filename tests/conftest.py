"""Shared fixtures: a tiny synthetic dataset, and tiny bundles trained on it once per session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from shared_paths import SHARED, shared_data_dir  # noqa: F401  (re-exported for tests)

from training.trainer import RunSpec, train

BUNDLED_BEAUTY = Path(__file__).resolve().parents[1] / "data" / "beauty"


def write_p5_folder(folder: Path, n_users: int = 40, n_items: int = 30, seed: int = 0) -> Path:
    """A small P5-style dataset with a learnable pattern (users walk consecutive item blocks)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for u in range(1, n_users + 1):
        start = int(rng.integers(1, n_items + 1))
        length = int(rng.integers(5, 9))
        seq: list[int] = []
        item = start
        while len(seq) < length:
            if item not in seq:
                seq.append(item)
            item = item % n_items + 1
        lines.append(" ".join(str(x) for x in [u, *seq]))
    (folder / "sequential_data.txt").write_text("\n".join(lines) + "\n")
    return folder


# The explanation fixture: no review text ships with the data, so each item gets the text of its block
# of ten consecutive items (the blocks users walk through), learnable from the item alone.
REVIEW_TEXTS = ("soft and gentle on my skin", "smells lovely and lasts all day",
                "too sticky, would not buy again")


def review_text(item_id: str) -> str:
    """The fixture's review of any (user, item) pair: the text of the item's block."""
    return REVIEW_TEXTS[(int(item_id) - 1) // 10 % len(REVIEW_TEXTS)]


def write_reviews(data: Path, path: Path) -> Path:
    """jsonl {user, item, text}: one review per interaction of the P5 folder (train, valid and test pairs)."""
    rows = []
    for line in (data / "sequential_data.txt").read_text().splitlines():
        user, *items = line.split()
        rows.extend({"user": user, "item": item, "text": review_text(item)} for item in items)
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_p5_folder(tmp_path_factory.mktemp("data") / "synthetic")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    return train(RunSpec(data=tiny_data, preset="tiny", out=out, device="cpu", epochs=3))


@pytest.fixture(scope="session")
def tiny_reviews(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    return write_reviews(tiny_data, tmp_path_factory.mktemp("reviews") / "reviews.jsonl")


@pytest.fixture(scope="session")
def explained_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_reviews: Path) -> Path:
    """A tiny bundle that also trained the explanation task (on the reviews of training pairs only)."""
    out = tmp_path_factory.mktemp("bundles") / "tiny-explained"
    return train(RunSpec(data=tiny_data, preset="tiny", out=out, device="cpu", epochs=8,
                         reviews=tiny_reviews, overrides={"eval_every": 10_000}))
