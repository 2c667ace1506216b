"""Redis killed (-9) under traffic and restarted: no 500s, self-sufficient requests keep answering, store
requests get 503 with a reason, readiness flips and recovers, and no acknowledged write is lost (AOF always).

The test runs its own `redis-server` on a free loopback port with its own data folder (the `own_redis`
fixture of `redis_servers.py`). The default suite runs one kill cycle with short phases;
`pytest -m slow tests/service/test_reliability_redis_faults.py` runs three cycles with longer ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest
from redis_servers import RedisServer
from service_testkit import MakeSettings, assert_acknowledged_writes_kept

from service.app import create_app

PREFIX = "faults:"
WRITERS = 6
ITEMS = [str(i) for i in range(1, 31)]  # the tiny bundle's catalogue


@dataclass
class Log:
    """What the traffic saw, phase by phase ("up", "down", "back")."""

    phase: str = "up"
    statuses: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    acked: dict[str, list[str]] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)

    def record(self, kind: str, response: httpx.Response) -> None:
        self.statuses[(self.phase, kind, response.status_code)] += 1
        if response.status_code == 503:
            detail = response.json().get("detail", "")
            if kind != "ready" and "history store unavailable" not in detail:
                self.problems.append(f"{kind}: 503 without the reason: {detail}")
        elif response.status_code != 200:
            self.problems.append(f"{kind}: {response.status_code} {response.text[:200]}")

    def count(self, phase: str, kind: str, status: int) -> int:
        return self.statuses[(phase, kind, status)]


async def _traffic(client: httpx.AsyncClient, log: Log, stop: asyncio.Event) -> None:
    async def writer(user: str) -> None:
        n = 0
        log.acked[user] = []
        while not stop.is_set():
            item = ITEMS[n % len(ITEMS)]
            n += 1
            response = await client.post(f"/users/{user}/interactions", json={"items": [item]})
            log.record("write", response)
            if response.status_code == 200:
                log.acked[user].append(item)
            else:
                log.refused[user] += 1

    async def loop(kind: str, method: str, path: str, body: object = None) -> None:
        while not stop.is_set():
            log.record(kind, await client.request(method, path, json=body))
            await asyncio.sleep(0.01)

    await asyncio.gather(
        *(writer(f"writer-{i}") for i in range(WRITERS)),
        loop("own-data", "POST", "/recommend/direct",
             {"user_id": "1", "candidates": ["3", "4", "5"], "k": 2}),
        loop("own-data", "POST", "/recommend/sequential", {"user_id": "x", "history": ["1", "2"], "k": 2}),
        loop("store", "POST", "/recommend/sequential", {"user_id": "2", "k": 2}),
        loop("store", "GET", "/users/writer-0/history"),
        loop("ready", "GET", "/health/ready"),
    )


@pytest.mark.parametrize("cycles, phase_s", [
    pytest.param(1, 0.8, id="one-kill"),
    pytest.param(3, 4.0, id="three-kills", marks=pytest.mark.slow),
])
async def test_redis_killed_and_restarted_under_traffic(
    settings_for: MakeSettings, own_redis: RedisServer, cycles: int, phase_s: float
) -> None:
    settings = settings_for(REDIS_URL=own_redis.url, REDIS_PREFIX=PREFIX,
                            REDIS_TIMEOUT_S=0.3, HISTORY_MAX_LEN=10_000, MAX_WAIT_MS=2)
    app = create_app(settings)
    log = Log()
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=30
    ) as client:
        stop = asyncio.Event()
        traffic = asyncio.create_task(_traffic(client, log, stop))
        await asyncio.sleep(phase_s)
        for _ in range(cycles):
            log.phase = "down"
            own_redis.kill()
            await asyncio.sleep(phase_s)
            own_redis.start()
            log.phase = "back"
            deadline = time.monotonic() + 10
            while (await client.get("/health/ready")).status_code != 200:
                assert time.monotonic() < deadline, "/health/ready did not recover within 10 s"
                await asyncio.sleep(0.05)
            await asyncio.sleep(phase_s)
        stop.set()
        await traffic
        final_ready = await client.get("/health/ready")

    print({f"{phase}/{kind}/{status}": n for (phase, kind, status), n in sorted(log.statuses.items())},
          {"acked_writes": sum(len(a) for a in log.acked.values()),
           "refused_writes": sum(log.refused.values())})
    assert not log.problems, log.problems[:10]  # only 200 and 503-with-reason, never a 500
    for phase in ("up", "down", "back"):
        assert log.count(phase, "own-data", 200) > 0
        assert sum(n for (p, kind, status), n in log.statuses.items()
                   if p == phase and kind == "own-data" and status != 200) == 0, phase
    assert log.count("down", "store", 503) > 0 and log.count("down", "write", 503) > 0
    assert log.count("up", "ready", 200) > 0 and log.count("down", "ready", 503) > 0
    assert log.count("back", "store", 200) > 0 and log.count("back", "write", 200) > 0
    assert final_ready.status_code == 200

    # every acknowledged write survived the kills, in order; extra items only from refused attempts
    with contextlib.closing(own_redis.client()) as check:
        for user, acked in log.acked.items():
            stored = check.lrange(f"{PREFIX}history:{user}", 0, -1)
            assert_acknowledged_writes_kept(user, stored, acked, log.refused[user])
    assert sum(len(a) for a in log.acked.values()) > 20
