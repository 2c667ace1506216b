"""Graceful shutdown of the real `python -m service`: on SIGTERM the requests in flight finish with 200,
new connections are refused, and the process exits cleanly within ELMREC_SHUTDOWN_TIMEOUT_S.

Slow (a fresh interpreter imports torch): `pytest -m slow tests/service/test_reliability_shutdown.py`.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from service_testkit import free_port, serve_subprocess, wait_ready

IN_FLIGHT = 6


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
    proc = serve_subprocess(service_bundle, port, ELMREC_MAX_WAIT_MS="1000", ELMREC_MAX_BATCH="64",
                  ELMREC_SHUTDOWN_TIMEOUT_S="20")
    try:
        wait_ready(proc, base)

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
