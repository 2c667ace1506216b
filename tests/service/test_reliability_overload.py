"""Overload at about 4x capacity against the service: load is shed instead of queued without bound.

The service holds MAX_BATCH + MAX_QUEUE requests (one batch computing, one waiting). First its
capacity is measured with that many clients (closed loop), then 4x as many clients send direct
requests back to back (a refused client waits the Retry-After its 503 gives: what a client told to
retry does), as in the issue's experiment (256 concurrent clients), then they stop. A second crowd
then runs for 3 s and all its clients go away at once, mid-request; single probe requests sent from
that moment measure how soon latency is normal again. Asserted: answered (200) requests' p99 within
ELMREC_REQUEST_TIMEOUT_MS (x 1.1: the client's clock also holds the HTTP path outside the service's),
refusals fast and counted in /metrics, no other error, latency back to normal within 1 s of the load
stopping, and (against the real process) resident memory flat; and, for contrast, that the same load
without the limits makes answers wait far past the deadline.
Both run the service's default ELMREC_MAX_QUEUE and ELMREC_REQUEST_TIMEOUT_MS.

The admission queue sheds load where the time goes: in front of the model. On the shipped small
bundle the model is the bottleneck (about 15 ms per direct request of 100 candidates on 2 cores: 64
req/s); on the tests' tiny bundle it costs about 2 ms, and the HTTP stack (and, in one process, the
GIL shared with the client) would be the bottleneck instead. So:
- the default suite's short version serves the tiny bundle under uvicorn in a thread of the test
  process with MAX_BATCH=4 and the model made to cost 80 ms per request (a sleep added to the batch
  function: 12 req/s), so that the load stays far below what the shared process can parse;
- the slow version runs the real `python -m service` (default settings) on a bundle trained with
  `--preset tiny --limit-users 300` on the bundled Beauty data, whose direct requests with 100
  candidates make the model the bottleneck for real (figures in docs/RELIABILITY.md):
    ELMREC_OVERLOAD_SECONDS=20 ELMREC_OVERLOAD_REPORT=overload.json \\
        OMP_NUM_THREADS=1 python -m pytest -m slow tests/service/test_reliability_overload.py -s
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from service_testkit import REPO, MakeSettings, free_port, serve_subprocess, wait_ready
from test_reliability_load import rss_mib

import service.runtime
from benchmarks.serve import request_bodies
from model_store.bundle import load_bundle
from service.app import create_app
from service.recommender import DirectJob
from service.settings import Settings

DIRECT = "/recommend/direct"
OVERLOAD = 4  # clients / requests the service holds (MAX_BATCH computing + MAX_QUEUE waiting)
RECOVERY_BOUND_S = 1.0
RSS_GROWTH_BOUND_MIB = 24.0  # peak RSS of the second half of the run over the first half's
DEADLINE_SLACK = 1.1  # answered p99 seen by the client <= 1.1 x the deadline
RETRY_AFTER_S = 1.0  # what the service's 503 says
GO_AWAY_AFTER_S = 3.0  # the second crowd's life before all its clients disconnect
MODEL_SECONDS_PER_REQUEST = 0.08  # the short version's model cost
SHORT_MAX_BATCH = 4
DEFAULTS = Settings.model_validate({})
Bodies = Sequence[bytes]  # JSON request bodies


def encoded(bodies: Sequence[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(body).encode() for body in bodies]


def ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    arr = np.asarray(values) * 1000
    return {f"p{q}_ms": round(float(np.percentile(arr, q)), 1) for q in (50, 99)} | {
        "max_ms": round(float(arr.max()), 1)}


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough HTTP for these requests.

    Hundreds of concurrent clients through one httpx pool cost the client process more CPU than the
    service spends on them (on 2 shared cores the client then measures its own queueing); raw
    asyncio streams keep the client's share small."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(*self.address)
        reader, writer = self.streams
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.address[0]}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(line.split(":", 1)[1]) for line in lines
                      if line.lower().startswith("content-length:"))
        return int(lines[0].split()[1]), await reader.readexactly(length)

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def post(connection: Connection, bodies: Bodies, i: int) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        status, payload = await connection.post(DIRECT, bodies[i % len(bodies)])
        outcome = str(status)
        if status == 503:
            outcome = f"503 {json.loads(payload).get('reason')}"
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        outcome = type(exc).__name__
        connection.close()
    return outcome, time.perf_counter() - started


async def capacity(base: str, bodies: Bodies, seconds: float, clients: int) -> float:
    """Answers per second with `clients` requests always outstanding (closed loop)."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        connection = Connection(base)
        i = w
        while time.perf_counter() < deadline:
            outcome, _ = await post(connection, bodies, i)
            done += outcome == "200"
            i += clients
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    return done / (time.perf_counter() - started)


