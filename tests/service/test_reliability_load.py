"""Bounded load on loopback against the real `python -m service`: zero errors at several concurrency levels,
latency recorded, and the server's resident memory flat across repeated rounds.

Slow. The documented run (figures in docs/RELIABILITY.md):
    ELMREC_LOAD_SECONDS=20 ELMREC_LOAD_ROUNDS=3 ELMREC_LOAD_REPORT=load.json \
        python -m pytest -m slow tests/service/test_reliability_load.py -s
Each round runs every level in LEVELS for ELMREC_LOAD_SECONDS (default 20) seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from service_testkit import free_port, serve_subprocess, wait_ready

LEVELS = (1, 4, 16)
SECONDS = float(os.environ.get("ELMREC_LOAD_SECONDS", "20"))
ROUNDS = int(os.environ.get("ELMREC_LOAD_ROUNDS", "3"))
# RSS after the last round may exceed RSS after the first round (warm) by at most this much
RSS_GROWTH_BOUND_MIB = 24.0
ITEMS = [str(i) for i in range(1, 31)]
USERS = [str(i) for i in range(1, 41)]
WRITERS = [f"load-user-{i}" for i in range(50)]  # a bounded set: their histories are capped at 200 items


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _request(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    roll = rng.random()
    if roll < 0.5:
        return "direct", "/recommend/direct", {"user_id": rng.choice(USERS), "k": 5,
                                               "candidates": rng.sample(ITEMS, 10)}
    if roll < 0.8:
        return "sequential", "/recommend/sequential", {"user_id": rng.choice(USERS), "k": 5}
    return "write", f"/users/{rng.choice(WRITERS)}/interactions", {"items": rng.sample(ITEMS, 2)}


async def _level(base: str, concurrency: int, seconds: float, seed: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

        async def worker(index: int) -> None:
            rng = random.Random(seed * 1000 + index)
            while time.monotonic() < deadline:
                _, path, body = _request(rng)
                started = time.perf_counter()
                try:
                    response = await client.post(path, json=body)
                except httpx.HTTPError as exc:
                    errors.append(f"{path}: {type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors.append(f"{path}: {response.status_code} {response.text[:200]}")

        started = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.monotonic() - started
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return {"concurrency": concurrency, "seconds": round(elapsed, 1), "requests": len(latencies),
            "rps": round(len(latencies) / elapsed, 1), "errors": len(errors), "error_samples": errors[:5],
            "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}


@pytest.mark.slow
async def test_bounded_load_has_no_errors_and_flat_memory(service_bundle: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve_subprocess(service_bundle, port)
    try:
        await asyncio.to_thread(wait_ready, proc, base)
        rounds: list[dict[str, Any]] = []
        for r in range(ROUNDS):
            levels = [await _level(base, c, SECONDS, seed=r * 10 + c) for c in LEVELS]
            rounds.append({"round": r + 1, "levels": levels, "rss_mib": round(rss_mib(proc.pid), 1)})
            print(json.dumps(rounds[-1]))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    report = {"protocol": f"{len(LEVELS)} concurrency levels x {SECONDS:g} s per round, {ROUNDS} rounds; "
                          "mix 50% direct (10 candidates), 30% sequential (stored history), 20% writes "
                          "to 50 users; tiny bundle, in-process store, client in the same machine",
              "device": "cpu", "seed": "requests seeded per worker (random.Random(round*10000+level*1000+i))",
              "rss_growth_bound_mib": RSS_GROWTH_BOUND_MIB, "rounds": rounds}
    if os.environ.get("ELMREC_LOAD_REPORT"):
        Path(os.environ["ELMREC_LOAD_REPORT"]).write_text(json.dumps(report, indent=2))
    for entry in rounds:
        for level in entry["levels"]:
            assert level["errors"] == 0, level["error_samples"]
            assert level["requests"] > 0
    if ROUNDS >= 2:
        growth = rounds[-1]["rss_mib"] - rounds[0]["rss_mib"]
        assert growth <= RSS_GROWTH_BOUND_MIB, [entry["rss_mib"] for entry in rounds]
