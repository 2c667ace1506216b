"""Overload through HTTP: a full admission queue is a fast 503 with Retry-After, a passed deadline is a
503 without compute, a client that disconnects takes its job out of the queue; all counted in /metrics.

The batcher-level behaviour (and an open-loop run at 4x capacity) is in test_service_batching.py; the
load test against the real process is test_reliability_overload.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from service_testkit import MakeSettings, free_port

from service.app import create_app

DIRECT = "/recommend/direct"
BODY = {"user_id": "3", "candidates": ["4", "5", "6"], "k": 2}


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in a Prometheus exposition (None when absent)."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == wanted:
            return float(value)
    return None


def shed(text: str, reason: str) -> float | None:
    return sample(text, "elmrec_requests_shed_total", reason=reason, task="direct")


def wait_for(client: httpx.Client | TestClient, name: str, value: float, **labels: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sample(client.get("/metrics").text, name, **labels) == value:
            return
        time.sleep(0.01)
    pytest.fail(f"{name}{labels} did not reach {value} within 10 s")


def test_a_full_queue_is_a_fast_503_with_retry_after(settings_for: MakeSettings) -> None:
    # a batch waits 1 s to fill: the first request sits in the queue, which holds one
    settings = settings_for(MAX_QUEUE=1, MAX_WAIT_MS=1000, MAX_BATCH=64, REQUEST_TIMEOUT_MS=30_000)
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(1) as pool:
        assert shed(client.get("/metrics").text, "queue_full") == 0
        first = pool.submit(client.post, DIRECT, json=BODY)
        wait_for(client, "elmrec_queue_depth", 1, task="direct")
        started = time.perf_counter()
        refused = client.post(DIRECT, json=BODY)
        took = time.perf_counter() - started
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["reason"] == "queue_full" and "ELMREC_MAX_QUEUE=1" in refused.json()["detail"]
        assert took < 0.5  # not queued behind the waiting batch
        assert first.result().status_code == 200
        text = client.get("/metrics").text
    assert shed(text, "queue_full") == 1
    assert sample(text, "elmrec_request_duration_seconds_count", method="POST", route=DIRECT,
                  status="503") == 1


def test_a_request_past_its_deadline_is_503_and_never_computed(settings_for: MakeSettings) -> None:
    settings = settings_for(MAX_WAIT_MS=1000, MAX_BATCH=64, REQUEST_TIMEOUT_MS=200)
    with TestClient(create_app(settings)) as client:
        started = time.perf_counter()
        expired = client.post(DIRECT, json=BODY)
        took = time.perf_counter() - started
        assert expired.status_code == 503, expired.text
        assert expired.json()["reason"] == "deadline"
        assert "ELMREC_REQUEST_TIMEOUT_MS" in expired.json()["detail"]
        assert expired.headers["retry-after"] == "1"
        assert 0.15 < took < 0.9  # at the deadline, before the batch's 1 s wait would end
        time.sleep(1.0)  # the batch would have run by now
        text = client.get("/metrics").text
    assert shed(text, "deadline") == 1
    assert sample(text, "elmrec_inference_batch_size_count", task="direct") == 0  # no compute
    assert sample(text, "elmrec_queue_depth", task="direct") == 0


@pytest.fixture()
def live_server(settings_for: MakeSettings) -> Iterator[str]:
    """The app under uvicorn in a thread of this process (a real socket: clients can disconnect)."""
    port = free_port()
    app = create_app(settings_for(MAX_WAIT_MS=1000, MAX_BATCH=64, REQUEST_TIMEOUT_MS=30_000))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not server.started:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 60 s"
    yield base
    server.should_exit = True
    thread.join(timeout=30)


def test_a_client_that_disconnects_leaves_the_queue_before_compute(live_server: str) -> None:
    raw = httpx.Request("POST", f"{live_server}{DIRECT}", json=BODY)
    head = (f"POST {DIRECT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(raw.content)}\r\n\r\n").encode()
    with httpx.Client(base_url=live_server, timeout=10) as client:
        with socket.create_connection(("127.0.0.1", int(live_server.rsplit(":", 1)[1]))) as sock:
            sock.sendall(head + raw.content)
            wait_for(client, "elmrec_queue_depth", 1, task="direct")  # waiting 1 s for its batch
        # the socket is closed: the job must leave the queue now, not after the batch wait
        wait_for(client, "elmrec_queue_depth", 0, task="direct")
        time.sleep(1.1)  # past the batch wait: a job still queued would have been computed by now
        text = client.get("/metrics").text
        assert client.post(DIRECT, json=BODY).status_code == 200  # and the service answers as usual
    assert shed(text, "client_gone") == 1
    assert sample(text, "elmrec_inference_batch_size_count", task="direct") == 0
    assert sample(text, "elmrec_request_duration_seconds_count", method="POST", route=DIRECT,
                  status="499") == 1