async def one_at_a_time(base: str, bodies: Bodies, seconds: float | None = None,
                        n: int | None = None) -> list[tuple[float, str, float]]:
    """(seconds since the start, outcome, latency) of requests sent one at a time, 50 ms apart, for
    `seconds` or `n` requests."""
    connection = Connection(base)
    out: list[tuple[float, str, float]] = []
    start = time.perf_counter()
    while (since := time.perf_counter() - start) < (seconds or float("inf")) and len(out) < (n or 1 << 30):
        outcome, latency = await post(connection, bodies, len(out))
        out.append((round(since, 3), outcome, latency))
        await asyncio.sleep(0.05)
    connection.close()
    return out


async def crowd(base: str, bodies: Bodies, clients: int, seconds: float, sample_rss: Callable[[], float],
                abandon: bool = False) -> tuple[list[tuple[str, float]], list[float], int]:
    """`clients` clients sending back to back for `seconds`; one refused (503) waits its Retry-After
    before its next request, as the answer asks. Then they finish their last request, or with
    `abandon` they all go away at once (connections closed mid-request). (outcomes, RSS samples
    every 0.5 s, requests abandoned)."""
    outcomes: list[tuple[str, float]] = []
    rss: list[float] = []
    stop = time.perf_counter() + seconds
    in_flight = 0

    async def one(w: int) -> None:
        nonlocal in_flight
        connection = Connection(base)
        i = w
        try:
            while time.perf_counter() < stop:
                in_flight += 1
                outcome, latency = await post(connection, bodies, i)
                in_flight -= 1
                outcomes.append((outcome, latency))
                if outcome.startswith("503"):
                    await asyncio.sleep(RETRY_AFTER_S)
                i += clients
        finally:
            connection.close()

    async def memory() -> None:
        while time.perf_counter() < stop:
            rss.append(sample_rss())
            await asyncio.sleep(0.5)

    tasks = [asyncio.create_task(one(w)) for w in range(clients)]
    await memory()
    if abandon:
        for task in tasks:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return outcomes, rss, in_flight if abandon else 0


def recovery_seconds(points: list[tuple[float, float]], normal_s: float) -> float | None:
    """When the probe answers became normal for good: start of the first probe from which every answer
    is within `normal_s`; None when they never did."""
    for index, (since, _) in enumerate(points):
        if all(latency <= normal_s for _, latency in points[index:]):
            return since
    return None


def mean(text: str, histogram: str, scale: float = 1.0) -> float | None:
    """Mean of a direct-task histogram in /metrics, times `scale`."""
    values = {}
    for line in text.splitlines():
        for part in ("sum", "count"):
            if line.startswith(f'{histogram}_{part}{{task="direct"}} '):
                values[part] = float(line.rsplit(" ", 1)[1])
    return round(scale * values["sum"] / values["count"], 1) if values.get("count") else None


