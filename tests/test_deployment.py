"""Deployment files, checked statically (no Docker engine needed).

docker-compose.yml and its CPU override, docker/Dockerfile and .dockerignore, the Prometheus config
and rules, the Grafana provisioning and dashboard, the nginx entry point, .env.example, and the
container scripts in docker/ (entrypoint, healthcheck, requirements extraction), which run for real.

Metric names: every `elmrec_*` name that the dashboard or the alert rules use must be one of the
names the service is specified to expose, and must have a series in the real /metrics output of the
service (built on the tiny bundle) from its first scrape on, before any other request. The config
and the rules pass `promtool check` (the Debian `prometheus` package; skipped without it outside CI).
"""

from __future__ import annotations

import fnmatch
import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
DOCKERFILE = DOCKER / "Dockerfile"
PROMETHEUS = DOCKER / "prometheus" / "prometheus.yml"
ALERTS = DOCKER / "prometheus" / "alerts.yml"
GRAFANA = DOCKER / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "elmrec.json"
NGINX = DOCKER / "nginx" / "default.conf"
ENV_EXAMPLE = ROOT / ".env.example"

# The metric families the service exposes (issue 4 / the deployment brief), with their kinds.
SERVICE_METRICS: dict[str, str] = {
    "elmrec_request_duration_seconds": "histogram",  # route, method, status
    "elmrec_requests_in_flight": "gauge",
    "elmrec_inference_batch_size": "histogram",  # task
    "elmrec_queue_wait_seconds": "histogram",  # task
    "elmrec_inference_duration_seconds": "histogram",  # task
    "elmrec_history_store_operations_total": "counter",  # op, backend
    "elmrec_history_store_errors_total": "counter",  # op, kind
    "elmrec_fallbacks_total": "counter",  # kind
    "elmrec_model_info": "gauge",  # version, preset, device, backend
    "elmrec_requests_shed_total": "counter",  # task, reason
    "elmrec_queue_depth": "gauge",  # task
}
SERVICE_LABELS: dict[str, set[str]] = {
    "elmrec_request_duration_seconds": {"route", "method", "status"},
    "elmrec_inference_batch_size": {"task"},
    "elmrec_queue_wait_seconds": {"task"},
    "elmrec_inference_duration_seconds": {"task"},
    "elmrec_history_store_operations_total": {"op", "backend"},
    "elmrec_history_store_errors_total": {"op", "kind"},
    "elmrec_fallbacks_total": {"kind"},
    "elmrec_model_info": {"version", "preset", "device", "backend"},
    "elmrec_requests_shed_total": {"task", "reason"},
    "elmrec_queue_depth": {"task"},
}
REQUIRED_SERVICES = {"api", "redis", "prometheus", "grafana", "trainer"}


# --------------------------------------------------------------------------------------------
# helpers


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that understands Compose's merge-control tags (!reset, !override)."""


def _compose_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)  # type: ignore[arg-type]
    return {"__compose_tag__": suffix, "value": value}


_ComposeLoader.add_multi_constructor("!", _compose_tag)


def load_yaml(path: Path) -> Any:
    with path.open() as fh:
        return yaml.load(fh, Loader=_ComposeLoader)  # a SafeLoader subclass


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return dict(compose["services"])


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


_DEFAULT = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+)(?::?-(?P<default>[^}]*))?\}$")


def resolve(value: Any) -> Any:
    """`${VAR:-default}` -> default (what compose uses with no .env); anything else unchanged."""
    if isinstance(value, str):
        m = _DEFAULT.match(value)
        if m:
            return m.group("default") or ""
    return value


def interpolate(text: str) -> str:
    """Every `${VAR:-default}` in `text` replaced by its default."""
    return re.sub(r"\$\{[A-Z0-9_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", text)


