"""Graceful shutdown of the real `python -m service`: on SIGTERM the requests in flight finish with 200,
new connections are refused, and the process exits cleanly within ELMREC_SHUTDOWN_TIMEOUT_S.

Slow (a fresh interpreter imports torch): `pytest -m slow tests/service/test_reliability_shutdown.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from service_testkit import free_port

REPO = Path(__file__).resolve().parents[2]
IN_FLIGHT = 6


def _serve(bundle: Path, port: int, **extra: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELMREC_")}
    env.update(ELMREC_MODEL_DIR=str(bundle), ELMREC_PORT=str(port), ELMREC_HOST="127.0.0.1",
               ELMREC_DEVICE="cpu", ELMREC_LOG_LEVEL="warning", PYTHONPATH=str(REPO), **extra)
    return subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_ready(proc: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + 180  # a fresh interpreter imports torch: slow on a busy 2-core machine
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"the service exited before it was ready:\n{out}")
        try:
            if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail("the service was not ready within 180 s")


def _wait_in_flight(base: str, n: int) -> None:
    """Until the server counts `n` requests in flight (plus the /metrics request asking)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for line in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
            if line.startswith("elmrec_requests_in_flight ") and float(line.split()[1]) >= n + 1:
                return
        time.sleep(0.02)
    pytest.fail(f"{n} requests were not in flight within 15 s")


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests_and_refuses_new_ones(service_bundle: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # a batch waits up to 1 s to fill: the requests are still in flight when SIGTERM arrives
    proc = _serve(service_bundle, port, ELMREC_MAX_WAIT_MS="1000", ELMREC_MAX_BATCH="64",
                  ELMREC_SHUTDOWN_TIMEOUT_S="20")
    try:
        _wait_ready(proc, base)

        def request(i: int) -> int:
            body = {"user_id": str(i + 1), "candidates": ["3", "4", "5"], "k": 2}
            return httpx.post(f"{base}/recommend/direct", json=body, timeout=30).status_code

        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            futures = [pool.submit(request, i) for i in range(IN_FLIGHT)]
            _wait_in_flight(base, IN_FLIGHT)
            assert not any(f.done() for f in futures), "the requests were not in flight at SIGTERM"
            sigterm_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            with pytest.raises(httpx.ConnectError):  # the listener is closed while the others finish
                httpx.get(f"{base}/health/live", timeout=2)
            statuses = [f.result(timeout=30) for f in futures]
        assert statuses == [200] * IN_FLIGHT
        code = proc.wait(timeout=30)
        took = time.monotonic() - sigterm_at
        print({"sigterm_to_exit_s": round(took, 2), "in_flight": IN_FLIGHT, "statuses": statuses})
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert code == 0, output
        assert "Traceback" not in output, output
        assert took < 20
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/health/live", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
