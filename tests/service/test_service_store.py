"""History stores: one behavioural suite on the in-process store, a real Redis and a real Redis Cluster."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis
from redis_servers import RedisClusterServers
from service_testkit import free_port

from service.errors import StoreUnavailableError
from service.metrics import ServiceMetrics
from service.store import HistoryStore, InMemoryHistoryStore, RedisHistoryStore, make_store

MAX_LEN = 5


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[HistoryStore]:
    metrics = ServiceMetrics(process=False)
    made: HistoryStore
    if request.param == "memory":
        made = InMemoryHistoryStore(MAX_LEN, metrics)
    elif request.param == "redis":
        url = request.getfixturevalue("redis_server")
        made = RedisHistoryStore(url, request.getfixturevalue("redis_prefix"), MAX_LEN, 1.0, metrics)
    else:
        cluster: RedisClusterServers = request.getfixturevalue("shared_redis_cluster")
        prefix = f"store-{uuid.uuid4().hex}:"
        made = RedisHistoryStore(cluster.url, prefix, MAX_LEN, 1.0, metrics, cluster=True)
    yield made
    await made.close()


async def test_is_a_history_store(store: HistoryStore) -> None:
    assert isinstance(store, HistoryStore)
    await store.ping()


async def test_unknown_user_has_empty_history(store: HistoryStore) -> None:
    assert await store.get("nobody") == []


async def test_append_keeps_time_order_and_reports_length(store: HistoryStore) -> None:
    assert await store.append("u", ["a", "b"]) == 2
    assert await store.append("u", ["c"]) == 3
    assert await store.get("u") == ["a", "b", "c"]


async def test_history_is_capped_dropping_the_oldest(store: HistoryStore) -> None:
    await store.append("u", ["1", "2", "3", "4"])
    assert await store.append("u", ["5", "6", "7"]) == MAX_LEN
    assert await store.get("u") == ["3", "4", "5", "6", "7"]


async def test_users_are_separate(store: HistoryStore) -> None:
    await store.append("u1", ["a"])
    await store.append("u2", ["b", "c"])
    assert await store.get("u1") == ["a"]
    assert await store.get("u2") == ["b", "c"]


async def test_odd_ids_round_trip(store: HistoryStore) -> None:
    ids = ["B00-ÄSIN", "with space", "x:y:z", "*"]
    await store.append("user:with:colons", ids[:2])
    await store.append("user:with:colons", ids[2:])
    assert await store.get("user:with:colons") == ids[-MAX_LEN:]


async def test_redis_uses_its_prefix_and_only_its_keys(
    redis_server: str, redis_prefix: str, sync_redis: redis.Redis
) -> None:
    store = RedisHistoryStore(redis_server, redis_prefix, MAX_LEN)
    try:
        await store.append("u", ["a", "b"])
        assert sync_redis.lrange(f"{redis_prefix}history:u", 0, -1) == ["a", "b"]
        assert list(sync_redis.scan_iter(match=f"{redis_prefix}*")) == [f"{redis_prefix}history:u"]
    finally:
        await store.close()


async def test_redis_down_raises_store_unavailable_and_counts_errors() -> None:
    metrics = ServiceMetrics(process=False)
    store = RedisHistoryStore(f"redis://127.0.0.1:{free_port()}/0", "down:", MAX_LEN, 0.5, metrics)
    try:
        for call in (store.ping(), store.get("u"), store.append("u", ["a"])):
            with pytest.raises(StoreUnavailableError) as info:
                await call
            assert info.value.kind == "connection"
            assert "retry later" in info.value.message
    finally:
        await store.close()
    for op in ("ping", "get", "append"):
        assert metrics.registry.get_sample_value(
            "elmrec_history_store_errors_total", {"op": op, "kind": "connection"}) == 1.0
        assert metrics.registry.get_sample_value(
            "elmrec_history_store_operations_total", {"op": op, "backend": "redis"}) == 1.0


def test_make_store_picks_the_backend() -> None:
    assert make_store(None, "p:", 3, 1.0, None).backend == "memory"
    assert make_store("redis://127.0.0.1:1/0", "p:", 3, 1.0, None).backend == "redis"
