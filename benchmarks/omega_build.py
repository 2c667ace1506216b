"""Time and peak memory of building Ω per kind/solver, on the P5 datasets and on synthetic lifts of Beauty.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m benchmarks.omega_build --json \\
        [--datasets beauty sports toys] [--scales 10 100] [--solvers eigsh svds randomized random]
        [--plot docs/omega_build.png]
    python -m benchmarks.omega_build --from-json benchmarks/results/omega_build-cpu-<date>.json \\
        --plot docs/omega_build.png

Every build runs in a fresh subprocess that first loads (or generates) its graph, resets its peak-RSS mark
(``/proc/self/clear_refs`` = 5) and then builds Ω from the training edge arrays; the build's memory is that
process's VmHWM after the build minus its VmRSS before it. Graphs run from fewest edges up; the parent kills a
build past the memory limit or the CPU-time limit, skips a solver on larger graphs once it was stopped, and
skips a build whose time or memory, scaled linearly in edges from the solver's last run, passes a limit.
Solvers:
``eigsh`` (ARPACK on the (U+I)² symmetric Â), ``svds`` (ARPACK on the U×I normalised R, the library's
default), ``randomized`` (scikit-learn's randomized SVD of the same matrix) and ``random`` (the paper's
random-feature propagation, d = --dim, layers 0..4). Spectral solvers are compared on each graph: eigenvalue
error and subspace overlap ‖Q_refᵀQ‖²_F / k (1 = same top-k space) against the exact reference that ran.
Synthetic graphs are random s-lifts of Beauty's training graph: s copies of every user and item, base
edge (u, i) becomes (u_c, i_π(c)) for a random permutation π per edge, so every copy keeps its node's
degree exactly (edges × s, nodes × s, seeded).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_store.device import describe
from model_store.errors import DataError

RESULTS = Path(__file__).parent / "results"
SOLVERS = ("eigsh", "svds", "randomized", "random")
SPECTRAL = ("eigsh", "svds", "randomized")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ---------------------------------------------------------------- graphs


def lift(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray, scale: int,
         seed: int = 0) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Random ``scale``-lift of a bipartite graph (duplicates dropped first): degrees kept per copy."""
    if scale < 1:
        raise DataError(f"scale must be >= 1, got {scale}")
    keys = np.unique(np.asarray(users, dtype=np.int64) * max(n_items, 1) + np.asarray(items, dtype=np.int64))
    base_u, base_i = np.divmod(keys, max(n_items, 1))
    copies = np.arange(scale, dtype=np.int64)
    perm = np.random.default_rng(seed).permuted(np.tile(copies, (len(keys), 1)), axis=1)
    new_users = (copies[None, :] * n_users + base_u[:, None]).ravel()
    new_items = (perm * n_items + base_i[:, None]).ravel()
    return n_users * scale, n_items * scale, new_users, new_items


def load_graph(spec: dict[str, Any]) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Training edges of a P5 folder (leave-one-out), lifted ``spec["scale"]`` times when > 1."""
    from benchmarks.omega_alone import load_p5

    data = load_p5(Path(spec["data"]))
    graph = (data.n_users, data.n_items, data.train_users, data.train_items)
    scale = int(spec.get("scale", 1))
    return lift(*graph, scale=scale, seed=int(spec.get("seed", 0))) if scale > 1 else graph


# ---------------------------------------------------------------- one build (child process)


def _status_kb(field: str, pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/{pid}/status has no {field}")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def eigsh_vectors(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (largest algebraic) eigenpairs of Â by ARPACK on the full symmetric matrix, λ descending."""
    from scipy.sparse.linalg import eigsh

    from model_store.omega import normalized_adjacency

    a = normalized_adjacency(n_users, n_items, users, items)
    v0 = np.random.default_rng(0).uniform(0.5, 1.5, size=a.shape[0])
    lam, vec = eigsh(a, k=k, which="LA", v0=v0)
    order = np.argsort(-lam, kind="stable")
    return lam[order], vec[:, order]


