"""The GPU window script rehearsed on the CPU (DRY=1: tiny preset, 100 users): every stage runs or says why
not, every result JSON names its device, command and date; a slow or failing stage does not stop the rest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from benchmarks import gpu_window
from benchmarks.gpu_window import STAGES, Settings, Stage, Window

ROOT = Path(__file__).resolve().parents[2]
GPU_ONLY = {"onnx-cuda"}  # may be skipped on a CPU, with a reason
EXPECTED = {"env", "train-tiny", "eval_speed", "eval_speed-graph", "engine", "serve-direct",
            "serve-sequential"}


def _wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel, to rehearse the --no-index install of the carried wheels."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "gwprobe-0.1-py3-none-any.whl"
    files = {"gwprobe/__init__.py": "VALUE = 42\n",
             "gwprobe-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: gwprobe\nVersion: 0.1\n",
             "gwprobe-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                            "Tag: py3-none-any\n"}
    record = "".join(f"{name},,\n" for name in files) + "gwprobe-0.1.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in {**files, "gwprobe-0.1.dist-info/RECORD": record}.items():
            z.writestr(name, text)
    return folder


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float, str]:
    """One DRY=1 window on the CPU (about a minute of CPU time): OUT, WORK, wall seconds, output."""
    base = tmp_path_factory.mktemp("gpu_window")
    out, work = base / "out", base / "work"
    env = dict(os.environ, DRY="1", OMP_NUM_THREADS="1", WHEELS=str(_wheel(base / "wheels")), WORK=str(work),
               PYTHON=sys.executable)
    env.pop("OUT", None)
    started = time.monotonic()
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_window.sh"), str(out)], env=env,
                          capture_output=True, text=True, timeout=1800)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out, work, seconds, done.stdout


def _summary(out: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


def test_every_stage_ok_or_skipped_with_reason(dry_run: tuple[Path, Path, float, str]) -> None:
    out, _, _, stdout = dry_run
    summary = _summary(out)
    stages = {st["name"]: st for st in summary["stages"]}
    assert [st["name"] for st in summary["stages"]] == list(STAGES)
    for name, st in stages.items():
        if name in GPU_ONLY and st["status"] == "skipped":
            assert st["reason"], name
        else:
            assert st["status"] == "ok", (name, st.get("reason"), st.get("log_tail"))
        assert st["seconds"] >= 0 and st["budget_s"] > 0
        for rel in st.get("outputs", []):
            assert (out / rel).is_file(), (name, rel)
        if st.get("log"):
            assert (out / st["log"]).is_file()
    assert "CUDA" in stages["onnx-cuda"]["reason"] or stages["onnx-cuda"]["status"] == "ok"
    assert stages["train"]["commands"][0].split()[1:5] == ["-m", "training", "train", "--data"]
    train = stages["train"]["commands"][0]
    assert "--max-minutes" in train and "--limit-users" in train
    assert summary["dry"] is True and summary["preset"] == "tiny" and summary["device_kind"] == "cpu"
    assert summary["device"].startswith("cpu") and summary["date"] and summary["finished"]
    assert summary["command"].startswith("DRY=1 ") and "benchmarks/gpu_window.sh" in summary["command"]
    assert "stage" in stdout and "eval-graph" in stdout.splitlines()[-1]  # the table is printed last


def test_result_jsons_carry_device_command_date(dry_run: tuple[Path, Path, float, str]) -> None:
    out, _, _, _ = dry_run
    files = sorted((out / "results").glob("*.json"))
    date = _summary(out)["date"]
    assert {f.name.removesuffix(f"-cpu-{date}.json") for f in files} == EXPECTED
    for f in files:
        result = json.loads(f.read_text())
        assert result["device"].startswith("cpu"), f.name
        assert result["command"] and result["date"] == date, f.name
    evaluation = json.loads((out / "results" / f"eval_speed-cpu-{date}.json").read_text())
    assert evaluation["users"] == evaluation["all_test_users"] == 100  # the whole (limited) test split
    for task in ("direct", "sequential"):
        assert set(evaluation[f"{task}_metrics"]) >= {"hr@5", "ndcg@5", "hr@10", "ndcg@10"}
    train = json.loads((out / "results" / f"train-tiny-cpu-{date}.json").read_text())
    assert train["metrics"]["direct"]["users"] == 100 and train["command"].split()[1:3] == ["-m", "training"]


def test_carried_wheels_are_installed_for_every_stage(dry_run: tuple[Path, Path, float, str]) -> None:
    out, work, _, _ = dry_run
    wheels = next(st for st in _summary(out)["stages"] if st["name"] == "wheels")
    assert wheels["status"] == "ok" and "gwprobe" in wheels["reason"]
    assert (work / "site" / "gwprobe" / "__init__.py").is_file()
    env = json.loads(next((out / "results").glob("env-*.json")).read_text())
    assert str(work / "site") in env["pythonpath"].split(os.pathsep)
    assert env["missing_core"] == [] and env["missing_serve"] == []


def test_dry_run_duration(dry_run: tuple[Path, Path, float, str]) -> None:
    out, _, seconds, _ = dry_run
    # the budgets bound it; on an idle 2-core machine it takes about a minute and a half
    assert _summary(out)["seconds"] <= seconds < 1500


def test_pack_leaves_few_files(dry_run: tuple[Path, Path, float, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(dry_run[0], out)
    archive = gpu_window.pack(out)
    assert sorted(p.name for p in out.rglob("*")) == sorted(["summary.json", archive.name])
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "summary.json" in names and any(n.startswith("results/engine-") for n in names)
    assert any(n.startswith("logs/") for n in names) and "bundle/metrics.json" in names


def test_record_copies_results_and_summary(dry_run: tuple[Path, Path, float, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(dry_run[0], out)
    loose = gpu_window.record(out, tmp_path / "loose")
    gpu_window.pack(out)
    packed = gpu_window.record(out, tmp_path / "packed")
    date = _summary(out)["date"]
    assert sorted(p.name for p in loose) == sorted(p.name for p in packed)
    assert {p.name for p in packed} == {f"{n}-cpu-{date}.json" for n in (*EXPECTED, "gpu_window")}
    assert json.loads((tmp_path / "packed" / f"gpu_window-cpu-{date}.json").read_text()) == _summary(out)


class _Rigged(Window):
    """A window whose first stages are quick stand-ins (a hung training); the rest as written."""

    def stage_wheels(self, stage: Stage) -> None:
        return None

    def stage_probe(self, stage: Stage) -> None:
        self.probe = {"device": "test", "missing_core": [], "missing_serve": ["fastapi"],
                      "cuda_available": False}

    def stage_train(self, stage: Stage) -> None:
        self.run(self.py("-c", "import time; time.sleep(60)"), "a hung training")


def test_slow_or_failing_stage_is_recorded_and_the_window_goes_on(tmp_path: Path) -> None:
    env = {"DRY": "1", "WORK": str(tmp_path / "work"), "BUDGET_TRAIN": "2"}
    window = _Rigged(Settings.from_env(str(tmp_path / "out"), env))
    started = time.monotonic()
    summary = window.go()
    assert time.monotonic() - started < 30  # the hung stage was stopped at its budget
    stages = {st["name"]: st for st in summary["stages"]}
    assert [st["name"] for st in summary["stages"]] == list(STAGES)
    assert stages["train"]["status"] == "timeout" and "budget" in stages["train"]["reason"]
    assert stages["eval"]["status"] == "skipped" and "no bundle" in stages["eval"]["reason"]
    assert all(stages[n]["status"] == "skipped" for n in STAGES[3:])
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary


def test_failing_command_and_exhausted_window(tmp_path: Path) -> None:
    class Failing(_Rigged):
        def stage_train(self, stage: Stage) -> None:
            self.run(self.py("-c", "import sys; print('boom'); sys.exit(3)"), "a failing training")

        def stage_eval(self, stage: Stage) -> None:  # reached: the window goes on after a failure
            time.sleep(4)

    env = {"DRY": "1", "WORK": str(tmp_path / "work"), "WINDOW_S": str(gpu_window.PACK_RESERVE_S + 8)}
    summary = Failing(Settings.from_env(str(tmp_path / "out"), env)).go()
    stages = {st["name"]: st for st in summary["stages"]}
    assert stages["train"]["status"] == "failed" and stages["train"]["returncode"] == 3
    assert "boom" in stages["train"]["log_tail"]
    assert stages["eval"]["status"] == "ok" and stages["eval"]["seconds"] >= 4
    assert all(stages[n]["status"] == "skipped" and stages[n]["reason"].startswith("window exhausted")
               for n in STAGES[4:])


def test_sigterm_stops_the_running_command_and_writes_the_summary(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"

    class Stopped(_Rigged):
        def stage_train(self, stage: Stage) -> None:
            def stop_when_started() -> None:
                deadline = time.monotonic() + 60
                while not pid_file.exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
                os.kill(os.getpid(), signal.SIGTERM)

            threading.Thread(target=stop_when_started, daemon=True).start()
            self.run(self.py("-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); "
                                   "time.sleep(60)"), "a training stopped from outside")

    env = {"DRY": "1", "WORK": str(tmp_path / "work"), "PACK": "1"}
    with pytest.raises(SystemExit):
        Stopped(Settings.from_env(str(tmp_path / "out"), env)).go()
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)  # the command's process group was ended
    summary = _summary(tmp_path / "out")
    assert [st["name"] for st in summary["stages"]] == ["wheels", "probe", "train"]
    assert summary["stages"][-1]["status"] == "failed" and "stopped" in summary["stages"][-1]["reason"]
    assert summary["finished"] and list((tmp_path / "out").glob("gpu_window-*.tar.gz"))
