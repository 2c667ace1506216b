"""Training robustness through `python -m training train`: malformed data is a clear error that writes no
bundle, and a run killed mid-training resumes from its checkpoint to the weights of an uninterrupted run.

(`tests/training/test_training_features.py::test_interrupted_training_resumes_to_the_same_weights` covers
the in-process resume after a planned stop; the kill -9 variant here is slow.)
"""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from training.cli import main

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "training", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def _nothing_written(parent: Path, out: Path) -> None:
    assert not out.exists(), f"{out} was written"
    leftovers = [p.name for p in parent.iterdir() if p.name.startswith(f".{out.name}")]
    assert not leftovers, leftovers


def test_python_dash_m_training_refuses_malformed_data_and_writes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "sequential_data.txt").write_text("1 2 3 4 5\n2 7 x 9\n")
    out = tmp_path / "bundle"
    done = _cli("train", "--data", str(folder), "--preset", "tiny", "--out", str(out), "--device", "cpu")
    assert done.returncode == 2, done.stderr
    assert "sequential_data.txt" in done.stderr and "line 2" in done.stderr
    assert "Traceback" not in done.stderr
    _nothing_written(tmp_path, out)


def _bad_csv(tmp: Path) -> Path:
    (tmp / "no_item.csv").write_text("user,timestamp\nu1,1\nu1,2\n")
    return tmp / "no_item.csv"


def _bad_gzip(tmp: Path) -> Path:
    folder = tmp / "gz"
    folder.mkdir()
    blob = gzip.compress(b"1 2 3 4 5\n2 3 4 5 6\n" * 50)
    (folder / "sequential_data.txt.gz").write_bytes(blob[: len(blob) // 2])  # truncated download
    return folder


def _empty(tmp: Path) -> Path:
    folder = tmp / "empty"
    folder.mkdir()
    (folder / "sequential_data.txt").write_text("")
    return folder


def _bad_negatives(tmp: Path) -> Path:
    folder = tmp / "neg"
    folder.mkdir()
    (folder / "sequential_data.txt").write_text("".join(f"{u} 1 2 3 4 5\n" for u in range(1, 6)))
    (folder / "negative_samples.txt").write_text("1 7 8\n2 seven\n")
    return folder


@pytest.mark.parametrize("make, fragment", [
    (_bad_csv, "item"), (_bad_gzip, "sequential_data.txt.gz"), (_empty, "sequential_data.txt"),
    (_bad_negatives, "negative_samples.txt"),
], ids=["csv-missing-column", "truncated-gzip", "empty-file", "malformed-negatives"])
def test_malformed_data_is_a_clear_error_and_writes_no_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, fragment: str
) -> None:
    data = make(tmp_path)  # type: ignore[operator]
    out = tmp_path / "bundle"
    assert main(["train", "--data", str(data), "--preset", "tiny", "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    _nothing_written(tmp_path, out)


@pytest.mark.slow
def test_training_killed_mid_run_resumes_to_the_uninterrupted_weights(
    tiny_data: Path, tmp_path: Path
) -> None:
    """SIGKILL `python -m training train` after a checkpoint, then `--resume`: a straight run's weights."""
    common = ["--data", str(tiny_data), "--preset", "tiny", "--device", "cpu", "--epochs", "2", "--seed", "0",
              "--set", "eval_every=10"]
    straight = _cli("train", *common, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "training", "train", *common, "--out", str(out)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "killed.ckpt" / "state.json"
    deadline = time.monotonic() + 240
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and not out.exists(), "the run was not killed between checkpoint and bundle"
    resumed = _cli("train", *common, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert np.allclose(a[name], b[name], atol=1e-6), name


def test_a_checkpoint_moved_aside_by_a_kill_is_recovered(tmp_path: Path) -> None:
    """save_checkpoint keeps the previous checkpoint until the new one is in place; resume finds either."""
    import torch

    from training.checkpoint import load_checkpoint, recover_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    folder = tmp_path / "run.ckpt"
    save_checkpoint(folder, model, optimizer, {"step": 1})
    save_checkpoint(folder, model, optimizer, {"step": 2})
    assert not folder.with_name("run.ckpt.old").exists()
    folder.rename(folder.with_name("run.ckpt.old"))  # the state a kill between the two renames leaves
    assert recover_checkpoint(folder)
    assert load_checkpoint(folder, model, optimizer)["step"] == 2
    assert not recover_checkpoint(tmp_path / "never.ckpt")
