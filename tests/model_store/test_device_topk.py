"""The shared helpers: device resolution and description, the one tie-ordered top-k."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from model_store.device import describe, resolve_device
from model_store.errors import DataError
from model_store.topk import top_k_indices, top_k_items


def test_auto_and_cpu_resolve_and_are_described() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert describe("cpu").startswith("cpu (") and describe(torch.device("cpu")).endswith("cores)")


@pytest.mark.parametrize("name", ["tpu", "cpu:0", "cuda:x", ""])
def test_bad_device_names_are_clear_errors(name: str) -> None:
    with pytest.raises(DataError, match="expected one of auto, cpu, cuda"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_cuda_without_a_gpu_is_refused() -> None:
    with pytest.raises(DataError, match="no CUDA device"):
        resolve_device("cuda")


@given(st.lists(st.sampled_from([0.0, 1.0, 2.0, -np.inf]), max_size=30), st.integers(0, 12))
def test_top_k_is_best_first_ties_by_lower_index_excluded_last(values: list[float], k: int) -> None:
    scores = np.asarray(values, dtype=np.float64)
    order = sorted(range(len(values)), key=lambda i: (-values[i], i))
    reference = [i for i in order if np.isfinite(values[i])]
    assert top_k_indices(scores, k).tolist() == reference[:k]
    with_ties = top_k_indices(scores, k, with_ties=True).tolist()
    cut = values[reference[k - 1]] if 0 < k <= len(reference) else None
    expected = [] if k == 0 else [i for i in reference if cut is None or values[i] >= cut]
    assert with_ties == expected


def test_top_k_items_orders_a_score_map() -> None:
    assert top_k_items({4: 1.0, 2: 3.0, 7: 1.0, 1: 0.5}, 3) == [(2, 3.0), (4, 1.0), (7, 1.0)]
    assert len(top_k_items({4: 1.0, 2: 3.0})) == 2