def env_of(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        out: dict[str, Any] = {}
        for item in env:
            key, _, val = str(item).partition("=")
            out[key] = val if "=" in str(item) else None
        return out
    return {k: resolve(v) for k, v in env.items()}


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every short-syntax or long-syntax volume."""
    out = []
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            parts = vol.split(":")
            out.append((parts[0], parts[1]))
        else:
            out.append((str(vol.get("source")), str(vol["target"])))
    return out


def healthcheck_cmd(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, list) else ["CMD-SHELL", test]


def load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def entrypoint() -> ModuleType:
    return load_module("elmrec_docker_entrypoint", DOCKER / "entrypoint.py")


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    return load_module("elmrec_docker_healthcheck", DOCKER / "healthcheck.py")


# --------------------------------------------------------------------------------------------
# docker-compose.yml


def test_compose_has_the_services(services: dict[str, Any]) -> None:
    assert set(services) >= REQUIRED_SERVICES
    for name in ("api", "trainer"):
        build = services[name]["build"]
        assert build["dockerfile"] == "docker/Dockerfile"
        assert build["context"] == "."
    assert services["api"]["build"]["target"] == "api"
    assert services["trainer"]["build"]["target"] == "trainer"


def test_api_is_scalable_behind_the_proxy(services: dict[str, Any]) -> None:
    api = services["api"]
    # --scale api=N: no fixed host port, no fixed container name; reached through the proxy
    assert "ports" not in api, "a published api port would collide with --scale api=N"
    assert "container_name" not in api
    assert "8000" in [str(p) for p in api.get("expose", [])]
    proxy = services["proxy"]
    assert [interpolate(p) for p in proxy["ports"]] == ["0.0.0.0:8000:8000"]
    sources = [s for s, _ in volume_mounts(proxy)]
    assert "./docker/nginx/default.conf" in sources


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    for name in ("api", "redis", "prometheus", "grafana", "proxy"):
        assert "healthcheck" in services[name], name
        cmd = healthcheck_cmd(services[name])
        assert cmd[0] in ("CMD", "CMD-SHELL") and len(cmd) > 1, name
    assert healthcheck_cmd(services["redis"])[1:] == ["redis-cli", "ping"]
    assert healthcheck_cmd(services["api"])[1:] == ["python", "/app/docker/healthcheck.py"]
    assert "/-/ready" in " ".join(healthcheck_cmd(services["prometheus"]))
    assert "/api/health" in " ".join(healthcheck_cmd(services["grafana"]))
    # the api may train its first bundle before it serves: the start period must allow for it
    start = str(services["api"]["healthcheck"]["start_period"])
    assert start.endswith("m") and int(start[:-1]) >= 20


def test_volumes(compose: dict[str, Any], services: dict[str, Any]) -> None:
    named = set(compose["volumes"])
    assert {"model_store", "redis_data", "prometheus_data", "grafana_data"} <= named
    assert ("model_store", "/models") in volume_mounts(services["api"])
    assert ("model_store", "/models") in volume_mounts(services["trainer"])
    assert ("redis_data", "/data") in volume_mounts(services["redis"])
    assert ("prometheus_data", "/prometheus") in volume_mounts(services["prometheus"])
    assert ("grafana_data", "/var/lib/grafana") in volume_mounts(services["grafana"])
    for name, service in services.items():
        for source, _ in volume_mounts(service):
            if source.startswith((".", "/")):  # bind mount: must exist in the repository
                assert (ROOT / source).resolve().exists(), f"{name}: {source} does not exist"
            else:
                assert source in named, f"{name}: volume {source} is not declared"


def test_bundle_location_is_on_the_shared_volume(services: dict[str, Any]) -> None:
    api_env, trainer_env = env_of(services["api"]), env_of(services["trainer"])
    assert api_env["ELMREC_MODEL_DIR"] == trainer_env["ELMREC_MODEL_DIR"] == "/models/beauty"
    assert api_env["TRAIN_DATA"] == trainer_env["TRAIN_DATA"] == "/app/data/beauty"
    assert api_env["TRAIN_PRESET"] == "small"
    assert api_env["AUTO_TRAIN"] == "1"
    assert api_env["ELMREC_PORT"] == "8000"
    assert api_env["ELMREC_REDIS_URL"] == "redis://redis:6379/0"
    # service settings without a value are passed only when set in .env / the shell
    for key in ("ELMREC_API_KEY", "ELMREC_MAX_BATCH", "ELMREC_MAX_WAIT_MS", "ELMREC_LOG_LEVEL"):
        assert key in api_env and api_env[key] is None, key
    # secrets of other services do not leak into the api
    assert not any(k.startswith("GF_") or k.startswith("GRAFANA") for k in api_env)


def _gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return list(service["deploy"]["resources"]["reservations"]["devices"])


def test_api_reserves_a_gpu(services: dict[str, Any]) -> None:
    for name in ("api", "trainer"):
        devices = _gpu_devices(services[name])
        assert len(devices) == 1, name
        device = devices[0]
        assert device["driver"] == "nvidia"
        assert "gpu" in device["capabilities"]
        assert device.get("count") in (1, "all") or device.get("device_ids"), name


def test_redis_is_official_and_persistent(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert re.fullmatch(r"redis:\d+(\.\d+)*(-alpine|-bookworm)?", redis["image"]), redis["image"]
    cmd = [str(c) for c in redis["command"]]
    assert cmd[0] == "redis-server"
    flags = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] == "everysec"
    assert "ports" not in redis, "Redis has no password: it must stay on the internal network"


def test_api_waits_for_redis_and_the_optional_trainer(services: dict[str, Any]) -> None:
    deps = services["api"]["depends_on"]
    assert deps["redis"]["condition"] == "service_healthy"
    # trainer is in the `train` profile; the api waits for it only when that profile is active
    assert deps["trainer"]["condition"] == "service_completed_successfully"
    assert deps["trainer"]["required"] is False
    trainer = services["trainer"]
    assert trainer["profiles"] == ["train"]
    assert str(trainer["restart"]) == "no"


def test_no_service_runs_training_twice_by_default(services: dict[str, Any]) -> None:
    # without a profile only the api can train; it does so under a lock (see the entrypoint tests)
    default = {name for name, s in services.items() if not s.get("profiles")}
    assert default == {"api", "redis", "prometheus", "grafana", "proxy"}


def test_compose_build_defaults_match_the_dockerfile(compose: dict[str, Any]) -> None:
    args = {k: resolve(v) for k, v in compose["services"]["api"]["build"]["args"].items()}
    text = DOCKERFILE.read_text()
    for key in ("BASE_IMAGE", "TORCH_INDEX_URL", "EXTRAS"):
        m = re.search(rf"^ARG {key}=(\S+)$", text, re.M)
        assert m, key
        assert args[key] == m.group(1), key


# --------------------------------------------------------------------------------------------
# docker-compose.cpu.yml


def test_cpu_override_drops_the_gpu_and_forces_cpu() -> None:
    override = load_yaml(COMPOSE_CPU)
    for name in ("api", "trainer"):
        service = override["services"][name]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices == {"__compose_tag__": "reset", "value": []}, name
        assert service["environment"]["ELMREC_DEVICE"] == "cpu"
        args = service["build"]["args"]
        assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")
        assert args["BASE_IMAGE"] == "ubuntu:24.04"
        assert service["image"].endswith(":cpu")


def _docker_compose() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


@pytest.mark.parametrize("files", [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.cpu.yml"]])
def test_docker_compose_config_accepts_the_files(files: list[str]) -> None:
    """The real Compose parser (no engine needed), where one is installed."""
    cli = _docker_compose()
    if cli is None:
        pytest.skip("no `docker compose` / `docker-compose` on PATH: checked structurally only")
    args = [*cli, "--project-directory", str(ROOT)]
    for f in files:
        args += ["-f", str(ROOT / f)]
    result = subprocess.run([*args, "--profile", "train", "config", "--format", "json"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    merged = json.loads(result.stdout)
    for name in ("api", "trainer"):
        reservations = merged["services"][name].get("deploy", {}).get("resources", {}).get("reservations", {})
        gpu = reservations.get("devices", [])
        assert bool(gpu) == (len(files) == 1), name
    plain = subprocess.run([*args, "config", "--services"], capture_output=True, text=True, cwd=ROOT)
    assert plain.returncode == 0, plain.stderr  # trainer's profile off: depends_on is not required
    assert "trainer" not in plain.stdout.split()


# --------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


def dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined), in order."""
    stages: dict[str, list[str]] = {}
    current: list[str] | None = None
    logical = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        logical += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", logical, re.I)
        if m:
            name = m.group(2) or f"stage{len(stages)}"
            current = stages.setdefault(name, [])
            current.append(logical)
        elif current is not None:
            current.append(logical)
        logical = ""
    return stages


def stage_chain(stages: dict[str, list[str]], name: str) -> list[str]:
    """The stage and the stages it is built FROM, nearest first."""
    chain = [name]
    while True:
        parent = stages[chain[-1]][0].split()[1]
        if parent not in stages:
            return chain
        chain.append(parent)


def test_dockerfile_is_multi_stage_with_api_and_trainer_targets() -> None:
    stages = dockerfile_stages()
    assert {"base", "builder", "runtime", "trainer", "api"} <= set(stages)
    assert list(stages)[-1] == "api", "the default target (last stage) must be the api"
    runtime = " ".join(stages["runtime"])
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert stage_chain(stages, "api") == ["api", "runtime", "base"]
    assert stage_chain(stages, "trainer") == ["trainer", "runtime", "base"]


def test_dockerfile_runtime_has_no_build_tools() -> None:
    stages = dockerfile_stages()
    builder = " ".join(stages["builder"])
    assert "build-essential" in builder  # compilers exist, but only in the builder
    for name in stage_chain(stages, "api") + stage_chain(stages, "trainer"):
        text = " ".join(stages[name])
        for tool in ("build-essential", "gcc", "g++", "python3.12-dev", "make ", "cmake", "curl", "wget"):
            assert tool not in text, f"{tool} in stage {name}"
        assert "--from=builder" in text or name != "runtime"


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    stages = dockerfile_stages()
    users = [i.split()[1] for i in stages["runtime"] if i.startswith("USER ")]
    assert users, "runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid not in ("root", "0")
    assert not any(i.startswith("USER ") for n in ("api", "trainer") for i in stages[n])
    health = [i for i in stages["api"] if i.startswith("HEALTHCHECK")]
    assert len(health) == 1 and "/app/docker/healthcheck.py" in health[0]
    assert "--start-period=" in health[0]
    assert any(i == 'CMD ["serve"]' for i in stages["api"])
    assert any(i == 'CMD ["train"]' for i in stages["trainer"])
    assert any(i.startswith("EXPOSE 8000") for i in stages["api"])
    entry = [i for i in stages["runtime"] if i.startswith("ENTRYPOINT")]
    assert entry == ['ENTRYPOINT ["python", "/app/docker/entrypoint.py"]']


def test_dockerfile_torch_matches_the_project_pin_and_the_cuda_base() -> None:
    text = DOCKERFILE.read_text()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if d.replace(" ", "").startswith("torch=="))
    version = pin.split("==")[1]
    assert re.search(rf"^ARG TORCH_VERSION={re.escape(version)}$", text, re.M)
    assert 'pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in text
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    index = re.search(r"^ARG TORCH_INDEX_URL=(\S+)$", text, re.M)
    assert base and index
    m = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu24\.04", base.group(1))
    assert m, base.group(1)
    assert index.group(1) == f"https://download.pytorch.org/whl/cu{m.group(1)}{m.group(2)}"


