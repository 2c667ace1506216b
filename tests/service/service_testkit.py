"""Helpers of the service tests: settings without the environment, fresh ids, free ports, required
programs, `python -m service` in a subprocess, a TCP proxy."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from service.settings import Settings

MakeSettings = Callable[..., Settings]
REPO = Path(__file__).resolve().parents[2]


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


def serve_subprocess(
    bundle: Path, port: int, log: Path | None = None, **extra: str
) -> subprocess.Popen[bytes]:
    """`python -m service` on 127.0.0.1:`port` in a fresh interpreter, CPU, without the caller's ELMREC_*
    variables; its output is piped, or written to `log`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELMREC_")}
    env.update(ELMREC_MODEL_DIR=str(bundle), ELMREC_PORT=str(port), ELMREC_HOST="127.0.0.1",
               ELMREC_DEVICE="cpu", ELMREC_LOG_LEVEL="warning", PYTHONPATH=str(REPO), **extra)

    def start(output: int | IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "service"], cwd=REPO, env=env,
                                stdout=output, stderr=subprocess.STDOUT)

    if log is None:
        return start(subprocess.PIPE)
    with log.open("wb") as output:  # the child keeps its own descriptor
        return start(output)


def wait_ready(
    proc: subprocess.Popen[bytes], base: str, log: Path | None = None, timeout_s: float = 180
) -> None:
    """Until `base`/health/ready answers 200 (a fresh interpreter imports torch: slow on a busy 2-core
    machine); a failure with the service's output if it exits first or is not ready in time."""
    def output() -> str:
        if log is not None:
            return log.read_text(errors="replace")[-4000:]
        return proc.stdout.read().decode(errors="replace") if proc.stdout and proc.poll() is not None else ""

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the service exited before it was ready:\n{output()}")
        try:
            if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the service at {base} was not ready within {timeout_s:.0f} s:\n{output()}")


def stop_subprocess(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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


