"""Two bundles served one after the other on this machine, same load: RPS and p50/p99 per task, and ratios.

    python -m benchmarks.serve_compare --new bundles/beauty-small --old bundles/beauty-small-digits \
        [--concurrency 1 8] [--requests 200] [--json]

Each bundle is served by its own `python -m service` (CPU, in-process history store, limits wide enough
that nothing is shed) and loaded by `benchmarks.serve` with the same request bodies seed; the JSON holds
both runs and new/old ratios of requests/s and latency per task and concurrency level.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.engine import RESULTS, write_json
from benchmarks.serve import main as serve_main

REPO = Path(__file__).resolve().parents[1]
TASKS = ("direct", "sequential")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(bundle: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELMREC_")}
    env.update(ELMREC_MODEL_DIR=str(bundle), ELMREC_PORT=str(port), ELMREC_HOST="127.0.0.1",
               ELMREC_DEVICE="cpu", ELMREC_LOG_LEVEL="warning", ELMREC_MAX_QUEUE="4096",
               ELMREC_REQUEST_TIMEOUT_MS="600000", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} not ready within {timeout_s:.0f} s")


def measure(bundle: Path, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    """Serve `bundle`, run benchmarks.serve for each task, stop it; the per-task results."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(bundle, port)
    try:
        _wait_ready(proc, url)
        results: dict[str, Any] = {}
        for task in TASKS:
            argv = ["--url", url, "--bundle", str(bundle), "--task", task, "--concurrency",
                    *map(str, args.concurrency), "--requests", str(args.requests), "--json",
                    "--out-dir", str(out_dir)]
            if serve_main(argv) != 0:
                raise RuntimeError(f"benchmarks.serve failed on {bundle} ({task})")
            newest = max(out_dir.glob("serve-*.json"), key=lambda p: p.stat().st_mtime)
            results[task] = json.loads(newest.read_text())
            newest.unlink()  # the combined JSON keeps it
        return results
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def ratios(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """new / old requests/s and latency percentiles per task and concurrency level."""
    out: dict[str, Any] = {}
    for task in TASKS:
        rows = []
        for a, b in zip(new[task]["levels"], old[task]["levels"], strict=True):
            row = {"concurrency": a["concurrency"], "rps": round(a["rps"] / b["rps"], 2)}
            for q in ("p50_ms", "p99_ms"):
                if a.get(q) and b.get(q):
                    row[q] = round(a[q] / b[q], 3)
            rows.append(row)
        out[task] = rows
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--new", type=Path, required=True, help="the new default's bundle")
    p.add_argument("--old", type=Path, required=True, help="the bundle it replaces")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--requests", type=int, default=200, help="requests per level")
    p.add_argument("--json", action="store_true", help="write the combined JSON to --out-dir")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    for bundle in (args.new, args.old):
        if not (bundle / "config.json").is_file():
            p.error(f"{bundle}: not a bundle folder (no config.json)")
    scratch = args.out_dir / ".serve-compare"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        new, old = measure(args.new, args, scratch), measure(args.old, args, scratch)
    except RuntimeError as exc:
        print(f"python -m benchmarks.serve_compare: error: {exc}", file=sys.stderr)
        return 1
    finally:
        for leftover in scratch.glob("*"):
            leftover.unlink()
        scratch.rmdir()
    result = {"benchmark": "serve-compare", "date": time.strftime("%Y-%m-%d", time.gmtime()),
              "new": str(args.new), "old": str(args.old),
              "command": " ".join(["python -m benchmarks.serve_compare", *(argv or sys.argv[1:])]),
              "device": new["direct"]["device"], "ratios_new_over_old": ratios(new, old),
              "runs": {"new": new, "old": old}}
    for task, rows in result["ratios_new_over_old"].items():
        for row in rows:
            print(f"{task:10s} c={row['concurrency']:<3d} rps x{row['rps']:.2f}  "
                  f"p50 x{row.get('p50_ms', float('nan')):.3f}  p99 x{row.get('p99_ms', float('nan')):.3f}")
    if args.json:
        print(f"wrote {write_json(result, args.out_dir, 'cpu')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
