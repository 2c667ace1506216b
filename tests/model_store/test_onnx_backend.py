"""The ONNX Runtime backend (CPU provider) ranks like the torch engine; exports are checked and cached.

The graphs are exported once for this module (about 20-60 s on 2 cores, the dynamo exporter's own
cost) into a copy of the tiny bundle; every other test reuses them or fakes the export.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from benchmarks import engine as engine_bench
from model_store import onnx_backend
from model_store.bundle import MANIFEST, Bundle, load_bundle
from model_store.engine import InferenceEngine, Scored
from model_store.omega import fold_in
from model_store.onnx_backend import (
    GRAPHS,
    STAMP,
    OnnxBackendError,
    OnnxRunner,
    fingerprint,
    graph_folder,
    is_current,
    missing_onnx,
)

pytestmark = pytest.mark.skipif(
    missing_onnx() is not None, reason=f"the ONNX backend tests need the onnx extra ({missing_onnx()})"
)
TOLERANCE = 1e-4  # float32 torch vs ONNX Runtime kernels; measured differences are about 1e-6

Engines = tuple[Bundle, InferenceEngine, InferenceEngine]


@pytest.fixture(scope="module")
def onnx_bundle(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny bundle (the session's bundle stays untouched); graphs go to `<copy>/onnx`."""
    copy = tmp_path_factory.mktemp("onnx") / "tiny"
    shutil.copytree(tiny_bundle, copy)
    return copy


@pytest.fixture(scope="module")
def engines(onnx_bundle: Path) -> Engines:
    bundle = load_bundle(onnx_bundle)
    return bundle, bundle.engine("cpu"), bundle.engine("cpu", backend="onnx")


