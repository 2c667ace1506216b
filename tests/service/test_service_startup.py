"""Startup: clear refusals (no bundle, corrupt bundle, ONNX, no GPU) and the `python -m service` entry."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from service_testkit import free_port, make_settings, serve_subprocess, stop_subprocess

import service.__main__ as service_main
from service.app import create_app
from service.errors import StartupError


def _start(settings_app: object) -> None:
    with TestClient(settings_app):  # type: ignore[arg-type]
        pass


def test_missing_model_dir_is_a_clear_error() -> None:
    app = create_app(make_settings(Path("unused"), MODEL_DIR=None))
    with pytest.raises(StartupError, match="ELMREC_MODEL_DIR is not set"):
        _start(app)


def test_corrupt_bundle_is_refused(service_bundle: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(service_bundle, broken)
    (broken / "metrics.json").write_text("{}")
    app = create_app(make_settings(broken))
    with pytest.raises(StartupError, match=r"metrics\.json is corrupt"):
        _start(app)


def test_onnx_without_onnxruntime_is_refused(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnxruntime" else real(name, *args))
    app = create_app(make_settings(tiny_bundle, BACKEND="onnx"))
    with pytest.raises(StartupError, match=r"ELMREC_BACKEND=onnx: onnxruntime not installed: pip install"):
        _start(app)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_cuda_without_gpu_is_refused(service_bundle: Path) -> None:
    app = create_app(make_settings(service_bundle, DEVICE="cuda"))
    with pytest.raises(StartupError, match="no CUDA device"):
        _start(app)


def test_main_runs_uvicorn_with_the_settings(monkeypatch: pytest.MonkeyPatch, service_bundle: Path) -> None:
    calls: list[tuple[object, dict[str, object]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    for name in ("HOST", "API_KEY", "REDIS_URL", "LOG_LEVEL"):
        monkeypatch.delenv(f"ELMREC_{name}", raising=False)
    monkeypatch.setenv("ELMREC_MODEL_DIR", str(service_bundle))
    monkeypatch.setenv("ELMREC_PORT", "8123")
    service_main.main([])
    service_main.main(["--port", "8124", "--host", "127.0.0.1", "--log-level", "debug"])
    (app, kwargs), (_, overridden) = calls
    assert isinstance(app, FastAPI)
    assert kwargs["host"] == "0.0.0.0" and kwargs["port"] == 8123 and kwargs["log_level"] == "info"
    assert overridden["host"] == "127.0.0.1" and overridden["port"] == 8124
    assert overridden["log_level"] == "debug"
    with pytest.raises(SystemExit):
        service_main.main(["--no-such-flag"])


@pytest.mark.slow
def test_python_dash_m_service_serves(service_bundle: Path) -> None:
    """The real entry point in a subprocess (slow: a fresh interpreter imports torch)."""
    port = free_port()
    proc = serve_subprocess(service_bundle, port)
    try:
        deadline = time.monotonic() + 45
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        if ready is None and proc.stdout is not None and proc.poll() is not None:
            pytest.fail(proc.stdout.read().decode())
        assert ready is not None, "the service did not answer within 45 s"
        assert ready.status_code == 200, ready.text
        answer = httpx.post(f"http://127.0.0.1:{port}/recommend/direct",
                            json={"user_id": "1", "candidates": ["3", "4", "5"], "k": 2}, timeout=10)
        assert answer.status_code == 200 and len(answer.json()["items"]) == 2
    finally:
        stop_subprocess(proc)
