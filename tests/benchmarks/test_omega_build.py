"""The Ω build benchmark: degree-keeping lifts, peak-memory measure, limits, solver agreement, JSON output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import omega_build
from model_store.errors import DataError


def write_blocky_p5(folder: Path, n_users: int = 40, n_items: int = 24, blocks: int = 3,
                    seed: int = 0) -> Path:
    """P5 folder whose users buy inside one of ``blocks`` item groups: a few clear top eigenvalues."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    seqs, negs = [], []
    for u in range(1, n_users + 1):
        group = np.arange(1 + u % blocks, n_items + 1, blocks)
        seq = rng.choice(group, size=6, replace=False).tolist()
        seqs.append(" ".join(map(str, [u, *seq])))
        others = [i for i in range(1, n_items + 1) if i not in seq]
        negs.append(" ".join(map(str, [u, *rng.choice(others, size=5, replace=False).tolist()])))
    (folder / "sequential_data.txt").write_text("\n".join(seqs) + "\n")
    (folder / "negative_samples.txt").write_text("\n".join(negs) + "\n")
    return folder


def test_lift_keeps_every_degree_and_multiplies_edges() -> None:
    rng = np.random.default_rng(3)
    users, items = rng.integers(0, 20, 120), rng.integers(0, 15, 120)
    keys = np.unique(users * 15 + items)
    base_u, base_i = np.divmod(keys, 15)
    n_users, n_items, lu, li = omega_build.lift(20, 15, users, items, scale=4, seed=7)
    assert (n_users, n_items) == (80, 60)
    assert len(np.unique(lu * n_items + li)) == len(lu) == 4 * len(keys)  # no duplicate edge
    for lifted, base, n in ((lu, base_u, 20), (li, base_i, 15)):
        expected = np.tile(np.bincount(base, minlength=n), 4)
        np.testing.assert_array_equal(np.bincount(lifted, minlength=4 * n), expected)
    again = omega_build.lift(20, 15, users, items, scale=4, seed=7)
    other = omega_build.lift(20, 15, users, items, scale=4, seed=8)
    np.testing.assert_array_equal(again[3], li)
    assert not np.array_equal(other[3], li)  # the cross-links are random, seeded
    with pytest.raises(DataError, match="scale"):
        omega_build.lift(20, 15, users, items, scale=0)


def test_peak_measure_sees_an_allocation() -> None:
    if not omega_build._reset_peak():
        pytest.skip("/proc/self/clear_refs is not writable here")
    before = omega_build._status_kb("VmRSS")
    block = np.ones(25_000_000)  # 200 MB, touched
    grown_mb = (omega_build._status_kb("VmHWM") - before) / 1024
    del block
    assert 180 < grown_mb < 400


def test_predicted_stop_scales_linearly_in_edges() -> None:
    previous = {"graph": "small", "edges": 1000, "cpu_seconds": 10.0, "build_peak_mb": 100.0}
    assert omega_build.predicted_stop(previous, 2000, 600, 10_240) == ""
    assert "CPU s" in omega_build.predicted_stop(previous, 100_000, 600, 10_240)
    assert "GB" in omega_build.predicted_stop(previous, 50_000, 6000, 1024)
    assert omega_build.predicted_stop(None, 10**9, 1, 1) == ""


def test_memory_limit_stops_a_build_and_skips_it_on_larger_graphs(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_blocky_p5(root / "beauty")
    specs = omega_build.graph_specs(root, [], [2, 3])
    with open(tmp_path / "log", "w") as log:
        rows = omega_build.run(specs, ["svds"], k=3, dim=4, time_limit=60, memory_limit_mb=1.0, log=log)
    assert [r["graph"] for r in rows] == ["beauty-x2", "beauty-x3"]
    assert rows[0]["status"].startswith("stopped: RSS passed")
    assert rows[1]["status"].startswith("skipped: stopped") and "smaller graph" in rows[1]["status"]


def test_spectral_solvers_agree_and_random_builds(tmp_path: Path) -> None:
    """build_once in-process (the subprocess only adds isolation): eigsh and randomized match svds."""
    root = tmp_path / "data"
    write_blocky_p5(root / "beauty")
    base = {"data": str(root / "beauty"), "scale": 2, "seed": 0, "k": 3, "dim": 8, "save": str(tmp_path)}
    rows = {solver: omega_build.build_once({**base, "solver": solver}) for solver in omega_build.SOLVERS}
    for row in rows.values():
        assert row["nodes"] == 2 * (40 + 24) and row["edges"] == 2 * 40 * 4  # 6 items a user, 2 held out
        assert row["seconds"] >= 0 and row["cpu_seconds"] >= 0 and row["build_peak_mb"] >= 0
    for solver in ("eigsh", "randomized"):
        agree = omega_build.agreement(tmp_path, "svds", solver)
        assert agree["max_eigenvalue_error"] < 1e-6 and agree["subspace_overlap"] > 0.9999
    assert not (tmp_path / "random-table.npy").exists()  # only spectral tables are compared
    with pytest.raises(DataError, match="unknown solver"):
        omega_build.build_once({**base, "solver": "lanczos"})


def test_cli_writes_one_json_with_protocol(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    write_blocky_p5(root / "beauty")
    results_before = set(omega_build.RESULTS.glob("*"))
    out = tmp_path / "out"
    code = omega_build.main(["--data-root", str(root), "--datasets", "beauty", "--scales",
                             "--solvers", "svds", "--k", "3", "--json", "--out-dir", str(out)])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    files = list(out.glob("omega_build-cpu-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == result
    assert set(omega_build.RESULTS.glob("*")) == results_before
    assert result["threads"]["OMP_NUM_THREADS"] and "protocol" in result and "sklearn" in result
    (row,) = result["rows"]
    assert row["status"] == "ok" and row["solver"] == "svds" and row["edges"] == 40 * 4
    assert row["agreement_with"] == "svds" and row["subspace_overlap"] > 0.9999


@pytest.mark.parametrize(("argv", "match"), [
    (["--datasets", "nope", "--scales"], "no P5 dataset"),
    (["--datasets", "beauty", "--scales", "1"], "--scales must be >= 2"),
    (["--datasets", "--scales"], "nothing to measure"),
    (["--datasets", "beauty", "--k", "0"], "must be positive"),
])
def test_bad_arguments_exit_2_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], match: str
) -> None:
    root = tmp_path / "data"
    write_blocky_p5(root / "beauty")
    assert omega_build.main(["--data-root", str(root), *argv]) == 2
    assert match in capsys.readouterr().err


def test_plot_from_an_earlier_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"solver": s, "status": "ok", "edges": e, "cpu_seconds": e / 1e4, "build_peak_mb": e / 1e3}
            for s in ("svds", "random") for e in (1_000, 10_000)]
    rows.append({"solver": "eigsh", "status": "skipped: predicted", "edges": 10_000})
    source = tmp_path / "r.json"
    source.write_text(json.dumps({"rows": rows, "device": "cpu (2 cores)", "date": "2026-01-01"}))
    png = tmp_path / "docs" / "build.png"
    assert omega_build.main(["--from-json", str(source), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert omega_build.main(["--from-json", str(tmp_path / "missing.json"), "--plot", str(png)]) == 2
    assert omega_build.main(["--from-json", str(source)]) == 2
    assert "needs --plot" in capsys.readouterr().err
