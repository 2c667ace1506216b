"""Helpers of the service tests: settings without the environment, fresh ids, free ports, required
programs, a TCP proxy."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings

MakeSettings = Callable[..., Settings]


def make_settings(bundle: Path, **overrides: Any) -> Settings:
    """Settings from the given values only (model_validate skips the ELMREC_* environment)."""
    values: dict[str, Any] = {"MODEL_DIR": bundle, "DEVICE": "cpu", "LOG_LEVEL": "WARNING", **overrides}
    return Settings.model_validate(values)


def new_user_id() -> str:
    """A user id no bundle and no other test knows."""
    return f"test-user-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    """A TCP port that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def on_ci() -> bool:
    """CI=true (set by CI systems and by `.ci/run`): a test that needs a program must not skip."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_program(name: str, package: str) -> str:
    """The path of the program `name`; without it a skip naming its Debian package (a failure on CI)."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), "/usr/sbin", "/sbin"])  # nginx: sbin
    path = shutil.which(name, path=search)
    if path is None:
        message = f"`{name}` is not installed (Debian package `{package}`; `.ci/run` installs it)"
        if on_ci():
            pytest.fail(f"{message}: under CI=true this test must run, not skip", pytrace=False)
        pytest.skip(message)
    return path


def assert_acknowledged_writes_kept(
    user: str, stored: Sequence[str], acked: Sequence[str], refused: int
) -> None:
    """Every write answered 200 is in `stored`, in order; extra items only from `refused` (503) attempts
    (a write Redis applied but could not acknowledge before it died)."""
    remaining = iter(stored)
    assert all(item in remaining for item in acked), f"{user}: an acknowledged write was lost"
    assert len(acked) <= len(stored) <= len(acked) + refused, (
        f"{user}: {len(stored)} stored, {len(acked)} acknowledged, {refused} refused")


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


