"""One GPU window: train, full test evaluation, engine/serve benchmarks, ONNX CUDA parity, in one command.

Run through `benchmarks/gpu_window.sh [OUT]` (docs/PERFORMANCE.md, "GPU window", says how to launch it
on the lent GPU machine). Every stage is one existing command (`python -m training ...`,
`python -m benchmarks.<name> ...`) run in its own process group with its own time budget, clipped to
what is left of the window; a stage that fails or runs out of time is recorded and the next one runs.
Everything lands under OUT:

    OUT/summary.json        every stage: status (ok, failed, timeout, skipped), seconds, reason,
                            commands, the files it wrote, its log; plus device, command and date
    OUT/results/*.json      the result JSONs (each with device, command and date), named as in
                            benchmarks/results/ so they can be copied there as they are
    OUT/logs/<stage>.log    each stage's output
    OUT/bundle/             the trained bundle's config.json, metrics.json, curve.png, MANIFEST.sha256

PACK=1 packs results/, logs/ and bundle/ into OUT/gpu_window-<date>.tar.gz and removes the loose copies
(the device tool brings back at most 8 files). DRY=1 is the CPU rehearsal the test runs: tiny preset,
100 users, device cpu, budgets in seconds.

This module imports only the standard library: it runs before the carried wheels (pydantic among
them) are installed. `--probe` (run in a child process, after the install) is the one part that
imports torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = "data/beauty"  # tracked in git: it travels with the working tree
# in the order they run; GPU-only stages may be skipped with a reason, the others should be ok
STAGES = ("wheels", "probe", "train", "eval", "engine", "serve", "onnx-cuda", "eval-graph")
# seconds per stage: upper bounds, each clipped to what is left of the window
# (expected on an H200: train 1.5-2.5 min, eval about a minute, the others well under their caps; guesses)
BUDGETS: dict[str, float] = {"wheels": 60, "probe": 60, "train": 240, "eval": 150, "engine": 75,
                             "serve": 100, "onnx-cuda": 90, "eval-graph": 200}  # the last: what is left
# the CPU rehearsal's caps are loose: a shared 2-core machine can be several times oversubscribed
DRY_BUDGETS: dict[str, float] = {"wheels": 60, "probe": 120, "train": 240, "eval": 150, "engine": 150,
                                 "serve": 240, "onnx-cuda": 240, "eval-graph": 150}
CORE_MODULES = ("numpy", "scipy", "torch", "transformers", "tokenizers", "sentencepiece", "safetensors",
                "pydantic")
SERVE_MODULES = ("fastapi", "starlette", "uvicorn", "pydantic_settings", "redis", "httpx",
                 "prometheus_client")
PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "scipy", "pydantic", "pydantic-core",
            "pydantic-settings", "fastapi", "starlette", "uvicorn", "redis", "httpx", "prometheus-client",
            "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu")
WHEELS_HOWTO = "run benchmarks/gpu_wheels.sh here and carry .whl"
API_KEY = "gpu-window-key"
MIN_STAGE_S = 5.0  # a stage with less time than this left is skipped ("window exhausted")
PACK_RESERVE_S = 5.0  # kept back at the end of the window for summary.json and the pack
KILL_GRACE_S = 10.0


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Settings:
    """What a window runs with; every field comes from an environment variable (docs/PERFORMANCE.md)."""

    out: Path
    dry: bool
    preset: str
    device: str
    onnx_device: str
    limit_users: int | None
    train_minutes: float
    train_args: list[str]
    window_s: float
    budgets: dict[str, float]
    wheels: Path | None
    work: Path
    pack: bool
    engine_users: int
    onnx_users: int
    serve_levels: list[int]
    serve_seconds: float
    command: str
    python: str = sys.executable

    @classmethod
    def from_env(cls, out: str | None, env: dict[str, str]) -> Settings:
        dry = env.get("DRY", "0") not in ("", "0", "false", "no")
        target = out or env.get("OUT")
        if not target:
            raise SystemExit("gpu_window: give the output folder (argument OUT, or the OUT variable)")
        budgets = dict(DRY_BUDGETS if dry else BUDGETS)
        for name in STAGES:  # e.g. BUDGET_TRAIN=300, BUDGET_ONNX_CUDA=60
            value = env.get("BUDGET_" + name.upper().replace("-", "_"))
            if value:
                budgets[name] = float(value)
        wheels = env.get("WHEELS", "" if dry else ".whl")
        limit = env.get("LIMIT_USERS", "100" if dry else "")
        work = env.get("WORK") or tempfile.mkdtemp(prefix="elmrec-gpu-window-")
        shown = [f"{k}={shlex.quote(env[k])}" for k in sorted(env) if k in _KNOBS]
        entry = env.get("GPU_WINDOW_ENTRY", "python -m benchmarks.gpu_window")
        return cls(
            out=Path(target).resolve(),
            dry=dry,
            preset=env.get("PRESET") or ("tiny" if dry else "small"),
            device=env.get("DEVICE") or ("cpu" if dry else "cuda"),
            onnx_device=env.get("ONNX_DEVICE") or "cuda",
            limit_users=int(limit) if limit else None,
            train_minutes=float(env.get("TRAIN_MINUTES") or (0.5 if dry else 2.5)),
            train_args=shlex.split(env.get("TRAIN_ARGS", "")),
            window_s=float(env.get("WINDOW_S") or (1500 if dry else 570)),
            budgets=budgets,
            wheels=(ROOT / wheels) if wheels else None,
            work=Path(work).resolve(),
            pack=env.get("PACK", "0") not in ("", "0", "false", "no"),
            engine_users=int(env.get("ENGINE_USERS") or (3 if dry else 100)),
            onnx_users=int(env.get("ONNX_USERS") or (3 if dry else 50)),
            serve_levels=[int(c) for c in (env.get("SERVE_LEVELS") or ("1 2" if dry else "1 16 64")).split()],
            serve_seconds=float(env.get("SERVE_SECONDS") or (1 if dry else 5)),
            command=" ".join([*shown, entry, shlex.quote(str(target))]),
        )


_KNOBS = {"DRY", "PRESET", "DEVICE", "ONNX_DEVICE", "LIMIT_USERS", "TRAIN_MINUTES", "TRAIN_ARGS", "WINDOW_S",
          "WHEELS", "WORK", "PACK", "ENGINE_USERS", "ONNX_USERS", "SERVE_LEVELS", "SERVE_SECONDS",
          *(f"BUDGET_{s.upper().replace('-', '_')}" for s in STAGES)}


@dataclass
class Stage:
    """What one stage did; one entry of summary.json's `stages`."""

    name: str
    status: str = "pending"  # ok, failed, timeout, skipped
    seconds: float = 0.0
    budget_s: float = 0.0
    reason: str | None = None
    commands: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    log: str | None = None
    returncode: int | None = None
    log_tail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class StageFailed(Exception):
    """A stage's command failed or ran out of time: the status and the reason."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def model_kind(bundle: Path) -> str:
    """The bundle's model kind ("items" or "digits")."""
    return str(json.loads((bundle / "config.json").read_text())["model"].get("kind", "digits"))


