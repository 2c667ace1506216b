"""Service fixtures: settings on the tiny bundle, a shared TestClient, Redis access and a TCP proxy."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from model_store.bundle import Bundle, load_bundle
from service.app import create_app
from service.settings import Settings

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
MakeSettings = Callable[..., Settings]


def make_settings(bundle: Path, **overrides: Any) -> Settings:
    """Settings from the given values only (model_validate skips the ELMREC_* environment)."""
    values: dict[str, Any] = {"MODEL_DIR": bundle, "DEVICE": "cpu", "LOG_LEVEL": "WARNING", **overrides}
    return Settings.model_validate(values)


@pytest.fixture(scope="session")
def settings_for(tiny_bundle: Path) -> MakeSettings:
    def build(**overrides: Any) -> Settings:
        return make_settings(tiny_bundle, **overrides)

    return build


@pytest.fixture(scope="session")
def bundle(tiny_bundle: Path) -> Bundle:
    return load_bundle(tiny_bundle)


@pytest.fixture(scope="session")
def client(settings_for: MakeSettings) -> Iterator[TestClient]:
    """One app for the read-mostly tests (in-process store); tests that write use fresh user ids."""
    with TestClient(create_app(settings_for())) as test_client:
        yield test_client


def new_user_id() -> str:
    """A user id no bundle and no other test knows."""
    return f"test-user-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    """A TCP port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


@pytest.fixture()
def redis_prefix(redis_server: str) -> Iterator[str]:
    """A key prefix of this test's own; only the keys under it are deleted afterwards."""
    prefix = f"elmrec-test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_server)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture()
def sync_redis(redis_server: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server, decode_responses=True)
    yield client
    client.close()


class TcpProxy:
    """A TCP forwarder to Redis that can be cut and restored on the same port (to test reconnection)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=1)
            except OSError:
                downstream.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [downstream, upstream]
            threading.Thread(target=_pump, args=(downstream, upstream), daemon=True).start()
            threading.Thread(target=_pump, args=(upstream, downstream), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture()
def redis_proxy(redis_server: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy((REDIS_HOST, REDIS_PORT))
    proxy.start()
    yield proxy
    proxy.stop()
