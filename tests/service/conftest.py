"""Service fixtures: settings on the tiny bundle, a shared TestClient, Redis servers of the tests' own
(`redis_servers.py`), Redis access and a TCP proxy."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from fastapi.testclient import TestClient
from redis_servers import RedisClusterServers, RedisServer
from service_testkit import MakeSettings, TcpProxy, make_settings

from model_store.bundle import Bundle, load_bundle
from service.app import create_app
from service.settings import Settings
from training.trainer import RunSpec, train


@pytest.fixture(scope="session")
def service_bundle(tiny_items_bundle: Path) -> Path:
    """The bundle the service tests serve: the default model kind (items)."""
    return tiny_items_bundle


@pytest.fixture(scope="session")
def settings_for(service_bundle: Path) -> MakeSettings:
    def build(**overrides: Any) -> Settings:
        return make_settings(service_bundle, **overrides)

    return build


@pytest.fixture(scope="session")
def bundle(service_bundle: Path) -> Bundle:
    return load_bundle(service_bundle)


@pytest.fixture(scope="session")
def shipped_bundle(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A tiny bundle trained as the shipped presets are: graph prior (Ω + item co-occurrence) tuned on
    validation. (The session's tiny bundle has the tiny preset's prior off, i.e. serves the T5 alone.)"""
    out = tmp_path_factory.mktemp("bundles") / "tiny-prior"
    return load_bundle(train(RunSpec(data=tiny_data, preset="tiny", out=out, device="cpu", epochs=3,
                                     overrides={"graph_prior": True, "graph_cooc": True})))


@pytest.fixture(scope="session")
def client(settings_for: MakeSettings) -> Iterator[TestClient]:
    """One app for the read-mostly tests (in-process store); tests that write use fresh user ids."""
    with TestClient(create_app(settings_for())) as test_client:
        yield test_client


TEST_REDIS_URL = "ELMREC_TEST_REDIS_URL"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of the Redis the tests share (each test under its own key prefix).

    `ELMREC_TEST_REDIS_URL` names one (it must answer); otherwise a throwaway `redis-server` runs on
    a free loopback port for the session.
    """
    given = os.environ.get(TEST_REDIS_URL, "").strip()
    if given:
        with contextlib.closing(redis.Redis.from_url(given, socket_connect_timeout=1, socket_timeout=1)) as c:
            try:
                c.ping()
            except redis.RedisError as exc:
                pytest.fail(f"{TEST_REDIS_URL}={given} does not answer: {exc}", pytrace=False)
        yield given
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.kill()


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A `redis-server` of this test's own, AOF fsynced on every write (to kill and restart it)."""
    server = RedisServer(tmp_path / "redis", aof=True)
    server.start()
    yield server
    server.kill()


@contextlib.contextmanager
def running_cluster(folder: Path) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(folder, masters=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.kill()


@pytest.fixture()
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A 3-master Redis Cluster of this test's own on loopback, AOF fsynced on every write (to kill nodes)."""
    with running_cluster(tmp_path / "cluster") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def shared_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A 3-master Redis Cluster the session shares (each test under its own key prefix; never killed)."""
    with running_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@contextlib.contextmanager
def own_prefix(url: str) -> Iterator[str]:
    """A fresh key prefix; afterwards only the keys under it are deleted."""
    prefix = f"elmrec-test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture()
def redis_prefix(redis_server: str) -> Iterator[str]:
    """A key prefix of this test's own."""
    with own_prefix(redis_server) as prefix:
        yield prefix


@pytest.fixture(scope="module")
def module_redis_prefix(redis_server: str) -> Iterator[str]:
    """A key prefix of this test module's own."""
    with own_prefix(redis_server) as prefix:
        yield prefix


@pytest.fixture()
def sync_redis(redis_server: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    yield client
    client.close()


@pytest.fixture()
def redis_proxy(redis_server: str) -> Iterator[TcpProxy]:
    target = urlsplit(redis_server)
    proxy = TcpProxy((target.hostname or "localhost", target.port or 6379))
    proxy.start()
    yield proxy
    proxy.stop()
