"""Online user histories: the HistoryStore interface, an in-process store and a Redis store.

A store holds only what arrived online (external item ids, oldest first, capped at `max_len` per
user); the training histories stay in the bundle and the recommender merges the two.

Key layout (standalone Redis and Redis Cluster alike): one list per user at `<prefix>history:<user_id>`,
and every operation touches that one key only, so an operation never crosses hash slots. No hash tag
is used: on a cluster the users' keys spread over all slots, hence over all masters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ClusterError, RedisClusterException, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.errors import StoreUnavailableError
from service.metrics import ServiceMetrics


@runtime_checkable
class HistoryStore(Protocol):
    """Per-user lists of item ids in time order, capped at `max_len` (the oldest fall off)."""

    backend: str
    max_len: int

    async def append(self, user_id: str, items: Sequence[str]) -> int:
        """Append `items` (in order) once the store has acknowledged them; returns the stored length."""
        ...

    async def get(self, user_id: str) -> list[str]:
        """The user's stored items, oldest first ([] for a user with none)."""
        ...

    async def ping(self) -> None:
        """Return when the store is reachable; raise StoreUnavailableError otherwise."""
        ...

    async def close(self) -> None: ...


class InMemoryHistoryStore:
    """The embedded default: a dict in this process (lost on restart, not shared between replicas)."""

    backend = "memory"

    def __init__(self, max_len: int, metrics: ServiceMetrics | None = None) -> None:
        self.max_len = max_len
        self._metrics = metrics
        self._lists: dict[str, list[str]] = {}

    def _count(self, op: str) -> None:
        if self._metrics is not None:
            self._metrics.store_operations.labels(op=op, backend=self.backend).inc()

    async def append(self, user_id: str, items: Sequence[str]) -> int:
        self._count("append")
        stored = self._lists.setdefault(user_id, [])
        stored.extend(items)
        del stored[: max(0, len(stored) - self.max_len)]
        return len(stored)

    async def get(self, user_id: str) -> list[str]:
        self._count("get")
        return list(self._lists.get(user_id, ()))

    async def ping(self) -> None:
        self._count("ping")

    async def close(self) -> None:
        return None


# Everything the Redis clients raise: redis-py's cluster errors (e.g. no reachable startup node, a slot
# no node serves) derive from RedisClusterException, which is not a RedisError.
_REDIS_FAILURES = (RedisError, RedisClusterException, OSError)


def _error_kind(exc: Exception) -> str:
    if isinstance(exc, RedisTimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, RedisConnectionError | OSError):
        return "connection"
    if isinstance(exc, ClusterError | RedisClusterException):  # CLUSTERDOWN, slot not covered, ...
        return "cluster"
    if isinstance(exc, ResponseError):
        return "response"
    return "other"


class RedisHistoryStore:
    """One Redis list per user at `<prefix>history:<user_id>`; RPUSH + LTRIM in one MULTI/EXEC.

    `cluster=True`: `url` is a startup node of a Redis Cluster (redis-py's asyncio cluster client finds
    the other nodes and routes each key to the master of its slot). Every Redis failure becomes
    StoreUnavailableError (counted by kind); the clients reconnect by themselves (and a cluster client
    refreshes its slot map) on the next operation once Redis is back.
    """

    backend = "redis"

    def __init__(
        self, url: str, prefix: str, max_len: int, timeout_s: float = 1.0,
        metrics: ServiceMetrics | None = None, *, cluster: bool = False,
    ) -> None:
        self.prefix = prefix
        self.max_len = max_len
        self._metrics = metrics
        self._label = "redis cluster" if cluster else "redis"
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "retry": Retry(ExponentialBackoff(cap=0.05, base=0.01), retries=1),
            "health_check_interval": 15,
        }
        self._client: aioredis.Redis | RedisCluster
        if cluster:
            try:
                self._client = RedisCluster.from_url(url, **options)
            except RedisClusterException as exc:  # e.g. a database other than 0 in the URL
                raise ValueError(f"{exc} (ELMREC_REDIS_CLUSTER=true)") from exc
        else:
            self._client = aioredis.Redis.from_url(url, **options)

    def key(self, user_id: str) -> str:
        return f"{self.prefix}history:{user_id}"

    def _count(self, op: str) -> None:
        if self._metrics is not None:
            self._metrics.store_operations.labels(op=op, backend=self.backend).inc()

    def _failure(self, op: str, exc: Exception) -> StoreUnavailableError:
        kind = _error_kind(exc)
        if self._metrics is not None:
            self._metrics.store_errors.labels(op=op, kind=kind).inc()
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return StoreUnavailableError(op, kind, f"{self._label} {kind} error on {op}: {detail}")

    async def append(self, user_id: str, items: Sequence[str]) -> int:
        self._count("append")
        key = self.key(user_id)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, *items)
                pipe.ltrim(key, -self.max_len, -1)
                pipe.llen(key)
                _, _, length = await pipe.execute()
        except _REDIS_FAILURES as exc:
            raise self._failure("append", exc) from exc
        return int(length)

    async def get(self, user_id: str) -> list[str]:
        self._count("get")
        try:
            values = await self._client.lrange(self.key(user_id), 0, -1)
        except _REDIS_FAILURES as exc:
            raise self._failure("get", exc) from exc
        return [str(v) for v in values]

    async def ping(self) -> None:
        self._count("ping")
        try:
            if isinstance(self._client, RedisCluster):  # every master: each holds a share of the users
                await self._client.ping(target_nodes=RedisCluster.PRIMARIES)
            else:
                await self._client.ping()
        except _REDIS_FAILURES as exc:
            raise self._failure("ping", exc) from exc

    async def close(self) -> None:
        await self._client.aclose()


def make_store(
    redis_url: str | None, prefix: str, max_len: int, timeout_s: float, metrics: ServiceMetrics | None,
    *, cluster: bool = False,
) -> HistoryStore:
    """Redis (a Redis Cluster with `cluster`) when a URL is given, else the in-process store."""
    if redis_url:
        return RedisHistoryStore(redis_url, prefix, max_len, timeout_s, metrics, cluster=cluster)
    return InMemoryHistoryStore(max_len, metrics)
