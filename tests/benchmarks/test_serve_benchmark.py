"""The serve load generator against a real uvicorn server on loopback (tiny bundle): figures and errors."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from benchmarks import serve
from model_store.bundle import write_manifest
from service.app import create_app
from service.settings import Settings

API_KEY = "serve-benchmark-key"
LEVEL_KEYS = {"concurrency", "rps", "p50_ms", "p95_ms", "p99_ms", "errors", "requests", "ok"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def service_url(tiny_bundle: Path) -> Iterator[str]:
    """The service on the tiny bundle, served by uvicorn in a thread on a free loopback port."""
    settings = Settings.model_validate({"MODEL_DIR": tiny_bundle, "DEVICE": "cpu", "API_KEY": API_KEY,
                                        "LOG_LEVEL": "WARNING"})
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the service did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any] | None, str]:
    code = serve.main(list(argv))
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    result = json.loads(lines[-1]) if code == 0 and "--json" in argv else None
    return code, result, captured.err


def test_levels_and_json(
    service_url: str, tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "results"
    png = tmp_path / "latency.png"
    code, result, _ = _run(capsys, "--url", service_url, "--api-key", API_KEY, "--bundle", str(tiny_bundle),
                           "--task", "direct", "--concurrency", "1", "3", "--duration", "0.8",
                           "--warmup", "2", "--json", "--out-dir", str(out_dir), "--plot", str(png))
    assert code == 0 and result is not None
    assert result["benchmark"] == "serve" and result["task"] == "direct"
    assert result["preset"] == "tiny" and result["dataset"] == "synthetic" and result["backend"] == "torch"
    assert result["device"].startswith("cpu") and result["torch"] and result["date"] and result["command"]
    levels = result["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 3]
    for lv in levels:
        assert lv.keys() >= LEVEL_KEYS
        assert lv["errors"] == 0 and lv["requests"] == lv["ok"] > 0 and lv["statuses"] == {"200": lv["ok"]}
        assert lv["rps"] > 0 and 0 < lv["p50_ms"] <= lv["p95_ms"] <= lv["p99_ms"] <= lv["max_ms"]
    files = list(out_dir.iterdir())
    assert [f.name for f in files] == [f"serve-direct-cpu-{result['date']}.json"]
    assert json.loads(files[0].read_text()) == result
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    replotted = tmp_path / "again.png"  # from the JSON alone, no request sent
    assert serve.main(["--replot", "--plot", str(replotted), "--plot-also", str(files[0])]) == 0
    assert replotted.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_request_count_bounds_a_level_and_errors_are_counted(
    service_url: str, tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--url", service_url, "--bundle", str(tiny_bundle), "--task", "sequential", "--warmup", "0",
              "--concurrency", "2", "--requests", "7", "--duration", "30", "--json",
              "--out-dir", str(tmp_path)]
    code, result, _ = _run(capsys, *common, "--api-key", API_KEY)
    assert code == 0 and result is not None
    assert result["levels"][0]["requests"] == 7 and result["levels"][0]["errors"] == 0
    # a wrong key: the health and model routes stay open, every recommendation is a 401
    code, result, _ = _run(capsys, *common, "--api-key", "wrong-key")
    assert code == 0 and result is not None
    level = result["levels"][0]
    assert level["requests"] == 7 and level["errors"] == 7 and level["ok"] == 0
    assert level["statuses"] == {"401": 7} and level["p50_ms"] is None


def test_bad_arguments_and_unreachable_service_are_clear_errors(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        serve.main(["--url", "http://10.1.2.3:8000", "--bundle", str(tiny_bundle)])
    assert exit_info.value.code == 2 and "only loopback hosts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        serve.main(["--bundle", str(tiny_bundle), "--concurrency", "0"])
    assert "--concurrency" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        serve.main(["--bundle", str(tmp_path)])
    assert "not a bundle folder" in capsys.readouterr().err
    code, _, err = _run(capsys, "--url", f"http://127.0.0.1:{_free_port()}", "--bundle", str(tiny_bundle))
    assert code == 1 and "cannot query" in err and "ConnectError" in err


def test_another_bundle_than_the_served_one_is_refused(
    service_url: str, tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_bundle, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_version": "another-version"}))
    common = ["--url", service_url, "--api-key", API_KEY, "--bundle", str(other)]
    code, _, err = _run(capsys, *common)
    assert code == 1 and "config.json is corrupt" in err  # the manifest no longer matches: named
    write_manifest(other)
    code, _, err = _run(capsys, *common)
    assert code == 1 and "holds another-version" in err and "would not match its catalogue" in err
