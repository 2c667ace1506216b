"""Histories on a real 3-master Redis Cluster (ELMREC_REDIS_CLUSTER=true), started on loopback by the test.

Writes and reads go through the API; the users' keys spread over the three masters. One master is killed
(-9) under write traffic: store-bound calls for its users answer 503 with a reason that names it (never a
500), the other masters' users keep answering 200, `/health/ready` is 503 with the reason; once the node
is back (same port and folder, AOF fsynced on every write) readiness recovers and no acknowledged write
is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient
from redis_servers import RedisClusterServers
from service_testkit import MakeSettings, assert_acknowledged_writes_kept, free_port

from service.app import create_app
from service.errors import StartupError

PREFIX = "cluster-test:"
ITEMS = [str(i) for i in range(1, 31)]  # the tiny bundle's catalogue
USERS_PER_NODE = 3
PHASE_S = 1.0


def key(user: str) -> str:
    return f"{PREFIX}history:{user}"


def users_by_node(cluster: RedisClusterServers) -> dict[int, list[str]]:
    """USERS_PER_NODE user ids whose keys live on each node (by port)."""
    chosen: dict[int, list[str]] = {node.port: [] for node in cluster.nodes}
    n = 0
    while any(len(users) < USERS_PER_NODE for users in chosen.values()):
        user = f"cluster-user-{n}"
        n += 1
        users = chosen[cluster.node_of(key(user)).port]
        if len(users) < USERS_PER_NODE:
            users.append(user)
    return chosen


async def test_histories_spread_over_the_masters_and_survive_a_killed_node(
    settings_for: MakeSettings, redis_cluster: RedisClusterServers
) -> None:
    placement = users_by_node(redis_cluster)
    victim = redis_cluster.nodes[1]
    statuses: Counter[tuple[str, bool, int]] = Counter()  # (phase, user on the victim, status)
    problems: list[str] = []
    acked: dict[str, list[str]] = {user: [] for users in placement.values() for user in users}
    refused: Counter[str] = Counter()
    phase = "up"

    app = create_app(settings_for(REDIS_URL=redis_cluster.url, REDIS_CLUSTER=True, REDIS_PREFIX=PREFIX,
                                  REDIS_TIMEOUT_S=0.5, HISTORY_MAX_LEN=10_000, MAX_WAIT_MS=2))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=30
    ) as client:
        # 1. written and read through the API; each master holds its users' keys
        for user in acked:
            response = await client.post(f"/users/{user}/interactions", json={"items": ITEMS[:2]})
            assert response.status_code == 200, response.text
            acked[user] += ITEMS[:2]
            history = (await client.get(f"/users/{user}/history")).json()
            assert history["items"] == ITEMS[:2] and history["known_user"] is False
        for node in redis_cluster.nodes:
            with contextlib.closing(node.client()) as direct:
                held = set(direct.scan_iter(match=f"{PREFIX}*"))
            assert held == {key(user) for user in placement[node.port]}, node.address

        # 2. write traffic while one master is killed and restarted
        stop = asyncio.Event()

        async def writer(user: str, on_victim: bool) -> None:
            n = 0
            while not stop.is_set():
                item = ITEMS[n % len(ITEMS)]
                n += 1
                response = await client.post(f"/users/{user}/interactions", json={"items": [item]})
                statuses[(phase, on_victim, response.status_code)] += 1
                if response.status_code == 200:
                    acked[user].append(item)
                    continue
                refused[user] += 1
                if response.status_code != 503 or "history store unavailable" not in response.text:
                    problems.append(f"{user}: {response.status_code} {response.text[:200]}")
                await asyncio.sleep(0.01)

        writers = [asyncio.create_task(writer(user, port == victim.port))
                   for port, users in placement.items() for user in users]
        await asyncio.sleep(PHASE_S)
        phase = "down"
        victim.kill()
        await asyncio.sleep(PHASE_S)
        ready = await client.get("/health/ready")
        on_victim = placement[victim.port][0]
        read = await client.get(f"/users/{on_victim}/history")
        own_data = await client.post("/recommend/sequential",
                                     json={"user_id": on_victim, "history": ["1", "2"], "k": 2})
        await asyncio.to_thread(victim.start)
        await asyncio.to_thread(redis_cluster.wait_ok)
        phase = "back"
        deadline = time.monotonic() + 10
        while (await client.get("/health/ready")).status_code != 200:
            assert time.monotonic() < deadline, "/health/ready did not recover within 10 s"
            await asyncio.sleep(0.05)
        await asyncio.sleep(PHASE_S)
        stop.set()
        await asyncio.gather(*writers)
        final = {user: (await client.get(f"/users/{user}/history")).json()["items"] for user in acked}

    print(dict(sorted(statuses.items())),
          {"acked": sum(map(len, acked.values())), "refused": refused.total()})
    assert not problems, problems[:10]  # only 200 and 503-with-reason, never a 500
    assert ready.status_code == 503 and ready.json()["checks"]["store"] == "unavailable"
    assert "redis cluster" in ready.json()["reason"] and victim.address in ready.json()["reason"]
    assert read.status_code == 503 and victim.address in read.json()["detail"]
    assert read.headers["retry-after"] == "1"
    assert own_data.status_code == 200  # a request carrying its own history needs no store
    for name in ("up", "back"):
        assert statuses[(name, True, 200)] > 0 and statuses[(name, False, 200)] > 0, name
    assert statuses[("down", True, 503)] > 0, "writes to the killed node were not refused"
    assert statuses[("down", False, 200)] > 0, "the other masters stopped serving their users"
    assert statuses[("down", False, 503)] == 0, "users of the surviving masters were refused"

    # every acknowledged write is in the cluster after the restart (AOF), read back through the API too
    for user, items in acked.items():
        node = redis_cluster.node_of(key(user))
        with contextlib.closing(node.client()) as direct:
            stored = [str(item) for item in direct.lrange(key(user), 0, -1)]
        assert_acknowledged_writes_kept(user, stored, items, refused[user])
        assert final[user] == stored


@pytest.mark.parametrize("make_url", [
    pytest.param(lambda: f"redis://127.0.0.1:{free_port()}/0", id="nothing-listening"),
    pytest.param(None, id="standalone-redis"),  # a Redis that is not in cluster mode
])
def test_no_cluster_at_the_url_is_503_with_the_reason(
    settings_for: MakeSettings, redis_server: str, make_url: Callable[[], str] | None
) -> None:
    url = make_url() if make_url is not None else redis_server
    settings = settings_for(REDIS_URL=url, REDIS_CLUSTER=True, REDIS_TIMEOUT_S=0.5)
    with TestClient(create_app(settings)) as client:
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and "redis cluster" in ready.json()["reason"], ready.text
        for response in (client.get("/users/u/history"),
                         client.post("/users/u/interactions", json={"items": ["1"]})):
            assert response.status_code == 503, response.text
            assert "history store unavailable (redis cluster" in response.json()["detail"]
        body = {"user_id": "1", "candidates": ["1", "2", "3"], "k": 2}  # a known user with candidates
        assert client.post("/recommend/direct", json=body).status_code == 200


def test_cluster_url_with_a_database_is_refused_at_startup(settings_for: MakeSettings) -> None:
    app = create_app(settings_for(REDIS_URL="redis://127.0.0.1:7000/2", REDIS_CLUSTER=True))
    with pytest.raises(StartupError, match="must be 0"), TestClient(app):
        pass
