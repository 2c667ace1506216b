"""Shared fixtures: a tiny synthetic dataset, and tiny bundles trained on it once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from review_fixture import write_reviews
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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_p5_folder(tmp_path_factory.mktemp("data") / "synthetic")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    path = train(RunSpec(data=tiny_data, preset="tiny", out=out, device="cpu", epochs=3))
    assert path is not None
    return path


@pytest.fixture(scope="session")
def tiny_items_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A tiny bundle of the default model kind (one token per item, sequence-level training)."""
    out = tmp_path_factory.mktemp("bundles") / "tiny-items"
    path = train(RunSpec(data=tiny_data, preset="tiny-items", out=out, device="cpu"))
    assert path is not None
    return path


@pytest.fixture(scope="session")
def tiny_reviews(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    return write_reviews(tiny_data, tmp_path_factory.mktemp("reviews") / "reviews.jsonl")


@pytest.fixture(scope="session")
def explained_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_reviews: Path) -> Path:
    """A tiny bundle that also trained the explanation task (on the reviews of training pairs only)."""
    out = tmp_path_factory.mktemp("bundles") / "tiny-explained"
    path = train(RunSpec(data=tiny_data, preset="tiny", out=out, device="cpu", epochs=8,
                         reviews=tiny_reviews, overrides={"eval_every": 10_000}))
    assert path is not None
    return path
