"""Ω baseline variants: strict names, old names keep their meaning, run_baselines records the params."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_store.errors import DataError
from model_store.omega import random_omega, spectral_omega
from training.baselines.omega import OmegaVariant, parse_omega, variant_omega
from training.baselines.runner import run_baselines


@pytest.mark.parametrize(("name", "expected"), [
    ("omega-spectral", OmegaVariant("spectral", 64, True, "svds")),
    ("omega-random", OmegaVariant("random", 512, True, "svds")),
    ("omega-spectral-k32", OmegaVariant("spectral", 32, True, "svds")),
    ("omega-spectral-k128-l1", OmegaVariant("spectral", 128, False, "svds")),
    ("omega-spectral-l1", OmegaVariant("spectral", 64, False, "svds")),
    ("omega-spectral-k64-randomized", OmegaVariant("spectral", 64, True, "randomized")),
    ("omega-random-l1", OmegaVariant("random", 512, False, "svds")),
    ("omega-random-d2048-l1", OmegaVariant("random", 2048, False, "svds")),
])
def test_names_parse(name: str, expected: OmegaVariant) -> None:
    assert parse_omega(name) == expected


@pytest.mark.parametrize("name", [
    "omega-spectral-d32", "omega-random-k32", "omega-random-randomized", "omega-spectral-k0",
    "omega-spectral-k32-l2", "omega-spectral-l1-k32", "omega-spectralk32", "omega-spectral-k032",
    "omega-spectral-k999999", "omega", "popularity", "omega-spectral-k32 ",
])
def test_malformed_names_are_rejected(name: str) -> None:
    assert parse_omega(name) is None


def test_old_names_build_the_same_omega_as_before() -> None:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 90, 600), rng.integers(0, 70, 600)
    spectral = variant_omega(OmegaVariant("spectral", 64, True), 90, 70, users, items, seed=3)
    reference = spectral_omega(90, 70, users, items, k=64)
    np.testing.assert_array_equal(spectral.users, reference.users)
    assert spectral.params == reference.params
    random = variant_omega(OmegaVariant("random", 512, True), 90, 70, users, items, seed=3)
    np.testing.assert_array_equal(random.items, random_omega(90, 70, users, items, dim=512, sigma=1.0,
                                                             seed=3).items)


def test_run_baselines_takes_variants_and_records_their_params(tiny_data: Path) -> None:
    methods = ["omega-spectral-k4", "omega-spectral-k4-l1", "omega-random-d16-l1", "omega-spectral-k500"]
    results = {r["method"]: r for r in run_baselines(tiny_data, "direct", methods=methods)}
    assert set(results) == set(methods)
    assert results["omega-spectral-k4"]["omega"]["k"] == 4
    assert results["omega-spectral-k4"]["omega"]["include_e0"] is True
    assert results["omega-spectral-k4-l1"]["omega"]["include_e0"] is False
    assert results["omega-random-d16-l1"]["omega"]["dim"] == 16
    assert results["omega-spectral-k500"]["omega"]["k"] == 30  # capped at min(users, items) = 30 items
    assert all(0 <= r["ndcg@10"] <= r["hr@10"] <= 1 for r in results.values())
    with pytest.raises(DataError, match=r"omega-spectral\[-k<K>\]"):
        run_baselines(tiny_data, "direct", methods=["omega-spectral-d8"])