def _ranked(scores: dict[int, float]) -> list[Scored]:
    return [Scored(i, s) for i, s in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def _assert_same(want: list[Scored], got: list[Scored]) -> None:
    assert [s.item for s in got] == [s.item for s in want]
    assert max(abs(a.score - b.score) for a, b in zip(want, got, strict=True)) < TOLERANCE


def test_direct_ranks_like_torch(engines: Engines) -> None:
    bundle, torch_engine, onnx_engine = engines
    assert isinstance(onnx_engine.runner, OnnxRunner)  # really ONNX Runtime, not the torch fallback
    users: list[int | None] = [0, 1, 2, 3, 4, None]
    candidates = [[*bundle.data.negatives[u][: 3 + 4 * u], bundle.data.sequences[u][-1]] for u in range(5)]
    candidates.append([1, 2, 3, 4, 5])
    cold = fold_in(bundle.omega, np.asarray(bundle.data.sequences[7][:3]), side="user")
    rows = [None] * 5 + [cold]
    want = torch_engine.score_direct(users, candidates, rows)  # one padded batch, a cold-start user
    got = onnx_engine.score_direct(users, candidates, rows)
    for w, g in zip(want, got, strict=True):
        _assert_same(_ranked(w), _ranked(g))


def test_beam_search_ranks_like_torch(engines: Engines) -> None:
    bundle, torch_engine, onnx_engine = engines
    users = [0, 1, 2, 3, 4, 5]
    histories = [bundle.data.sequences[u][:-1] for u in users]
    for beam in (5, bundle.codec.n_items):  # a pruned beam, and one covering every item (exact)
        want = torch_engine.beam_sequential(users, histories, beam, pure=True)
        got = onnx_engine.beam_sequential(users, histories, beam, pure=True)
        for w, g in zip(want, got, strict=True):
            assert len(g) == min(beam, bundle.codec.n_items)
            _assert_same(w, g)
    want = torch_engine.recommend_sequential(users, histories, k=3, extra=5)
    got = onnx_engine.recommend_sequential(users, histories, k=3, extra=5)
    for w, g in zip(want, got, strict=True):
        _assert_same(w, g)


def test_graphs_are_cached_beside_the_bundle(
    onnx_bundle: Path, engines: Engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = onnx_bundle / "onnx"
    assert json.loads((folder / STAMP).read_text()) == fingerprint(onnx_bundle)
    assert sorted(p.name for p in folder.glob("*.onnx")) == sorted(f"{g}.onnx" for g in GRAPHS)
    lines = [line.split("  ", 1) for line in (folder / MANIFEST).read_text().splitlines()]
    listed = {name: digest for digest, name in lines}
    assert sorted(listed) == sorted([*(f"{g}.onnx" for g in GRAPHS), STAMP])
    for name, digest in listed.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    # The bundle's own manifest does not cover its ONNX cache (derived, verified by its own manifest).
    assert "onnx/" not in (onnx_bundle / MANIFEST).read_text()

    def no_export(*args: Any) -> None:
        raise AssertionError("a current export must be reused, not redone")

    monkeypatch.setattr(onnx_backend, "export_graphs", no_export)
    again = load_bundle(onnx_bundle).engine("cpu", backend="onnx")
    assert isinstance(again.runner, OnnxRunner)


def test_a_tampered_or_damaged_graph_is_refused(onnx_bundle: Path, engines: Engines, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(onnx_bundle, tampered)
    cache = tampered / "onnx"
    # A valid ONNX graph, but not this one: ONNX Runtime would load it; the cache's manifest refuses it.
    shutil.copy(cache / "encoder_sequential.onnx", cache / "encoder_direct.onnx")
    with pytest.raises(OnnxBackendError, match=r"refusing the ONNX graph cache: .*encoder_direct\.onnx is "
                                               r"corrupt \(sha256 differs from the manifest\).*delete"):
        load_bundle(tampered).engine("cpu", backend="onnx")
    graph = cache / "decoder.onnx"
    shutil.copytree(onnx_bundle / "onnx", cache, dirs_exist_ok=True)
    graph.write_bytes(graph.read_bytes()[:1000])  # truncated; the stamp still says current
    with pytest.raises(OnnxBackendError, match=r"decoder\.onnx is corrupt"):
        load_bundle(tampered).engine("cpu", backend="onnx")
    shutil.copytree(onnx_bundle / "onnx", cache, dirs_exist_ok=True)
    (cache / MANIFEST).unlink()  # a current stamp alone does not vouch for the graphs
    with pytest.raises(OnnxBackendError, match=r"not a verified ONNX graph cache \(MANIFEST\.sha256 is"):
        load_bundle(tampered).engine("cpu", backend="onnx")


def test_a_graph_the_manifest_vouches_for_but_onnx_runtime_cannot_load_is_named(
    onnx_bundle: Path, engines: Engines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    monkeypatch.setattr(onnx_backend, "export_graphs", _fake_export(calls))
    bundle_dir = tmp_path / "fake"
    shutil.copytree(onnx_bundle, bundle_dir, ignore=shutil.ignore_patterns("onnx"))
    with pytest.raises(OnnxBackendError, match=r"encoder_direct\.onnx: ONNX Runtime cannot load it .*delete"):
        load_bundle(bundle_dir).engine("cpu", backend="onnx")
    assert len(calls) == 1


def test_unlisted_files_in_the_cache_are_reported_not_read(
    onnx_bundle: Path, engines: Engines, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    extra = tmp_path / "extra"
    shutil.copytree(onnx_bundle, extra)
    (extra / "onnx" / "notes.txt").write_text("left by an operator")
    with caplog.at_level(logging.WARNING, logger="model_store.bundle"):
        assert graph_folder(extra, engines[0].build_model()) == extra / "onnx"
    warned = [r.getMessage() for r in caplog.records if "not in the manifest" in r.getMessage()]
    assert len(warned) == 1 and "notes.txt" in warned[0] and str(extra / "onnx") in warned[0]


def _fake_export(calls: list[Path]) -> Any:
    def export(model: Any, folder: Path) -> None:
        calls.append(folder)
        for name in GRAPHS:
            (folder / f"{name}.onnx").write_bytes(b"fake")

    return export


def test_changed_bundle_is_exported_again(
    onnx_bundle: Path, engines: Engines, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(onnx_bundle, changed)
    model = load_bundle(changed).build_model()
    calls: list[Path] = []
    monkeypatch.setattr(onnx_backend, "export_graphs", _fake_export(calls))
    assert graph_folder(changed, model) == changed / "onnx" and calls == []  # current: reused
    with (changed / "MANIFEST.sha256").open("a") as fh:  # stands for a retrained bundle
        fh.write("\n")
    assert not is_current(changed / "onnx", fingerprint(changed))
    assert graph_folder(changed, model) == changed / "onnx" and len(calls) == 1
    assert is_current(changed / "onnx", fingerprint(changed))
    assert (changed / "onnx" / "decoder.onnx").read_bytes() == b"fake"
    assert not list(changed.glob(".onnx.*"))  # no scratch folder left behind


def test_read_only_bundle_uses_the_user_cache(
    onnx_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle_dir = tmp_path / "readonly"
    shutil.copytree(onnx_bundle, bundle_dir, ignore=shutil.ignore_patterns("onnx"))
    before = sorted(bundle_dir.rglob("*"))
    real_mkdtemp = onnx_backend.tempfile.mkdtemp

    def mkdtemp(prefix: str, dir: Path) -> str:  # what a read-only mount answers (root ignores chmod)
        if Path(dir) == bundle_dir:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_mkdtemp(prefix=prefix, dir=dir)

    monkeypatch.setattr(onnx_backend.tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls: list[Path] = []
    monkeypatch.setattr(onnx_backend, "export_graphs", _fake_export(calls))
    folder = graph_folder(bundle_dir, load_bundle(bundle_dir).build_model())
    assert folder.parent == tmp_path / "cache" / "elmrec" / "onnx" and len(calls) == 1
    assert is_current(folder, fingerprint(bundle_dir))
    assert sorted(bundle_dir.rglob("*")) == before

    with pytest.raises(OnnxBackendError, match=r"no writable folder.*Read-only file system"):
        graph_folder(bundle_dir, load_bundle(bundle_dir).build_model(), cache_dir=bundle_dir / "onnx")


class Drifting(torch.nn.Module):
    """Adds a Python counter: the exporter bakes the traced value in, so the graph disagrees with torch."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Drifting.calls += 1
        return x + float(Drifting.calls)


def test_an_export_that_disagrees_with_torch_is_refused(tmp_path: Path) -> None:
    n = torch.export.Dim("n")
    with pytest.raises(OnnxBackendError, match="output y differs from torch"):
        onnx_backend._export_one(Drifting(), tmp_path / "drift.onnx", ["x"], ["y"], ({0: n},),
                                 (torch.ones(3),), (torch.ones(5),))


def test_missing_packages_and_unknown_backend_are_named(
    engines: Engines, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = engines[0]
    with pytest.raises(ValueError, match="backend 'tensorflow': expected 'torch' or 'onnx'"):
        bundle.engine("cpu", backend="tensorflow")
    real = onnx_backend.importlib.util.find_spec
    monkeypatch.setattr(onnx_backend.importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnxruntime" else real(name, *args))
    with pytest.raises(OnnxBackendError, match=r"onnxruntime not installed: pip install -e '\.\[onnx\]'"):
        bundle.engine("cpu", backend="onnx")


def test_cuda_needs_the_gpu_build_of_onnxruntime() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        first = onnx_backend.providers(torch.device("cuda:1"))[0]
        assert first == ("CUDAExecutionProvider", {"device_id": 1})
        return
    assert onnx_backend.providers(torch.device("cpu")) == ["CPUExecutionProvider"]
    with pytest.raises(OnnxBackendError, match=r"no CUDAExecutionProvider.*onnx-gpu"):
        onnx_backend.providers(torch.device("cuda"))


def test_engine_benchmark_times_onnx_beside_torch(
    onnx_bundle: Path, engines: Engines, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "results"
    code = engine_bench.main([
        "--bundle", str(onnx_bundle), "--users", "2", "--warmup", "1", "--batch-users", "2",
        "--batched-users", "2", "--backend", "onnx", "--json", "--out-dir", str(out_dir),
    ])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["backend"] == "onnx" and result["onnx_providers"] == ["CPUExecutionProvider"]
    assert result["onnx_identical_to_torch_fraction"] == 1.0
    assert result["onnx_max_score_diff_vs_torch"] < TOLERANCE
    assert result["onnx_direct_ms_per_user"] > 0 and result["onnx_sequential_ms_per_user"] > 0
    assert result["onnxruntime"] and result["torch"] == torch.__version__
    files = list(out_dir.glob("engine-onnx-cpu-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == result


def test_service_answers_the_same_with_the_onnx_backend(onnx_bundle: Path, engines: Engines) -> None:
    from service.app import create_app
    from service.settings import Settings

    bundle = engines[0]
    user = bundle.codec.users[3]
    candidates = [bundle.codec.items[i] for i in bundle.data.negatives[3][:8]]
    answers: dict[str, list[list[tuple[str, float]]]] = {}
    for backend in ("torch", "onnx"):
        settings = Settings.model_validate({"MODEL_DIR": onnx_bundle, "DEVICE": "cpu", "BACKEND": backend,
                                            "LOG_LEVEL": "WARNING"})
        with TestClient(create_app(settings)) as client:
            assert client.get("/model").json()["backend"] == backend
            direct = client.post("/recommend/direct", json={"user_id": user, "candidates": candidates,
                                                            "k": 5})
            seq = client.post("/recommend/sequential", json={"user_id": user, "k": 5})
            assert direct.status_code == 200 and seq.status_code == 200
            answers[backend] = [[(x["item_id"], x["score"]) for x in r.json()["items"]]
                                for r in (direct, seq)]
    for want, got in zip(answers["torch"], answers["onnx"], strict=True):
        assert [i for i, _ in got] == [i for i, _ in want] and len(got) == 5
        assert max(abs(a - b) for (_, a), (_, b) in zip(want, got, strict=True)) < TOLERANCE
