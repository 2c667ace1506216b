"""Service fixtures: settings on the tiny bundle, a shared TestClient, Redis access and a TCP proxy."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from service_testkit import REDIS_HOST, REDIS_PORT, MakeSettings, TcpProxy, make_settings

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


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The real Redis at 127.0.0.1:6379, or a skip saying it is not there."""
    client = redis.Redis(REDIS_HOST, REDIS_PORT, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis tests need a Redis server at {REDIS_HOST}:{REDIS_PORT} ({exc})")
    finally:
        client.close()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


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
    proxy = TcpProxy((REDIS_HOST, REDIS_PORT))
    proxy.start()
    yield proxy
    proxy.stop()