class Skip(Exception):
    """A stage that cannot run here: the reason."""


class Window:
    """Runs the stages in order inside one time window and writes summary.json."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.start = time.monotonic()
        self.deadline = self.start + settings.window_s
        self.results = settings.out / "results"
        self.logs = settings.out / "logs"
        self.bundle = settings.work / "bundle"
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.probe: dict[str, Any] = {}
        self.stages: list[Stage] = []
        self.current: Stage | None = None
        self.stage_deadline = self.deadline

    # -- running commands ---------------------------------------------------------------------------
    def left(self) -> float:
        return self.stage_deadline - time.monotonic()

    def run(self, argv: list[str], label: str | None = None, check: bool = True) -> int:
        """Run one command in its own process group, output appended to the stage log, within the stage's
        time; on timeout the whole group is ended (SIGTERM, then SIGKILL)."""
        stage = self.current
        assert stage is not None and stage.log is not None
        stage.commands.append(shlex.join(argv))
        timeout = self.left()
        if timeout <= 1:
            raise StageFailed("timeout", f"no time left for {label or argv[2]}")
        with open(self.s.out / stage.log, "a") as log:
            log.write(f"$ {shlex.join(argv)}\n")
            log.flush()
            proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise StageFailed("timeout", f"{label or shlex.join(argv[:4])} passed the stage's "
                                  f"{stage.budget_s:.0f} s budget (or the window's end)") from None
            finally:  # on a timeout, and when this script is stopped (SIGTERM) mid-command
                stop_group(proc)
        stage.returncode = code
        if check and code != 0:
            raise StageFailed("failed", f"{label or shlex.join(argv[:4])} exited with {code}")
        return code

    def py(self, *args: str) -> list[str]:
        return [self.s.python, *args]

    # -- the window ---------------------------------------------------------------------------------
    def stage(self, name: str) -> None:
        stage = Stage(name, log=f"logs/{name}.log")
        log = self.s.out / f"logs/{name}.log"
        self.stages.append(stage)
        left = self.deadline - PACK_RESERVE_S - time.monotonic()
        stage.budget_s = round(min(self.s.budgets[name], max(left, 0.0)), 1)
        started = time.monotonic()
        before = self._result_files()
        print(f"[gpu_window] {name}: budget {stage.budget_s:.0f} s", flush=True)
        try:
            if left < MIN_STAGE_S:
                raise Skip(f"window exhausted ({self.s.window_s:.0f} s)")
            self.current, self.stage_deadline = stage, started + stage.budget_s
            log.write_text("")
            getattr(self, "stage_" + name.replace("-", "_"))(stage)
            stage.status = "ok"
        except Skip as why:
            stage.status, stage.reason = "skipped", str(why)
        except StageFailed as failure:
            stage.status, stage.reason = failure.status, str(failure)
        except Exception as exc:  # a bug of this script: recorded, and the window goes on
            stage.status, stage.reason = "failed", f"{type(exc).__name__}: {exc}"
        except SystemExit as exc:  # SIGTERM: the command's group is already stopped; record, then stop
            stage.status, stage.reason = "failed", f"the window was stopped (exit {exc.code})"
            stage.seconds = round(time.monotonic() - started, 2)
            raise
        finally:
            self.current = None
        stage.seconds = round(time.monotonic() - started, 2)
        stage.outputs = sorted({*stage.outputs, *(f"results/{p}" for p in self._result_files() - before)})
        if not log.exists() or not log.stat().st_size:
            log.unlink(missing_ok=True)
            stage.log = None
        elif stage.status in ("failed", "timeout"):
            stage.log_tail = log.read_text(errors="replace")[-2000:]
        print(f"[gpu_window] {name}: {stage.status} in {stage.seconds:.1f} s"
              + (f" ({stage.reason})" if stage.reason else ""), flush=True)
        if stage.log_tail:
            print("\n".join("    " + line for line in stage.log_tail.splitlines()[-12:]), flush=True)
        self.write_summary()

    def _result_files(self) -> set[str]:
        return {p.name for p in self.results.glob("*")} if self.results.is_dir() else set()

    def go(self) -> dict[str, Any]:
        for folder in (self.s.out, self.results, self.logs, self.s.work):
            folder.mkdir(parents=True, exist_ok=True)
        self.started_iso = now_iso()
        print(f"[gpu_window] {self.s.command}\n[gpu_window] out {self.s.out}, work {self.s.work}, "
              f"window {self.s.window_s:.0f} s", flush=True)
        previous = signal.signal(signal.SIGTERM, _terminated)  # children are stopped, summary written
        try:
            for name in STAGES:
                self.stage(name)
        finally:
            signal.signal(signal.SIGTERM, previous)
            summary = self.write_summary(final=True)
            print(table(summary), flush=True)
            if self.s.pack:
                print(f"[gpu_window] packed {pack(self.s.out)}", flush=True)
        return summary

    def write_summary(self, final: bool = False) -> dict[str, Any]:
        p = self.probe
        summary = {
            "benchmark": "gpu_window",
            "device": p.get("device", "unknown (probe did not run)"),
            "device_kind": self.s.device,
            "command": self.s.command,
            "date": today(),
            "started": getattr(self, "started_iso", now_iso()),
            "finished": now_iso() if final else None,
            "seconds": round(time.monotonic() - self.start, 2),
            "window_s": self.s.window_s,
            "dry": self.s.dry,
            "preset": self.s.preset,
            "limit_users": self.s.limit_users,
            "git_commit": os.environ.get("GIT_COMMIT") or git_commit(),
            "environment": {k: p.get(k) for k in ("python", "torch", "cuda", "transformers", "packages",
                                                   "onnxruntime_providers") if k in p},
            "stages": [st.as_dict() for st in self.stages],
        }
        path = self.s.out / "summary.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
        os.replace(tmp, path)
        return summary

    # -- the stages ---------------------------------------------------------------------------------
    def stage_wheels(self, stage: Stage) -> None:
        folder = self.s.wheels
        if folder is None:
            raise Skip("DRY=1 uses this machine's installed packages (WHEELS=DIR installs a wheel folder)")
        wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
        if not wheels:
            raise Skip(f"no wheels in {folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder}: "
                       f"the installed packages are used ({WHEELS_HOWTO} for the serving packages)")
        site = self.s.work / "site"
        self.run(self.py("-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                         "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)),
                 "pip install of the carried wheels")
        self.env["PYTHONPATH"] = os.pathsep.join(x for x in (str(site), self.env.get("PYTHONPATH")) if x)
        stage.reason = f"{len(wheels)} wheels into {site}: " + ", ".join(w.name.split("-")[0] for w in wheels)

    def stage_probe(self, _stage: Stage) -> None:
        path = self.results / f"env-{self.s.device}-{today()}.json"
        self.run(self.py("-m", "benchmarks.gpu_window", "--probe", str(path), "--device", self.s.device,
                         "--command", self.s.command), "the environment probe")
        self.probe = json.loads(path.read_text())
        missing = self.probe["missing_core"]
        if missing:
            raise StageFailed("failed", f"missing {', '.join(missing)}: every stage needs them "
                                        f"({WHEELS_HOWTO})")
        if self.s.device == "cuda" and not self.probe["cuda_available"]:
            raise StageFailed("failed", "DEVICE=cuda but torch sees no CUDA device")

    def stage_train(self, stage: Stage) -> None:
        self._needs_core()
        argv = self.py("-m", "training", "train", "--data", DATA, "--preset", self.s.preset, "--out",
                       str(self.bundle), "--max-minutes", f"{self.s.train_minutes:g}",
                       "--device", self.s.device)
        if self.s.limit_users:
            argv += ["--limit-users", str(self.s.limit_users)]
        self.run(argv + self.s.train_args, "training")
        metrics = json.loads((self.bundle / "metrics.json").read_text())
        config = json.loads((self.bundle / "config.json").read_text())
        keep = self.s.out / "bundle"
        keep.mkdir(exist_ok=True)
        for name in ("config.json", "metrics.json", "curve.png", "MANIFEST.sha256"):
            if (self.bundle / name).is_file():
                shutil.copy2(self.bundle / name, keep / name)
                stage.outputs.append(f"bundle/{name}")
        result = {
            "benchmark": "train",
            "device": metrics.get("direct", {}).get("device") or self.probe.get("device"),
            "preset": config.get("preset"),
            "dataset": config.get("dataset", {}).get("name"),
            "limit_users": self.s.limit_users,
            "model_version": config.get("model_version"),
            "metrics": metrics,
            "command": stage.commands[-1],
            "date": today(),
        }
        name = f"train-{self.s.preset}-{self.s.device}-{today()}.json"
        (self.results / name).write_text(json.dumps(result, indent=2) + "\n")

    def stage_eval(self, _stage: Stage) -> None:
        self._needs_bundle()
        self.run(self.py("-m", "benchmarks.eval_speed", "--bundle", str(self.bundle), "--device",
                         self.s.device, "--json", "--out-dir", str(self.results)),
                 "full test evaluation (T5 alone)")

    def stage_engine(self, _stage: Stage) -> None:
        self._needs_bundle()
        self._needs_digits("engine vs generate")
        self.run(self.py("-m", "benchmarks.engine", "--bundle", str(self.bundle), "--device", self.s.device,
                         "--users", str(self.s.engine_users), *self._dry_batches(), "--json", "--out-dir",
                         str(self.results)), "engine vs generate")

    def stage_onnx_cuda(self, _stage: Stage) -> None:
        self._needs_bundle()
        self._needs_digits("the ONNX backend")
        device = self.s.onnx_device
        if device == "cuda" and not self.probe.get("cuda_available"):
            raise Skip("GPU-only: torch sees no CUDA device here (ONNX_DEVICE=cpu runs the CPU provider)")
        why = self.probe.get("onnx_missing", {}).get(device, f"not probed for {device}")
        if why:
            raise Skip(f"ONNX Runtime cannot run on {device}: {why}"
                       + (" (onnxruntime-gpu is a 256 MB wheel, over the device tool's 64 MiB carry limit; "
                          "gpu_wheels.sh ORT_GPU=1 fetches it)" if device == "cuda" else ""))
        self.run(self.py("-m", "benchmarks.engine", "--bundle", str(self.bundle), "--device", device,
                         "--backend", "onnx", "--users", str(self.s.onnx_users), *self._dry_batches(),
                         "--json", "--out-dir", str(self.results)), "ONNX Runtime parity and speed")

    def stage_serve(self, stage: Stage) -> None:
        self._needs_bundle()
        missing = self.probe.get("missing_serve", [])
        if missing:
            raise Skip(f"serving packages missing: {', '.join(missing)} ({WHEELS_HOWTO})")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = dict(self.env, ELMREC_MODEL_DIR=str(self.bundle), ELMREC_DEVICE=self.s.device,
                   ELMREC_API_KEY=API_KEY, ELMREC_HOST="127.0.0.1", ELMREC_PORT=str(port),
                   ELMREC_LOG_LEVEL="WARNING")
        env.pop("ELMREC_REDIS_URL", None)  # the in-process history store: no Redis on the device machine
        argv = self.py("-m", "service")
        stage.commands.append("ELMREC_MODEL_DIR=<bundle> ELMREC_DEVICE=" + self.s.device
                              + f" ELMREC_PORT={port} ... " + shlex.join(argv))
        assert stage.log is not None
        service_log = self.s.out / "logs" / "serve-service.log"
        with open(service_log, "w") as log:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        stage.outputs.append("logs/serve-service.log")
        try:
            wait_ready(url, proc, self.stage_deadline)
            for task in ("direct", "sequential"):
                self.run(self.py("-m", "benchmarks.serve", "--url", url, "--api-key", API_KEY, "--bundle",
                                 str(self.bundle), "--task", task, "--concurrency",
                                 *map(str, self.s.serve_levels), "--duration", f"{self.s.serve_seconds:g}",
                                 "--json", "--out-dir", str(self.results)), f"served load ({task})")
        finally:
            stop_group(proc)

    def stage_eval_graph(self, _stage: Stage) -> None:
        self._needs_bundle()
        self.run(self.py("-m", "benchmarks.eval_speed", "--bundle", str(self.bundle), "--device",
                         self.s.device, "--graph", "--json", "--out-dir", str(self.results)),
                 "full test evaluation (as served, graph ensemble)")

    def _needs_core(self) -> None:
        if not self.probe:
            raise Skip("the probe did not run")
        if self.probe.get("missing_core"):
            raise Skip(f"missing {', '.join(self.probe['missing_core'])} ({WHEELS_HOWTO})")
        if self.s.device == "cuda" and not self.probe.get("cuda_available"):
            raise Skip("DEVICE=cuda but torch sees no CUDA device")

    def _needs_bundle(self) -> None:
        self._needs_core()
        if not (self.bundle / "config.json").is_file():
            train = next((st for st in self.stages if st.name == "train"), None)
            raise Skip(f"no bundle (train {train.status if train else 'did not run'})")


    def _needs_digits(self, what: str) -> None:
        """Stages that measure the digit-id engine's beam search (an items bundle ranks in one pass)."""
        if model_kind(self.bundle) != "digits":
            raise Skip(f"{what} measures the digit-id kind's beam search; this bundle's model kind is "
                       f"{model_kind(self.bundle)!r} (exact one-pass ranking: see the eval and serve stages)")
    def _dry_batches(self) -> list[str]:
        return ["--batch-users", "4", "--batched-users", "8"] if self.s.dry else []