def dockerignore_patterns() -> list[tuple[bool, str]]:
    out = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    return out


def dockerignored(path: str) -> bool:
    """Docker's rule, simplified: last matching pattern wins; a pattern also covers what is under it."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for negate, pattern in dockerignore_patterns():
        pat = pattern[3:] if pattern.startswith("**/") else pattern
        candidates = prefixes if not pattern.startswith("**/") else [
            "/".join(parts[i: j + 1]) for i in range(len(parts)) for j in range(i, len(parts))]
        if any(fnmatch.fnmatchcase(c, pat) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_junk_and_secrets_out() -> None:
    for path in (".git", ".git/config", "runs", "runs/small1.log", "bundles", "bundles/x/config.json",
                 ".pytest_cache", ".mypy_cache", ".ruff_cache", "model_store/__pycache__/x.pyc",
                 "tests", ".env", ".venv", "checkpoints", "b.ckpt/state.json", ".hypothesis"):
        assert dockerignored(path), path


def test_dockerignore_keeps_what_the_build_copies() -> None:
    needed = ["pyproject.toml", "README.md", "model_store/bundle.py",
              "model_store/assets/t5_tokenizer/spiece.model", "training/cli.py", "service/__init__.py",
              "data/beauty/sequential_data.txt.gz", "docker/entrypoint.py", "docker/healthcheck.py",
              "docker/pyproject_requirements.py"]
    for path in needed:
        assert not dockerignored(path), path
    # every COPY source of the Dockerfile (from the context) exists and is not ignored
    for stage in dockerfile_stages().values():
        for instr in stage:
            if instr.startswith("COPY ") and "--from=" not in instr:
                for src in instr.split()[1:-1]:
                    if src == ".":
                        continue
                    assert (ROOT / src).exists(), src
                    assert not dockerignored(src), src


# --------------------------------------------------------------------------------------------
# docker/ scripts: requirements, healthcheck, entrypoint


def test_pyproject_requirements_lists_deps_and_extras() -> None:
    module = load_module("elmrec_docker_requirements", DOCKER / "pyproject_requirements.py")
    reqs = module.requirements(ROOT / "pyproject.toml", ["serve", "train"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    expected = project["dependencies"] + project["optional-dependencies"]["serve"] \
        + project["optional-dependencies"]["train"]
    assert reqs == list(dict.fromkeys(expected))
    assert not any(r.startswith("pytest") for r in reqs)
    with pytest.raises(SystemExit):
        module.requirements(ROOT / "pyproject.toml", ["nope"])


def test_pyproject_requirements_expands_self_references(tmp_path: Path) -> None:
    module = load_module("elmrec_docker_requirements", DOCKER / "pyproject_requirements.py")
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "Demo_Pkg"\ndependencies = ["a>=1"]\n'
        '[project.optional-dependencies]\nx = ["b"]\nall = ["demo-pkg[x]", "c", "a>=1"]\n')
    assert module.requirements(tmp_path / "pyproject.toml", ["all"]) == ["a>=1", "b", "c"]


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b'{"status":"ok"}' if self.status == 200 else b'{"detail":"bundle not loaded"}'
        code = self.status if self.path == "/health/ready" else 404
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def ready_server() -> Iterator[tuple[int, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"status": 200})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_follows_health_ready(healthcheck: ModuleType, ready_server: tuple[int, Any],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    port, handler = ready_server
    monkeypatch.delenv("HEALTHCHECK_URL", raising=False)
    monkeypatch.setenv("ELMREC_PORT", str(port))
    assert healthcheck.main() == 0
    handler.status = 503
    assert healthcheck.main() == 1
    ok, detail = healthcheck.check(f"http://127.0.0.1:{port}/health/ready")
    assert not ok and "503" in detail and "bundle not loaded" in detail


def test_healthcheck_fails_when_nothing_listens(healthcheck: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                                ready_server: tuple[int, Any]) -> None:
    port, _ = ready_server
    monkeypatch.setenv("HEALTHCHECK_URL", f"http://127.0.0.1:{port}/not-there")
    assert healthcheck.main() == 1
    monkeypatch.setenv("HEALTHCHECK_URL", "http://127.0.0.1:1/health/ready")
    assert healthcheck.main() == 1
    assert "http://127.0.0.1:{port}/health/ready" in (DOCKER / "healthcheck.py").read_text()


def _fake_trainer(model_dir: Path, calls: list[list[str]], delay: float = 0.0, rc: int = 0,
                  write: bool = True) -> Any:
    def run(cmd: list[str]) -> int:
        calls.append(cmd)
        time.sleep(delay)
        if write and rc == 0:
            model_dir.mkdir(parents=True, exist_ok=True)
            (model_dir / "config.json").write_text(json.dumps({"model_version": f"v{len(calls)}"}))
        return rc
    return run


def test_entrypoint_trains_a_missing_bundle_once(entrypoint: ModuleType, tmp_path: Path) -> None:
    model_dir = tmp_path / "models" / "beauty"
    calls: list[list[str]] = []
    env = {"TRAIN_DATA": "/app/data/beauty", "ELMREC_DEVICE": "cuda"}
    run = _fake_trainer(model_dir, calls)
    assert entrypoint.ensure_bundle(model_dir, env, allow_train=True, runner=run) == 0
    assert entrypoint.ensure_bundle(model_dir, env, allow_train=True, runner=run) == 0
    assert len(calls) == 1
    cmd = calls[0]
    assert cmd[1:4] == ["-m", "training", "train"]
    assert cmd[cmd.index("--data") + 1] == "/app/data/beauty"
    assert cmd[cmd.index("--preset") + 1] == "small"
    assert cmd[cmd.index("--out") + 1] == str(model_dir)
    assert cmd[cmd.index("--device") + 1] == "cuda"
    assert "--resume" in cmd
    # TRAIN_FORCE: retrains although present, from scratch
    assert entrypoint.ensure_bundle(model_dir, env, allow_train=True, force=True, runner=run) == 0
    assert len(calls) == 2 and "--resume" not in calls[1]


def test_entrypoint_refuses_or_reports_failures(entrypoint: ModuleType, tmp_path: Path) -> None:
    model_dir = tmp_path / "beauty"
    calls: list[list[str]] = []
    assert entrypoint.ensure_bundle(model_dir, {}, allow_train=False,
                                    runner=_fake_trainer(model_dir, calls)) == entrypoint.EX_CONFIG
    assert calls == []
    assert entrypoint.ensure_bundle(model_dir, {}, allow_train=True,
                                    runner=_fake_trainer(model_dir, calls, rc=2)) == 2
    assert entrypoint.ensure_bundle(model_dir, {}, allow_train=True,
                                    runner=_fake_trainer(model_dir, calls, write=False)) == 1
    assert not (model_dir / "config.json").exists()


def test_entrypoint_lock_lets_exactly_one_container_train(entrypoint: ModuleType, tmp_path: Path) -> None:
    """api replicas and the trainer starting together on an empty volume: one trains, all succeed."""
    model_dir = tmp_path / "models" / "beauty"
    calls: list[list[str]] = []
    run = _fake_trainer(model_dir, calls, delay=0.3)
    results: list[int] = []

    def replica() -> None:
        results.append(entrypoint.ensure_bundle(model_dir, {}, allow_train=True, runner=run))

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == [0, 0, 0, 0]
    assert len(calls) == 1
    assert entrypoint.lock_path(model_dir) == tmp_path / "models" / ".beauty.lock"


def test_entrypoint_train_command_options(entrypoint: ModuleType) -> None:
    env = {"TRAIN_PRESET": "tiny", "TRAIN_MAX_MINUTES": "2.5", "TRAIN_EXTRA_ARGS": "--seed 3 --epochs 1",
           "TRAIN_DEVICE": "cpu", "ELMREC_DEVICE": "cuda", "TRAIN_DATA": "/data/x"}
    cmd = entrypoint.train_command(Path("/models/x"), env)
    assert cmd[cmd.index("--max-minutes") + 1] == "2.5"
    assert cmd[cmd.index("--device") + 1] == "cpu"  # TRAIN_DEVICE wins over ELMREC_DEVICE
    assert cmd[-4:] == ["--seed", "3", "--epochs", "1"]
    defaults = entrypoint.train_command(Path("/models/x"), {"TRAIN_MAX_MINUTES": ""})
    assert "--max-minutes" not in defaults
    assert defaults[defaults.index("--device") + 1] == "auto"


def test_entrypoint_command_is_accepted_by_the_training_cli(entrypoint: ModuleType) -> None:
    from training.cli import parser

    cmd = entrypoint.train_command(Path("/models/beauty"), {
        "TRAIN_MAX_MINUTES": "8", "TRAIN_EXTRA_ARGS": "--seed 1", "ELMREC_DEVICE": "auto"})
    args = parser().parse_args(cmd[3:])
    assert args.command == "train" and args.resume and args.max_minutes == 8.0
    assert args.data == "/app/data/beauty" and args.out == "/models/beauty" and args.preset == "small"


def test_entrypoint_signal_forwarding_runner(entrypoint: ModuleType) -> None:
    assert entrypoint.run_forwarding_signals([sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert entrypoint.run_forwarding_signals(
        [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"]) == 143


def test_entrypoint_main_modes(entrypoint: ModuleType, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = tmp_path / "beauty"
    env = {"ELMREC_MODEL_DIR": str(model_dir), "AUTO_TRAIN": "0"}
    assert entrypoint.main(["serve"], env) == entrypoint.EX_CONFIG  # no bundle, may not train
    execs: list[list[str]] = []
    monkeypatch.setattr(entrypoint.os, "execvp", lambda file, args: execs.append(list(args)))
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    entrypoint.main(["serve", "--flag"], env)
    assert execs[-1] == [sys.executable, "-m", "service", "--flag"]
    entrypoint.main(["python", "-m", "training", "evaluate"], env)
    assert execs[-1] == ["python", "-m", "training", "evaluate"]
    assert entrypoint.main(["train"], env) == 0  # present: nothing to do


@pytest.mark.slow
def test_entrypoint_trains_a_real_bundle(tiny_data: Path, tmp_path: Path) -> None:
    """The container's `train` command end to end (tiny preset, synthetic data, CPU)."""
    model_dir = tmp_path / "models" / "beauty"
    env = {"PATH": "/usr/bin:/bin", "ELMREC_MODEL_DIR": str(model_dir), "TRAIN_DATA": str(tiny_data),
           "TRAIN_PRESET": "tiny", "ELMREC_DEVICE": "cpu", "TRAIN_EXTRA_ARGS": "--epochs 1",
           "PYTHONPATH": str(ROOT)}
    first = subprocess.run([sys.executable, str(DOCKER / "entrypoint.py"), "train"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert (model_dir / "config.json").is_file()
    second = subprocess.run([sys.executable, str(DOCKER / "entrypoint.py"), "train"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "bundle present" in second.stderr


# --------------------------------------------------------------------------------------------
# Prometheus


def test_prometheus_scrapes_every_api_replica(services: dict[str, Any]) -> None:
    config = load_yaml(PROMETHEUS)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api = jobs["elmrec-api"]
    assert api.get("metrics_path", "/metrics") == "/metrics"
    assert api.get("scheme", "http") == "http"
    targets: set[str] = set()
    for sd in api.get("dns_sd_configs", []):
        assert sd["type"] == "A"
        targets |= {f"{name}:{sd['port']}" for name in sd["names"]}
    for static in api.get("static_configs", []):
        targets |= set(static["targets"])
    assert targets == {"api:8000"}
    # the config and its rules are mounted where the config says
    mounts = dict(volume_mounts(services["prometheus"]))
    assert mounts["./docker/prometheus"] == "/etc/prometheus"
    for rule_file in config.get("rule_files", []):
        assert (PROMETHEUS.parent / Path(rule_file).relative_to("/etc/prometheus")).is_file()
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]


def _promtool() -> str:
    """The promtool binary; in CI (CI set, as .ci/run does) its absence fails, elsewhere it skips."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (.ci/run installs the Debian `prometheus` package)")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus); CI runs this check")
    return found


def test_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True,
                           timeout=60)
    assert rules.returncode == 0, rules.stdout + rules.stderr
    # the config names its rule files where compose mounts docker/prometheus: point it at this checkout's
    config = load_yaml(PROMETHEUS)
    config["rule_files"] = [str(PROMETHEUS.parent / Path(f).relative_to("/etc/prometheus"))
                            for f in config.get("rule_files", [])]
    assert config["rule_files"], "prometheus.yml loads no rule file"
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    checked = subprocess.run([promtool, "check", "config", str(local)], capture_output=True, text=True,
                             timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules_of(ALERTS))} rules found" in checked.stdout + checked.stderr
    # and the check does fail on a broken rule
    broken = tmp_path / "broken.yml"
    broken_rule = {"alert": "Broken", "expr": "sum(up"}
    broken.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [broken_rule]}]}))
    assert subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True,
                          timeout=60).returncode != 0


def rules_of(path: Path) -> list[dict[str, Any]]:
    return [r for g in load_yaml(path)["groups"] for r in g["rules"]]


def test_alert_rules_are_well_formed() -> None:
    rules = rules_of(ALERTS)
    assert rules
    for rule in rules:
        assert rule["alert"] and rule["expr"] and rule["labels"]["severity"] in ("warning", "critical")
        assert _balanced(rule["expr"]), rule["alert"]


# --------------------------------------------------------------------------------------------
# Grafana


def test_grafana_provisioning_matches_the_stack(services: dict[str, Any], dashboard: dict[str, Any]) -> None:
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert len(datasources) == 1
    ds = datasources[0]
    assert ds["type"] == "prometheus" and ds["isDefault"] is True
    assert ds["url"] == "http://prometheus:9090"
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "elmrec.yml")["providers"]
    mounts = dict(volume_mounts(services["grafana"]))
    assert mounts["./docker/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_target = mounts["./docker/grafana/dashboards"]
    assert [p["options"]["path"] for p in providers] == [dashboards_target]
    assert DASHBOARD.parent == GRAFANA / "dashboards"
    home = env_of(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_target}/{DASHBOARD.name}"
    # every datasource reference of the dashboard is the provisioned one
    for panel in dashboard["panels"]:
        for ref in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
            if ref is not None:
                assert ref == {"type": "prometheus", "uid": ds["uid"]}, panel["title"]


def _balanced(expr: str) -> bool:
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for ch in re.sub(r'"[^"]*"', '""', expr):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack


def test_dashboard_is_valid_and_every_panel_has_a_query(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        targets = panel.get("targets", [])
        assert targets, f"panel {panel['title']!r} has no query"
        assert len({t["refId"] for t in targets}) == len(targets)
        for target in targets:
            expr = target.get("expr", "")
            assert expr.strip(), f"panel {panel['title']!r} has an empty query"
            assert _balanced(expr), expr


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        exprs.append(query["query"] if isinstance(query, dict) else str(query or ""))
    return exprs


def test_dashboard_shows_what_operators_need(dashboard: dict[str, Any]) -> None:
    exprs = dashboard_exprs(dashboard)
    joined = "\n".join(exprs)
    # request rate
    assert re.search(r"sum by \(route\) \(rate\(elmrec_request_duration_seconds_count", joined)
    # p50/p95/p99 latency per route from the histogram buckets
    for q in ("0.5", "0.95", "0.99"):
        assert re.search(rf"histogram_quantile\({q}, sum by \(route, le\) "
                         r"\(rate\(elmrec_request_duration_seconds_bucket", joined), q
    # error rate on 4xx/5xx
    assert 'status=~"5..|4.."' in joined
    for name in ("elmrec_inference_batch_size_bucket", "elmrec_queue_wait_seconds_bucket",
                 "elmrec_fallbacks_total", "elmrec_history_store_errors_total", "elmrec_requests_shed_total",
                 "elmrec_queue_depth"):
        assert name in joined, name
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for word in ("request rate", "latency", "error", "batch size", "queue wait", "fallbacks", "redis", "shed",
                 "queue depth"):
        assert word in titles, word


# --------------------------------------------------------------------------------------------
# metric names: dashboard + alerts vs the service


METRIC_NAME = re.compile(r"\belmrec_[A-Za-z0-9_:]+")
LABEL_USE = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)|\{([^}]*)\}")


def used_metric_names(dashboard: dict[str, Any]) -> set[str]:
    exprs = dashboard_exprs(dashboard)
    exprs += [r["expr"] for r in rules_of(ALERTS)]
    return {m for e in exprs for m in METRIC_NAME.findall(e)}


def family_of(name: str) -> str | None:
    """The specified metric family a series name belongs to (histogram suffixes stripped)."""
    if name in SERVICE_METRICS:
        return name
    for suffix in ("_bucket", "_count", "_sum"):
        base = name.removesuffix(suffix)
        if base != name and SERVICE_METRICS.get(base) == "histogram":
            return base
    return None


def exposed_series_names(metrics_text: str) -> set[str]:
    """Every series name a Prometheus text exposition declares or contains."""
    names: set[str] = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            names.add(family)
            if kind == "histogram":
                names |= {f"{family}_bucket", f"{family}_count", f"{family}_sum"}
            elif kind == "summary":
                names |= {f"{family}_count", f"{family}_sum"}
            elif kind == "counter" and not family.endswith("_total"):
                names.add(f"{family}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def test_dashboard_metric_names_are_the_services(dashboard: dict[str, Any]) -> None:
    used = used_metric_names(dashboard)
    assert used, "no elmrec_* metric found in the dashboard"
    unknown = sorted(n for n in used if family_of(n) is None)
    assert not unknown, f"not exposed by the service: {unknown}"
    families = {family_of(n) for n in used}
    missing = set(SERVICE_METRICS) - families
    assert not missing, f"the dashboard does not use {sorted(missing)}"


def test_dashboard_labels_are_the_services(dashboard: dict[str, Any]) -> None:
    allowed = set().union(*SERVICE_LABELS.values()) | {"le", "job", "instance"}
    for expr in dashboard_exprs(dashboard):
        for by, selector in LABEL_USE.findall(expr):
            labels = [lab.strip() for lab in by.split(",")] if by else [
                re.split(r"[=!~]", part, maxsplit=1)[0].strip() for part in selector.split(",")]
            for label in filter(None, labels):
                assert label in allowed, f"{label!r} in {expr}"


def test_metric_name_check_on_a_reference_exposition(dashboard: dict[str, Any]) -> None:
    """The exposition parser, on what prometheus_client writes for the specified metrics."""
    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    kinds = {"histogram": prometheus_client.Histogram, "gauge": prometheus_client.Gauge,
             "counter": prometheus_client.Counter}
    for name, kind in SERVICE_METRICS.items():
        kinds[kind](name, name, sorted(SERVICE_LABELS.get(name, set())), registry=registry)
    text = prometheus_client.generate_latest(registry).decode()
    exposed = exposed_series_names(text)
    assert used_metric_names(dashboard) <= exposed
    assert "elmrec_request_duration_seconds_bucket" in exposed
    assert "elmrec_fallbacks_total" in exposed
    # and it does catch a name that is not there
    assert "elmrec_request_seconds_bucket" not in exposed


def sampled_series_names(metrics_text: str) -> set[str]:
    """Names of the series that have a sample line (a `# TYPE` line alone is no series: Prometheus
    would show "No data")."""
    return {re.split(r"[{\s]", line, maxsplit=1)[0] for line in metrics_text.splitlines()
            if line and not line.startswith("#")}


def test_dashboard_metric_names_exist_in_the_services_metrics(
        dashboard: dict[str, Any], tiny_items_bundle: Path) -> None:
    """The real /metrics of the service on a tiny bundle of the default kind (in-process store, CPU)."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    settings = Settings.model_validate({"MODEL_DIR": tiny_items_bundle, "DEVICE": "cpu",
                                        "LOG_LEVEL": "WARNING"})
    with TestClient(create_app(settings)) as client:
        fresh = client.get("/metrics")  # the first scrape: no request served before it
        client.get("/health/live")
        client.get("/health/ready")
        client.post("/recommend/sequential", json={"user_id": "1", "k": 5})
        response = client.get("/metrics")
    assert fresh.status_code == 200 and response.status_code == 200
    # every series a panel or an alert reads exists from the start (at 0), not from its first event
    missing_at_start = sorted(used_metric_names(dashboard) - sampled_series_names(fresh.text))
    assert not missing_at_start, f"no series on a fresh /metrics for {missing_at_start}"
    exposed = exposed_series_names(response.text)
    missing = sorted(used_metric_names(dashboard) - exposed)
    assert not missing, f"the dashboard/alerts use metrics that /metrics does not expose: {missing}"
    assert set(SERVICE_METRICS) <= {family_of(n) for n in exposed if family_of(n)}


# --------------------------------------------------------------------------------------------
# nginx entry point, .env.example, docs


def test_proxy_forwards_to_the_api_service(services: dict[str, Any]) -> None:
    conf = NGINX.read_text()
    assert re.search(r"^\s*resolver 127\.0\.0\.11\b", conf, re.M), "Docker's DNS re-resolves replicas"
    assert "set $elmrec_api http://api:8000;" in conf
    assert "proxy_pass $elmrec_api;" in conf
    assert re.search(r"^\s*listen 8000;", conf, re.M)
    assert "8000" in [str(p) for p in services["api"]["expose"]]
    assert services["proxy"]["depends_on"]["api"]["condition"] == "service_started"


def _env_example_keys() -> set[str]:
    keys = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            keys.add(m.group(1))
    return keys


def test_env_example_documents_every_setting() -> None:
    documented = _env_example_keys()
    compose_text = COMPOSE.read_text() + COMPOSE_CPU.read_text()
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))
    passed_through = set(re.findall(r"^\s+(ELMREC_[A-Z_]+):\s*$", COMPOSE.read_text(), re.M))
    assert interpolated - documented == set()
    assert passed_through - documented == set()
    spec = {"MODEL_DIR", "REDIS_URL", "API_KEY", "DEVICE", "BACKEND", "MAX_BATCH", "MAX_WAIT_MS",
            "MAX_CANDIDATES", "HISTORY_MAX_LEN", "RERANK_EXTRA", "LOG_LEVEL", "REDIS_PREFIX"}
    assert {f"ELMREC_{s}" for s in spec} <= documented
    entry = (DOCKER / "entrypoint.py").read_text()
    for key in documented:
        assert key in compose_text or key in entry, f".env.example documents unused {key}"
    # the api key must not be set to a value in the example
    assert not re.search(r"^ELMREC_API_KEY=", ENV_EXAMPLE.read_text(), re.M)


def test_deployment_doc_covers_compose_scale_out_and_gpu() -> None:
    doc = (ROOT / "docs" / "DEPLOYMENT.md").read_text()
    for needle in ("docker compose up", "docker-compose.cpu.yml", "--scale api=", "--profile train",
                   "nvidia-ctk", "/health/ready", "AUTO_TRAIN"):
        assert needle in doc, needle