def shed_counts(text: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("elmrec_requests_shed_total{"):
            labels, value = line.rsplit(" ", 1)
            if 'task="direct"' in labels:
                counts[labels.split('reason="')[1].split('"')[0]] = float(value)
    return counts


async def run_overload(base: str, bodies: Bodies, seconds: float, settings: Settings,
                       sample_rss: Callable[[], float]) -> dict[str, Any]:
    held = settings.MAX_BATCH + settings.max_queue  # one batch computing, one waiting
    idle = [latency for _, _, latency in await one_at_a_time(base, bodies, n=20)]
    measured = await capacity(base, bodies, min(seconds, 5.0), clients=held)
    outcomes, rss, _ = await crowd(base, bodies, OVERLOAD * held, seconds, sample_rss)
    # the recovery case: the same crowd again, and then every client goes away at once
    _, _, abandoned = await crowd(base, bodies, OVERLOAD * held, GO_AWAY_AFTER_S, sample_rss, abandon=True)
    after = [(since, latency) for since, outcome, latency in await one_at_a_time(base, bodies, seconds=2.0)
             if outcome == "200"]
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        metrics = (await client.get("/metrics")).text
    statuses: dict[str, int] = {}
    for outcome, _ in outcomes:
        statuses[outcome] = statuses.get(outcome, 0) + 1
    ok = [latency for outcome, latency in outcomes if outcome == "200"]
    refused = [latency for outcome, latency in outcomes if outcome == "503 queue_full"]
    normal_s = max(3 * float(np.percentile(idle, 95)), 0.05)
    return {
        "idle": ms(idle), "capacity_clients": held, "capacity_rps": round(measured, 1),
        "overload_clients": OVERLOAD * held, "overload_seconds": seconds,
        "sent_rps": round(len(outcomes) / seconds, 1),
        "requests": len(outcomes), "statuses": dict(sorted(statuses.items())),
        "answered_rps": round(len(ok) / seconds, 1), "answered": ms(ok), "refused_queue_full": ms(refused),
        "max_batch": settings.MAX_BATCH, "max_queue": settings.max_queue,
        "deadline_ms": settings.REQUEST_TIMEOUT_MS,
        "shed_metrics_direct": shed_counts(metrics),
        "server_mean_batch_ms": mean(metrics, "elmrec_inference_duration_seconds", 1000),
        "server_mean_batch_size": mean(metrics, "elmrec_inference_batch_size"),
        "server_mean_queue_wait_ms": mean(metrics, "elmrec_queue_wait_seconds", 1000),
        "rss_mib": [round(r, 1) for r in rss],
        "abandoned_in_flight": abandoned,
        "normal_latency_bound_ms": round(1000 * normal_s, 1),
        "recovery_s": recovery_seconds(after, normal_s),
        "probes_after_stop": [{"since_stop_s": s, "ms": round(1000 * lat, 1)} for s, lat in after],
    }


def check(report: dict[str, Any]) -> None:
    statuses = report["statuses"]
    assert set(statuses) <= {"200", "503 queue_full", "503 deadline"}, statuses  # no 500, no client error
    assert statuses.get("503 queue_full", 0) > 0 and statuses.get("200", 0) > 0
    # within the deadline on the service's clock; the client's clock also holds the HTTP path around it
    assert report["answered"]["p99_ms"] <= DEADLINE_SLACK * report["deadline_ms"], report["answered"]
    # refused without waiting in the queue (what they wait is the HTTP stack: the machine is shared)
    assert report["refused_queue_full"]["p50_ms"] < report["deadline_ms"] / 4, report["refused_queue_full"]
    shed = report["shed_metrics_direct"]
    assert shed["queue_full"] >= statuses.get("503 queue_full", 0)  # counted (the capacity phase may add)
    assert shed["deadline"] >= statuses.get("503 deadline", 0)
    assert report["recovery_s"] is not None and report["recovery_s"] <= RECOVERY_BOUND_S, report


@pytest.fixture()
def slow_model_server(settings_for: MakeSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The app (tiny bundle, SHORT_MAX_BATCH, default limits) under uvicorn in a thread of this process,
    its direct batches made to cost MODEL_SECONDS_PER_REQUEST per request (a sleep releases the GIL, as
    torch does)."""
    real = service.runtime.run_direct_batch

    def slow(engine: Any, jobs: Sequence[DirectJob]) -> Any:
        time.sleep(MODEL_SECONDS_PER_REQUEST * len(jobs))
        return real(engine, jobs)

    monkeypatch.setattr(service.runtime, "run_direct_batch", slow)
    port = free_port()
    app = create_app(settings_for(MAX_BATCH=SHORT_MAX_BATCH))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not server.started:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 60 s"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


async def test_overload_is_shed_and_latency_recovers(slow_model_server: str, service_bundle: Path) -> None:
    bodies = encoded(request_bodies(load_bundle(service_bundle), "direct", 200, seed=0, candidates=30, k=10))
    settings = Settings.model_validate({"MAX_BATCH": SHORT_MAX_BATCH})
    report = await run_overload(slow_model_server, bodies, 3.0, settings, sample_rss=lambda: 0.0)
    print(json.dumps(report))
    check(report)


@pytest.fixture(scope="module")
def beauty_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`--preset tiny --limit-users 300` on the bundled Beauty data (about a minute on 2 cores)."""
    out = tmp_path_factory.mktemp("overload") / "beauty-tiny-300"
    subprocess.run([sys.executable, "-m", "training", "train", "--data", str(REPO / "data" / "beauty"),
                    "--preset", "tiny", "--limit-users", "300", "--out", str(out)],
                   cwd=REPO, check=True, capture_output=True, timeout=900)
    return out


async def serve_overloaded(bundle: Path, bodies: Bodies, seconds: float, **env: str) -> dict[str, Any]:
    """run_overload against a fresh `python -m service` on `bundle` with these ELMREC_* settings."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve_subprocess(bundle, port, **env)
    try:
        await asyncio.to_thread(wait_ready, proc, base)
        return {"server_settings": env or "defaults",
                **await run_overload(base, bodies, seconds, DEFAULTS, lambda: rss_mib(proc.pid))}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
async def test_overload_of_the_real_process_sheds_load_with_flat_memory(beauty_bundle: Path) -> None:
    seconds = float(os.environ.get("ELMREC_OVERLOAD_SECONDS", "20"))
    bodies = encoded(request_bodies(load_bundle(beauty_bundle), "direct", 300, seed=0, candidates=100, k=10))
    shedding = await serve_overloaded(beauty_bundle, bodies, seconds)
    # the same load on the service as it was before (no bound, no deadline worth the name): the contrast
    unbounded = await serve_overloaded(beauty_bundle, bodies, seconds, ELMREC_MAX_QUEUE="100000",
                                       ELMREC_REQUEST_TIMEOUT_MS="600000")
    report = {"protocol": "real `python -m service`, bundle --preset tiny --limit-users 300 on data/beauty, "
                          "direct requests (test item + 99 negatives as candidates, k=10); capacity = closed "
                          "loop with MAX_BATCH + MAX_QUEUE (defaults: 64) clients, then "
                          f"{OVERLOAD}x as many clients for {seconds:g} s (a refused one waits Retry-After), "
                          "then probes one at a time; raw HTTP/1.1 client in one process on the same machine",
              "device": "cpu (2 cores, shared)", "default_settings": shedding, "unbounded": unbounded}
    print(json.dumps(report))
    if os.environ.get("ELMREC_OVERLOAD_REPORT"):
        Path(os.environ["ELMREC_OVERLOAD_REPORT"]).write_text(json.dumps(report, indent=2))
    check(shedding)
    rss = shedding["rss_mib"]  # it swings with each batch's tensors: compare the peaks of the halves
    assert max(rss[len(rss) // 2:]) - max(rss[: len(rss) // 2]) <= RSS_GROWTH_BOUND_MIB, rss
    # without the bound the queue only grows: answers far past the deadline, nothing refused
    assert unbounded["answered"]["p99_ms"] > 1.5 * unbounded["deadline_ms"], unbounded["answered"]
    assert "503 queue_full" not in unbounded["statuses"]