# -- helpers ------------------------------------------------------------------------------------------
def _terminated(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """End a process group this script started (SIGTERM, then SIGKILL after a grace period)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[Any], deadline: float) -> None:
    """Poll GET /health/ready until it answers 200; fail when the service exits or time runs out."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StageFailed("failed", f"the service exited with {proc.returncode} before it was ready "
                              "(logs/serve-service.log)")
        with contextlib.suppress(urllib.error.URLError, OSError), \
                urllib.request.urlopen(f"{url}/health/ready", timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.5)
    raise StageFailed("timeout", "the service was not ready within the stage's budget")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def pack(out: Path) -> Path:
    """results/, logs/, bundle/ and summary.json into one tarball; the loose folders are removed."""
    archive = out / f"gpu_window-{today()}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("summary.json", "results", "logs", "bundle"):
            if (out / name).exists():
                tar.add(out / name, arcname=name)
    for name in ("results", "logs", "bundle"):
        shutil.rmtree(out / name, ignore_errors=True)
    return archive


def record(folder: Path, dest: Path) -> list[Path]:
    """Copy a window's result JSONs (from its tarball, or its results/ folder) into `dest`, and its
    summary.json as `gpu_window-<device kind>-<date>.json`; returns the files written."""
    summary = json.loads((folder / "summary.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    archives = sorted(folder.glob("gpu_window-*.tar.gz"))
    if archives:
        with tarfile.open(archives[-1]) as tar:
            for member in tar.getmembers():
                path = Path(member.name)
                if member.isfile() and path.parent == Path("results") and path.suffix == ".json":
                    source = tar.extractfile(member)
                    assert source is not None
                    (dest / path.name).write_bytes(source.read())
                    written.append(dest / path.name)
    else:
        for path in sorted((folder / "results").glob("*.json")):
            shutil.copyfile(path, dest / path.name)
            written.append(dest / path.name)
    target = dest / f"gpu_window-{summary['device_kind']}-{summary['date']}.json"
    target.write_text(json.dumps(summary, indent=2) + "\n")
    return [*written, target]


def table(summary: dict[str, Any]) -> str:
    lines = [f"gpu_window on {summary['device']} ({summary['date']}, {summary['seconds']:.0f} s of "
             f"{summary['window_s']:.0f}): {summary['command']}",
             f"  {'stage':<11} {'status':<8} {'seconds':>8} {'budget':>7}  outputs / reason"]
    for st in summary["stages"]:
        note = st.get("reason") or ", ".join(Path(o).name for o in st.get("outputs", []))
        lines.append(f"  {st['name']:<11} {st['status']:<8} {st['seconds']:8.1f} {st['budget_s']:7.0f}  "
                     f"{note}")
    return "\n".join(lines)


# -- the probe (a child process, after the wheels are installed) --------------------------------------
def probe(path: Path, device: str, command: str) -> dict[str, Any]:
    """The environment of this window: device, versions, what is importable, ONNX Runtime's providers."""

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    def missing(names: tuple[str, ...]) -> list[str]:
        return [n for n in names if importlib.util.find_spec(n) is None]

    result: dict[str, Any] = {"benchmark": "env", "device": f"cpu ({os.cpu_count()} cores)",
                              "device_kind": device, "command": command, "date": today(),
                              "python": sys.version.split()[0], "executable": sys.executable,
                              "cpu_count": os.cpu_count(), "pythonpath": os.environ.get("PYTHONPATH"),
                              "packages": {n: version(n) for n in PACKAGES},
                              "missing_core": missing(CORE_MODULES), "missing_serve": missing(SERVE_MODULES),
                              "cuda_available": False}
    if importlib.util.find_spec("torch") is not None:
        import torch

        result.update(torch=torch.__version__, cuda=torch.version.cuda,
                      cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            result.update(device=torch.cuda.get_device_name(0),
                          gpu_memory_gib=round(props.total_memory / 2**30, 1),
                          gpu_count=torch.cuda.device_count(),
                          compute_capability=f"{props.major}.{props.minor}")
    if importlib.util.find_spec("transformers") is not None:
        import transformers

        result["transformers"] = transformers.__version__
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        result["onnxruntime_providers"] = onnxruntime.get_available_providers()
    if not result["missing_core"]:
        from model_store.onnx_backend import missing_onnx

        result["onnx_missing"] = {d: missing_onnx(d) for d in ("cpu", "cuda")}
    smi = shutil.which("nvidia-smi")
    if smi:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            result["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_window", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", default=None, help="output folder (default: the OUT variable)")
    p.add_argument("--record", type=Path, default=None, metavar="FOLDER",
                   help="copy the results of a finished window (the folder holding its summary.json and "
                        "tarball, e.g. the device tool's files_at) into --results, then stop")
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help=argparse.SUPPRESS)
    p.add_argument("--probe", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    p.add_argument("--command", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.record is not None:
        for path in record(args.record, args.results):
            print(f"wrote {path}")
        return 0
    if args.probe is not None:
        probe(args.probe, args.device, args.command)
        return 0
    summary = Window(Settings.from_env(args.out, dict(os.environ))).go()
    return 0 if all(st["status"] in ("ok", "skipped") for st in summary["stages"]) else 1


if __name__ == "__main__":
    sys.exit(main())