def eigsh_omega(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray, k: int,
                layers: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Spectral Ω through eigsh on Â: same sign rule, filter and unit-std scaling as spectral_omega."""
    from model_store.omega import _fix_signs, filter_response

    lam, vec = eigsh_vectors(n_users, n_items, users, items, k)
    table = _fix_signs(vec) * filter_response(np.clip(lam, 0.0, None), layers, True)
    return lam, table / table.std()


def build_once(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the graph, then time and measure one Ω build; saves the spectral table when asked."""
    from model_store.omega import random_omega, spectral_omega

    graph = load_graph(spec)
    n_users, n_items, users, items = graph
    solver, k = spec["solver"], int(spec["k"])
    exact_peak = _reset_peak()
    before_kb = _status_kb("VmRSS")
    start, cpu_start = time.perf_counter(), time.process_time()
    eigenvalues: np.ndarray | None = None
    if solver == "eigsh":
        eigenvalues, table = eigsh_omega(*graph, k=k)
    elif solver in ("svds", "randomized"):
        omega = spectral_omega(*graph, k=k, solver="randomized" if solver == "randomized" else "svds")
        eigenvalues, table = omega.eigenvalues, np.vstack([omega.users, omega.items])
    elif solver == "random":
        omega = random_omega(*graph, dim=int(spec["dim"]), sigma=1.0, layers=4, seed=0)
        table = omega.users
    else:
        raise DataError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak_kb = _status_kb("VmHWM")
    out: dict[str, Any] = {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "build_peak_mb": round((peak_kb - before_kb) / 1024, 1),
        "process_peak_mb": round(peak_kb / 1024, 1),
        "peak_is_build_only": exact_peak,
        "nodes": n_users + n_items,
        "edges": len(np.unique(users.astype(np.int64) * max(n_items, 1) + items)),
    }
    if eigenvalues is not None and spec.get("save"):
        np.save(Path(spec["save"]) / f"{solver}-values.npy", np.asarray(eigenvalues, dtype=np.float64))
        np.save(Path(spec["save"]) / f"{solver}-table.npy", np.asarray(table, dtype=np.float32))
    return out


# ---------------------------------------------------------------- parent: limits and agreement


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_child(spec: dict[str, Any], time_limit: float, memory_limit_mb: float) -> dict[str, Any]:
    """One build in a fresh interpreter, killed past the limits; the child's result or a 'stopped' record.

    The time limit is on the child's CPU time (the machine is shared: wall time would count waiting for a
    core), with a wall-clock backstop of 4× the limit.
    """
    env = {**os.environ, **{var: os.environ.get(var, "1") for var in THREAD_VARS}}
    cmd = [sys.executable, "-m", "benchmarks.omega_build", "--child", json.dumps(spec)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).parents[1])
    start, rss_max_mb, cpu, reason = time.perf_counter(), 0.0, 0.0, ""
    while proc.poll() is None:
        with contextlib.suppress(OSError, IndexError, ValueError):  # the child may just have exited
            rss_max_mb = max(rss_max_mb, _status_kb("VmRSS", proc.pid) / 1024)
            cpu = _cpu_seconds(proc.pid)
        wall = time.perf_counter() - start
        if rss_max_mb > memory_limit_mb:
            reason = f"stopped: RSS passed {memory_limit_mb / 1024:.0f} GB"
        elif cpu > time_limit or wall > 4 * time_limit:
            reason = f"stopped: ran past {time_limit:.0f} s (CPU {cpu:.0f} s, wall {wall:.0f} s)"
        if reason:
            proc.kill()
            proc.wait()
            return {"status": reason, "wall_seconds": round(wall, 1), "rss_at_stop_mb": round(rss_max_mb)}
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    if proc.returncode < 0:
        return {"status": f"stopped: killed from outside (signal {-proc.returncode}) after CPU {cpu:.0f} s",
                "wall_seconds": round(time.perf_counter() - start, 1)}
    if proc.returncode != 0:
        tail = stderr.strip().splitlines()[-1:] or ["(no output)"]
        return {"status": f"failed (exit {proc.returncode}): {tail[0]}"}
    return {"status": "ok", **json.loads(stdout.strip().splitlines()[-1])}


def predicted_stop(previous: dict[str, Any] | None, edges: int, time_limit: float,
                   memory_limit_mb: float) -> str:
    """Why a build would pass a limit, from the same solver's last good run scaled linearly in edges.

    Linear is a lower bound for ARPACK (its iteration count does not shrink with size), so a build
    predicted past a limit is skipped rather than run to be killed; '' when it is predicted to fit.
    """
    if previous is None:
        return ""
    ratio = edges / max(int(previous["edges"]), 1)
    cpu, memory = float(previous["cpu_seconds"]) * ratio, float(previous["build_peak_mb"]) * ratio
    if cpu > time_limit:
        return (f"skipped: predicted ≥ {cpu:.0f} CPU s (linear in edges from {previous['graph']}) "
                f"> {time_limit:.0f} s")
    if memory > memory_limit_mb:
        return (f"skipped: predicted ≥ {memory / 1024:.1f} GB (linear in edges from {previous['graph']}) "
                f"> {memory_limit_mb / 1024:.0f} GB")
    return ""


