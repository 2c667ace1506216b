"""Bounded HTTP load generator against a running service on loopback: RPS and p50/p95/p99 per concurrency."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import torch

from benchmarks.engine import RESULTS, environment, write_json
from model_store.bundle import Bundle, load_bundle
from model_store.device import describe
from model_store.errors import BundleError

DESCRIPTION = (__doc__ or "") + """

    ELMREC_MODEL_DIR=bundles/beauty-small ELMREC_API_KEY=K python -m service &
    python -m benchmarks.serve --url http://127.0.0.1:8000 --api-key K --bundle bundles/beauty-small \\
        --task direct --concurrency 1 4 16 --duration 20 --json --plot docs/serve-direct.png

For each concurrency level C, C client tasks (one httpx.AsyncClient, at most C connections) send
requests back to back until --duration seconds have passed or --requests requests were sent, whichever
comes first; every request has its own --timeout. Bodies come from the bundle the service serves (its
users, and for direct each user's test item with its negatives as candidates), in a seeded order;
sequential requests use the stored history. Latencies are per request (send to full response), over
the successful (2xx) responses; errors are non-2xx answers plus exceptions (timeouts, refused
connections). Only loopback URLs are accepted: this is a local benchmark, not a tool against remote
hosts. The client shares the machine with the service, so on a small CPU it takes cores from it.
"""

TASKS = ("direct", "sequential")
PERCENTILES = (50, 95, 99)


@dataclass
class Level:
    """What one concurrency level measured."""

    concurrency: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # successful requests only
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    def record(self, status: str, ok: bool, ms: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if ok:
            self.latencies_ms.append(ms)
        else:
            self.errors += 1

    def summary(self) -> dict[str, Any]:
        done = len(self.latencies_ms) + self.errors
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        pct = {f"p{q}_ms": round(float(np.percentile(lat, q)), 2) if lat.size else None for q in PERCENTILES}
        return {
            "concurrency": self.concurrency,
            "requests": done,
            "ok": int(lat.size),
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "rps": round(done / self.seconds, 2) if self.seconds > 0 else 0.0,
            **pct,
            "mean_ms": round(float(lat.mean()), 2) if lat.size else None,
            "max_ms": round(float(lat.max()), 2) if lat.size else None,
            "statuses": dict(sorted(self.statuses.items())),
        }


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def request_bodies(
    bundle: Bundle, task: str, n: int, seed: int, candidates: int, k: int
) -> list[dict[str, Any]]:
    """`n` request bodies for known users of the bundle, in a seeded random order."""
    codec, data = bundle.codec, bundle.data
    users = np.random.default_rng(seed).choice(codec.n_users, size=n, replace=codec.n_users < n)
    bodies: list[dict[str, Any]] = []
    for u in users.tolist():
        if task == "direct":
            items = [data.sequences[u][-1], *data.negatives[u]][:candidates]
            bodies.append({"user_id": codec.users[u], "candidates": [codec.items[i] for i in items], "k": k})
        else:
            bodies.append({"user_id": codec.users[u], "k": k})
    return bodies


async def run_level(
    url: str, path: str, headers: dict[str, str], bodies: list[dict[str, Any]], concurrency: int,
    duration: float, requests: int | None, timeout: float,
) -> Level:
    """C workers sending back to back until the deadline or the request budget; each request timed."""
    level = Level(concurrency)
    counter = itertools.count()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        deadline = start + duration

        async def worker() -> None:
            while True:
                i = next(counter)
                if (requests is not None and i >= requests) or time.perf_counter() >= deadline:
                    return
                sent = time.perf_counter()
                try:
                    response = await client.post(path, json=bodies[i % len(bodies)])
                    await response.aread()
                    status, ok = str(response.status_code), response.is_success
                except (httpx.HTTPError, OSError) as exc:
                    status, ok = type(exc).__name__, False
                level.record(status, ok, 1000.0 * (time.perf_counter() - sent))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        level.seconds = time.perf_counter() - start
    return level


def service_info(url: str, headers: dict[str, str], timeout: float) -> dict[str, Any]:
    """GET /health/ready then /model; raises RuntimeError naming what is wrong."""
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=timeout) as client:
            ready = client.get("/health/ready")
            if ready.status_code != 200:
                raise RuntimeError(f"{url} is not ready ({ready.status_code}): {ready.text[:300]}")
            model = client.get("/model")
            model.raise_for_status()
            info: dict[str, Any] = model.json()
            return info
    except httpx.HTTPError as exc:
        raise RuntimeError(f"cannot query {url}: {type(exc).__name__}: {exc}") from exc


def served_device(kind: str) -> str:
    """The service's device in words (it runs on this machine: loopback only)."""
    if kind.startswith("cuda") and torch.cuda.is_available():
        return describe(torch.device(kind))
    return describe(torch.device("cpu")) if kind == "cpu" else kind


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    info = service_info(args.url, headers, args.timeout)
    try:
        bundle = load_bundle(args.bundle)
    except BundleError as exc:
        raise RuntimeError(f"--bundle: {exc}") from exc
    served, given = info["model_version"], bundle.config.model_version
    if served != given:
        raise RuntimeError(f"the service serves model {served}, --bundle {args.bundle} holds {given}: "
                           "request bodies would not match its catalogue")
    bodies = request_bodies(bundle, args.task, args.bodies, args.seed, args.candidates, args.k)
    path = f"/recommend/{args.task}"
    if args.warmup:
        asyncio.run(run_level(args.url, path, headers, bodies, 1, args.duration, args.warmup, args.timeout))
    levels = [
        asyncio.run(run_level(args.url, path, headers, bodies, c, args.duration, args.requests, args.timeout))
        for c in args.concurrency
    ]
    return {
        "benchmark": "serve",
        "device": served_device(info["device"]),
        "device_kind": info["device"],
        "backend": info["backend"],
        "preset": info["preset"],
        "dataset": info["dataset"]["name"],
        "model_version": served,
        "task": args.task,
        "url": args.url,
        "duration_s": args.duration,
        "requests_per_level": args.requests,
        "timeout_s": args.timeout,
        "warmup_requests": args.warmup,
        "k": args.k,
        "candidates": args.candidates if args.task == "direct" else None,
        "seed": args.seed,
        "client": "httpx.AsyncClient in one process on the same machine as the service",
        "environment_of": "the load generator (same machine and install as the service it measures)",
        "levels": [level.summary() for level in levels],
        **environment(command),
    }


def summary(result: dict[str, Any]) -> str:
    r = result
    lines = [f"serve /recommend/{r['task']} on {r['url']} ({r['backend']}, {r['device']}, {r['preset']} / "
             f"{r['dataset']})",
             f"  {'conc':>5} {'requests':>9} {'errors':>7} {'rps':>9} "
             + " ".join(f"{f'p{q} ms':>9}" for q in PERCENTILES)]
    for lv in r["levels"]:
        cells = " ".join(f"{lv[f'p{q}_ms']:9.1f}" if lv[f"p{q}_ms"] is not None else f"{'-':>9}"
                         for q in PERCENTILES)
        lines.append(f"  {lv['concurrency']:5d} {lv['requests']:9d} {lv['errors']:7d} {lv['rps']:9.1f} "
                     f"{cells}")
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> Path:
    """Per task, p50/p95/p99 latency and throughput against concurrency, a colour per backend (Agg)."""
    from benchmarks.plots import label_axes, save, subplots

    tasks = list(dict.fromkeys(r["task"] for r in results))
    fig, axes = subplots(len(tasks), 2, figsize=(11, 3.9 * len(tasks)), squeeze=False)
    colours = {backend: f"C{i}" for i, backend in enumerate(dict.fromkeys(r["backend"] for r in results))}
    for r in results:
        lat_ax, rps_ax = axes[tasks.index(r["task"])]
        xs = [lv["concurrency"] for lv in r["levels"]]
        colour = colours[r["backend"]]
        for q, style in zip(PERCENTILES, ("-", "--", ":"), strict=True):
            ys = [math.nan if lv[f"p{q}_ms"] is None else lv[f"p{q}_ms"] for lv in r["levels"]]
            lat_ax.plot(xs, ys, style, color=colour, marker="o", label=f"{r['backend']} p{q}")
        rps_ax.plot(xs, [lv["rps"] for lv in r["levels"]], color=colour, marker="o", label=r["backend"])
    levels = sorted({lv["concurrency"] for r in results for lv in r["levels"]})
    for row, task in zip(axes, tasks, strict=True):
        for ax, ylabel in zip(row, ("latency (ms)", "requests / s"), strict=True):
            ax.set_xscale("log", base=2)
            ax.set_xticks(levels, [str(c) for c in levels])
            label_axes(ax, "concurrent clients", ylabel, f"/recommend/{task}", fontsize=8)
        row[0].set_yscale("log")
    first = results[0]
    save(fig, path, f"serve benchmark: {first['device']}, {first['preset']} / {first['dataset']}, "
                 f"{first['date']}", dpi=110)
    return path


def _invalid(args: argparse.Namespace) -> str | None:
    """What is wrong with the load settings, or None."""
    if not is_loopback(args.url):
        return f"--url {args.url}: only loopback hosts (127.0.0.0/8, ::1, localhost) are accepted"
    if any(c < 1 or c > 1024 for c in args.concurrency):
        return "--concurrency: every level must be between 1 and 1024"
    if not 0 < args.duration <= 600:
        return "--duration must be in (0, 600] seconds"
    if args.requests is not None and args.requests < 1:
        return "--requests must be >= 1"
    if args.timeout <= 0 or args.warmup < 0 or args.k < 1 or args.candidates < 1 or args.bodies < 1:
        return "--timeout, --k, --candidates and --bodies must be positive, --warmup >= 0"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the running service (loopback only)")
    p.add_argument("--api-key", default=None, help="X-API-Key, when the service has ELMREC_API_KEY set")
    p.add_argument("--bundle", type=Path, default=None,
                   help="the bundle the service serves (request bodies are drawn from it); required to run")
    p.add_argument("--task", default="direct", choices=TASKS)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="levels, in order")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per level (an upper bound)")
    p.add_argument("--requests", type=int, default=None, help="requests per level (else until --duration)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    p.add_argument("--warmup", type=int, default=5, help="untimed requests before the first level")
    p.add_argument("--k", type=int, default=10, help="items asked for")
    p.add_argument("--candidates", type=int, default=100, help="direct: candidates per request")
    p.add_argument("--bodies", type=int, default=1000, help="distinct request bodies, cycled")
    p.add_argument("--seed", type=int, default=0, help="which users, in which order")
    p.add_argument("--json", action="store_true", help="print one JSON object last and write it to --out-dir")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--plot", type=Path, default=None, help="PNG of latency and RPS against concurrency")
    p.add_argument("--plot-also", type=Path, nargs="*", default=[],
                   help="earlier serve JSON files drawn in the same --plot (e.g. the other task)")
    p.add_argument("--replot", action="store_true",
                   help="send no request: draw the --plot-also files into --plot and stop")
    args = p.parse_args(argv)
    if (problem := _invalid(args)) is not None:
        p.error(problem)
    earlier = []
    for extra in args.plot_also:
        try:
            earlier.append(json.loads(extra.read_text()))
        except (OSError, ValueError) as exc:
            p.error(f"--plot-also {extra}: {exc}")
        if earlier[-1].get("benchmark") != "serve":
            p.error(f"--plot-also {extra}: not a serve benchmark result")
    if args.replot:
        if args.plot is None or not earlier:
            p.error("--replot needs --plot PNG and --plot-also JSON files")
        print(f"plot {plot(earlier, args.plot)}")
        return 0
    if args.bundle is None or not (args.bundle / "config.json").is_file():
        p.error(f"--bundle {args.bundle}: not a bundle folder (no config.json)")
    command = " ".join(["python -m benchmarks.serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        result = run(args, command)
    except RuntimeError as exc:
        print(f"python -m benchmarks.serve: error: {exc}", file=sys.stderr)
        return 1
    print(summary(result))
    if args.plot is not None:
        print(f"plot {plot([result, *earlier], args.plot)}")
    if args.json:
        variant = args.task if result["backend"] == "torch" else f"{args.task}-{result['backend']}"
        path = write_json(result, args.out_dir, result["device_kind"], variant)
        print(f"wrote {path}")
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
