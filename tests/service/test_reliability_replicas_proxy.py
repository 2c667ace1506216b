"""Two api replicas behind the project's nginx proxy, for real, without a Docker engine.

nginx (Debian package `nginx`) runs the project's `docker/nginx/default.conf`, rendered so that its
upstream is two `python -m service` replicas on loopback ports instead of Docker's DNS name `api`; the
replicas share one Redis (a throwaway `redis-server`, own key prefix). A write through one replica is read
through the other; then one replica is killed (-9) during a bounded load through the proxy: the proxy
keeps answering, and every request sent after the kill is answered 200 (nginx retries it on the other
replica). Only requests in flight on the killed replica at the kill may fail: a POST nginx had already
sent is not resent (it could apply a write twice) and gets nginx's JSON 503, and an answer whose headers
nginx had already relayed is cut off.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from service_testkit import (
    REPO,
    free_port,
    new_user_id,
    require_program,
    serve_subprocess,
    stop_subprocess,
    wait_ready,
)

NGINX_CONF = REPO / "docker" / "nginx" / "default.conf"
UPSTREAM = "elmrec_api_replicas"
CLIENTS = 4             # concurrent clients of the bounded load
BEFORE_KILL_S = 1.5     # load before the kill
FAIL_TIMEOUT_S = 10     # nginx's default fail_timeout: how long a failed replica is left out


def render_proxy_conf(listen_port: int, replica_ports: list[int]) -> str:
    """The real `docker/nginx/default.conf` with the replicas named explicitly.

    In compose, `api` resolves (Docker DNS) to every replica and nginx balances over those addresses as
    one implicit upstream group (round robin, `max_fails=1`, `fail_timeout=10s`). Here the same group
    is an `upstream` block of loopback addresses with the same defaults; `listen` moves to a free
    loopback port. Everything else (timeouts, `proxy_next_upstream`, the JSON 503 page) is the file's.
    """
    conf = NGINX_CONF.read_text()
    replacements = {
        "listen 8000;": f"listen 127.0.0.1:{listen_port};",
        "set $elmrec_api http://api:8000;": f"set $elmrec_api http://{UPSTREAM};",
    }
    for old, new in replacements.items():
        assert conf.count(old) == 1, f"{NGINX_CONF} changed: expected `{old}` once"
        conf = conf.replace(old, new)
    servers = "".join(f"    server 127.0.0.1:{port};\n" for port in replica_ports)
    return f"upstream {UPSTREAM} {{\n{servers}}}\n\n{conf}"


@dataclass
class Nginx:
    folder: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def upstreams(self, at_least: int = 0) -> list[tuple[float, str]]:
        """(time, upstream addresses) of the proxied requests in the access log (`a, b`: a, then b).

        nginx logs a request just after it answered it: wait (2 s at most) for `at_least` of them.
        """
        deadline = time.monotonic() + 2
        while True:
            lines = (self.folder / "access.log").read_text().splitlines()
            found = (re.match(r"([\d.]+) \S+ \d+ \[([^\]]*)\]", line) for line in lines)
            proxied = [(float(m.group(1)), m.group(2)) for m in found
                       if m and m.group(2) != "-"]  # "-": answered by nginx itself
            if len(proxied) >= at_least or time.monotonic() > deadline:
                return proxied
            time.sleep(0.02)

    def error_log(self) -> str:
        return (self.folder / "error.log").read_text(errors="replace")[-3000:]


def start_nginx(folder: Path, replica_ports: list[int]) -> Nginx:
    binary = require_program("nginx", "nginx")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "default.conf").write_text(render_proxy_conf(port, replica_ports))
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers may write temp files in `folder`
    (folder / "nginx.conf").write_text(
        f"daemon off;\nworker_processes 1;\n{user}pid {folder}/nginx.pid;\n"
        f"error_log {folder}/error.log warn;\nevents {{ worker_connections 512; }}\n"
        "http {\n"
        "    log_format upstreams '$msec $request_method $status [$upstream_addr] [$upstream_status]';\n"
        f"    access_log {folder}/access.log upstreams;\n"
        + "".join(f"    {kind}_temp_path {folder}/{kind}_temp;\n"
                  for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        + f"    include {folder}/default.conf;\n}}\n")
    proc = subprocess.Popen([binary, "-p", str(folder), "-c", str(folder / "nginx.conf"),
                             "-e", str(folder / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    nginx = Nginx(folder, port, proc)
    deadline = time.monotonic() + 10
    while True:
        try:
            if httpx.get(f"{nginx.base}/nginx-health", timeout=1).status_code == 200:
                return nginx
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_subprocess(proc)
            pytest.fail(f"nginx did not start:\n{nginx.error_log()}")
        time.sleep(0.05)


@dataclass
class Replica:
    port: int
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture()
def replicas(
    service_bundle: Path, redis_server: str, redis_prefix: str, tmp_path: Path
) -> Iterator[list[Replica]]:
    """Two `python -m service` replicas sharing one Redis, started together."""
    require_program("nginx", "nginx")  # before the slow part
    started = []
    for i in range(2):
        port, log = free_port(), tmp_path / f"replica-{i}.log"
        proc = serve_subprocess(service_bundle, port, log, ELMREC_REDIS_URL=redis_server,
                                ELMREC_REDIS_PREFIX=redis_prefix, ELMREC_REDIS_TIMEOUT_S="0.5")
        started.append(Replica(port, log, proc))
    try:
        for replica in started:
            wait_ready(replica.proc, replica.base, replica.log)
        yield started
    finally:
        for replica in started:
            stop_subprocess(replica.proc)


@dataclass
class Outcome:
    start: float
    end: float
    method: str
    status: int  # 0: no HTTP answer at all
    body: str


async def _load(base: str, stop_at: float) -> list[Outcome]:
    """CLIENTS clients in a loop until `stop_at`: a write, a history read, a recommendation."""
    outcomes: list[Outcome] = []

    async def client_loop(client: httpx.AsyncClient, user: str) -> None:
        requests = [("POST", f"/users/{user}/interactions", {"items": ["3"]}),
                    ("GET", f"/users/{user}/history", None),
                    ("POST", "/recommend/sequential", {"user_id": user, "history": ["1", "2"], "k": 3})]
        n = 0
        while time.monotonic() < stop_at:
            method, path, body = requests[n % len(requests)]
            n += 1
            start = time.monotonic()
            try:
                response = await client.request(method, path, json=body)
                status, text = response.status_code, response.text
            except httpx.TransportError as exc:
                status, text = 0, repr(exc)
            outcomes.append(Outcome(start, time.monotonic(), method, status, text))

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await asyncio.gather(*(client_loop(client, new_user_id()) for _ in range(CLIENTS)))
    return outcomes


@pytest.mark.parametrize("after_kill_s", [
    pytest.param(3.0, id="3s-after-kill"),
    # nginx tries the dead replica again once fail_timeout has passed: still no failure
    pytest.param(FAIL_TIMEOUT_S + 2.0, id="past-fail-timeout", marks=pytest.mark.slow),
])
def test_replicas_behind_the_proxy_share_histories_and_survive_a_killed_replica(
    replicas: list[Replica], tmp_path: Path, after_kill_s: float
) -> None:
    first, second = replicas
    nginx = start_nginx(tmp_path / "nginx", [r.port for r in replicas])
    try:
        # a write through one replica is read through the other, and through the proxy
        user = new_user_id()
        written = httpx.post(f"{first.base}/users/{user}/interactions", json={"items": ["4", "5"]},
                             timeout=10)
        assert written.status_code == 200, written.text
        for base in (second.base, nginx.base, nginx.base):
            read = httpx.get(f"{base}/users/{user}/history", timeout=10)
            assert read.status_code == 200 and read.json()["items"] == ["4", "5"], (base, read.text)
        spread = {addresses for _, addresses in nginx.upstreams(at_least=2)}
        assert spread == {f"127.0.0.1:{r.port}" for r in replicas}, f"the proxy used {spread}"

        # bounded load through the proxy; one replica killed in the middle
        async def run() -> tuple[list[Outcome], float, float, float]:
            stop_at = time.monotonic() + BEFORE_KILL_S + after_kill_s
            load = asyncio.create_task(_load(nginx.base, stop_at))
            await asyncio.sleep(BEFORE_KILL_S)
            kill_at, kill_wall = time.monotonic(), time.time()
            first.proc.kill()
            await asyncio.to_thread(first.proc.wait)
            dead_at = time.monotonic()
            return await load, kill_at, dead_at, kill_wall

        outcomes, kill_at, dead_at, kill_wall = asyncio.run(run())
    finally:
        stop_subprocess(nginx.proc)

    failed = [o for o in outcomes if o.status != 200]
    window = max((o.end - kill_at for o in failed), default=0.0)
    after = [o for o in outcomes if o.start > dead_at]
    summary = {"requests": len(outcomes), "after_kill": len(after), "failed": len(failed),
               "failed_statuses": sorted((o.method, o.status) for o in failed),
               "kill_to_death_ms": round(1000 * (dead_at - kill_at), 1),
               "last_failure_after_kill_ms": round(1000 * window, 1)}
    print(summary)
    assert len(after) >= 10, summary  # the proxy kept answering after the kill
    # no 5xx (no failure at all) for a request sent once the replica was dead: nginx retried it on the
    # other one; before the kill every request was answered
    assert all(o.status == 200 for o in after), [(o.method, o.status, o.body[:120])
                                                 for o in after if o.status != 200]
    assert all(o.status == 200 for o in outcomes if o.end < kill_at), summary
    for o in failed:  # in flight at the kill, on the killed replica
        assert o.start <= dead_at, (o, summary)
        # nginx's JSON 503 (a POST it had sent: not resent), or the answer cut off (the replica died
        # after nginx had relayed its headers)
        assert (o.status == 503 and "api unavailable" in o.body) or o.status == 0, o
    # retried = tried on the dead replica, then answered by the live one: requests in flight at the kill
    # (GETs), and the first request after each fail_timeout (nginx tries the dead replica again)
    retried = [(at - kill_wall, addresses) for at, addresses in nginx.upstreams() if "," in addresses]
    print({"retried_s_after_kill": [round(at, 3) for at, _ in retried]})
    both = f"127.0.0.1:{first.port}, 127.0.0.1:{second.port}"
    assert all(addresses == both for _, addresses in retried), retried
    if after_kill_s > FAIL_TIMEOUT_S:
        assert any(at > FAIL_TIMEOUT_S for at, _ in retried), retried