def _unit_columns(table: np.ndarray) -> np.ndarray:
    """Ω columns are eigenvectors × (filter · scale): normalising them gives the eigenvectors back."""
    cols = table.astype(np.float64)
    norms = np.linalg.norm(cols, axis=0)
    return cols / np.where(norms > 0, norms, 1.0)


def agreement(folder: Path, reference: str, other: str) -> dict[str, float]:
    """Eigenvalue error and subspace overlap of ``other``'s top-k against ``reference``'s."""
    lam_ref = np.load(folder / f"{reference}-values.npy")
    lam = np.load(folder / f"{other}-values.npy")
    q_ref = _unit_columns(np.load(folder / f"{reference}-table.npy"))
    q = _unit_columns(np.load(folder / f"{other}-table.npy"))
    cosines = np.linalg.svd(q_ref.T @ q, compute_uv=False)
    return {
        "max_eigenvalue_error": float(np.abs(lam - lam_ref).max()),
        "subspace_overlap": float(np.mean(np.clip(cosines, 0.0, 1.0) ** 2)),
        "min_principal_cosine": float(np.clip(cosines.min(), 0.0, 1.0)),
    }


def graph_specs(data_root: Path, datasets: Sequence[str], scales: Sequence[int]) -> list[dict[str, Any]]:
    """The real graphs, then Beauty lifted by each scale; each with its distinct-edge count."""
    specs: list[dict[str, Any]] = []
    base_edges: dict[str, int] = {}
    names = list(datasets) + (["beauty"] if scales else [])
    for name in names:
        folder = data_root / name
        if not (folder / "sequential_data.txt").is_file() or not (folder / "negative_samples.txt").is_file():
            raise DataError(f"no P5 dataset at {folder} (sequential_data.txt / negative_samples.txt missing)")
        _, n_items, users, items = load_graph({"data": str(folder)})
        base_edges[name] = len(np.unique(users * max(n_items, 1) + items))
    for name in datasets:
        specs.append({"graph": name, "data": str(data_root / name), "scale": 1, "edges": base_edges[name]})
    for scale in scales:
        if scale < 2:
            raise DataError(f"--scales must be >= 2 (got {scale}); the real graph is in --datasets")
        specs.append({"graph": f"beauty-x{scale}", "data": str(data_root / "beauty"), "scale": scale,
                      "seed": 0, "edges": base_edges["beauty"] * scale})
    return sorted(specs, key=lambda spec: int(spec["edges"]))


def run(specs: list[dict[str, Any]], solvers: Sequence[str], k: int, dim: int, time_limit: float,
        memory_limit_mb: float, log: Any = sys.stderr) -> list[dict[str, Any]]:
    """Every solver on every graph (fewest edges first); agreement between the spectral ones per graph."""
    rows: list[dict[str, Any]] = []
    last_ok: dict[str, dict[str, Any]] = {}
    stopped: dict[str, str] = {}
    for spec in specs:
        with tempfile.TemporaryDirectory(prefix="omega_build-") as tmp:
            done: list[str] = []
            for solver in solvers:
                row: dict[str, Any] = {"graph": spec["graph"], "scale": spec["scale"], "solver": solver,
                                       "k": k if solver != "random" else None,
                                       "dim": dim if solver == "random" else None, "edges": spec["edges"]}
                skip = predicted_stop(last_ok.get(solver), int(spec["edges"]), time_limit, memory_limit_mb)
                if solver in stopped:
                    row["status"] = f"skipped: {stopped[solver]} on a smaller graph"
                elif skip:
                    row["status"] = skip
                else:
                    child = {**spec, "solver": solver, "k": k, "dim": dim, "save": tmp}
                    row.update(run_child(child, time_limit, memory_limit_mb))
                    if row["status"] == "ok":
                        done.append(solver)
                        last_ok[solver] = row
                    else:
                        stopped[solver] = row["status"]
                print(json.dumps(row), file=log, flush=True)
                rows.append(row)
            spectral = [s for s in done if s in SPECTRAL]
            reference = next((s for s in ("svds", "eigsh") if s in spectral), None)
            for row in rows:
                if row["graph"] == spec["graph"] and reference and row["solver"] in spectral:
                    row["agreement_with"] = reference
                    row.update(agreement(Path(tmp), reference, row["solver"]))
    return rows


def plot(result: dict[str, Any], path: Path) -> Path:
    """Log-log CPU seconds (solid) and peak MB (dashed) of each solver's builds against edges, as a PNG."""
    from benchmarks.plots import label_axes, save, subplots

    fig, (ax_time, ax_mem) = subplots(1, 2, figsize=(11, 4.2))
    for solver in SOLVERS:
        ok = sorted((r["edges"], r["cpu_seconds"], r["build_peak_mb"]) for r in result["rows"]
                    if r["solver"] == solver and r["status"] == "ok")
        if not ok:
            continue
        edges, cpu, mem = zip(*ok, strict=True)
        ax_time.plot(edges, cpu, "o-", label=solver)
        ax_mem.plot(edges, mem, "o--", label=solver)
    for ax, label in ((ax_time, "build CPU seconds"), (ax_mem, "build peak memory (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        label_axes(ax, "distinct training edges", label)
    save(fig, path, f"Ω build cost, k = 64 spectral / d = 512 random, {result['device']}, 1 BLAS thread, "
                 f"{result['date']}", dpi=110)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.omega_build", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=Path("/work/shared/data"))
    p.add_argument("--datasets", nargs="*", default=["beauty", "sports", "toys"])
    p.add_argument("--scales", nargs="*", type=int, default=[10, 100],
                   help="synthetic lifts of Beauty's training graph (× edges and nodes)")
    p.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=SOLVERS)
    p.add_argument("--k", type=int, default=64, help="spectral width")
    p.add_argument("--dim", type=int, default=512, help="random Ω width")
    p.add_argument("--time-limit", type=float, default=600.0,
                   help="CPU seconds per build before it is stopped (or skipped when predicted past it)")
    p.add_argument("--memory-limit-gb", type=float, default=10.0, help="RSS per build before it is stopped")
    p.add_argument("--json", action="store_true", help="print one JSON object last and write it to --out-dir")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--plot", type=Path, help="write a PNG of build time/memory against edges here")
    p.add_argument("--from-json", type=Path, help="with --plot: draw an earlier result instead of measuring")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(build_once(json.loads(args.child))))
        return 0
    if args.from_json:
        if not args.plot:
            print("error: --from-json needs --plot", file=sys.stderr)
            return 2
        try:
            earlier = json.loads(args.from_json.read_text())
            print(plot(earlier, args.plot))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"error: cannot plot {args.from_json}: {exc!r}", file=sys.stderr)
            return 2
        return 0
    try:
        if args.k < 1 or args.dim < 1 or args.time_limit <= 0 or args.memory_limit_gb <= 0:
            raise DataError("--k, --dim, --time-limit and --memory-limit-gb must be positive")
        if not args.datasets and not args.scales:
            raise DataError("nothing to measure: give --datasets and/or --scales")
        specs = graph_specs(args.data_root, args.datasets, args.scales)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    rows = run(specs, args.solvers, args.k, args.dim, args.time_limit, args.memory_limit_gb * 1024)
    import scipy
    import sklearn

    from benchmarks.engine import stamp, write_json

    result: dict[str, Any] = {
        "benchmark": "omega_build",
        "device": describe("cpu"),
        "threads": {var: os.environ.get(var, "1") for var in THREAD_VARS},
        "protocol": ("training edges only (leave-one-out); one fresh subprocess per build; seconds = "
                     "perf_counter around the build from edge arrays; build_peak_mb = VmHWM after - VmRSS "
                     "before (peak reset before the build); cpu_seconds = the build's process CPU time (on a "
                     "shared machine wall time includes waiting for a core); seed 0 for lifts, ARPACK v0 and "
                     "random features"),
        "load_average_1_5_15min": {"before": [round(x, 2) for x in load_before],
                                   "after": [round(x, 2) for x in os.getloadavg()]},
        "limits": {"seconds": args.time_limit, "memory_gb": args.memory_limit_gb},
        "numpy": np.__version__, "scipy": scipy.__version__, "sklearn": sklearn.__version__,
        "python": sys.version.split()[0],
        "command": " ".join(["python -m benchmarks.omega_build", *(sys.argv[1:] if argv is None else argv)]),
        "date": stamp(),
        "rows": rows,
    }
    for row in rows:
        print(f"{row['graph']:<12} {row['solver']:<10} {row['status']:<8} "
              f"{row.get('edges', ''):>10} edges {row.get('seconds', ''):>9} s "
              f"{row.get('build_peak_mb', ''):>9} MB  overlap {row.get('subspace_overlap', '')}")
    if args.plot:
        plot(result, args.plot)
    if args.json:
        write_json(result, args.out_dir, "cpu")
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
