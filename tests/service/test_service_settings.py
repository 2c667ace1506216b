"""Settings: ELMREC_* environment variables, defaults, and refusal of bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"ELMREC_{name}", raising=False)
    settings = Settings()
    assert settings.PORT == 8000 and settings.HOST == "0.0.0.0"
    assert settings.MAX_CANDIDATES == 100
    assert settings.REDIS_URL is None and settings.API_KEY is None and settings.RERANK_EXTRA is None
    assert settings.DEVICE == "auto" and settings.BACKEND == "torch"
    assert settings.MAX_QUEUE is None and settings.max_queue == settings.MAX_BATCH == 32
    assert settings.REQUEST_TIMEOUT_MS == 2000


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ELMREC_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("ELMREC_PORT", "9001")
    monkeypatch.setenv("ELMREC_API_KEY", "s3cret")
    monkeypatch.setenv("ELMREC_MAX_WAIT_MS", "2.5")
    monkeypatch.setenv("ELMREC_LOG_LEVEL", "debug")
    monkeypatch.setenv("ELMREC_REDIS_URL", "")  # empty = unset
    monkeypatch.setenv("PORT", "1234")  # unprefixed variables are not ours
    settings = Settings()
    assert tmp_path == settings.MODEL_DIR
    assert settings.PORT == 9001
    assert settings.API_KEY is not None and settings.API_KEY.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.MAX_WAIT_MS == 2.5
    assert settings.LOG_LEVEL == "DEBUG"
    assert settings.REDIS_URL is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("DEVICE", "tpu"), ("BACKEND", "tensorrt"), ("MAX_BATCH", "0"), ("MAX_CANDIDATES", "5000"),
     ("PORT", "70000"), ("LOG_LEVEL", "loud"), ("RERANK_EXTRA", "-1"), ("MAX_QUEUE", "0"),
     ("REQUEST_TIMEOUT_MS", "0")],
)
def test_refuses_bad_values(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"ELMREC_{name}", value)
    with pytest.raises(ValidationError, match=name):
        Settings()


def test_redis_cluster_needs_a_startup_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELMREC_REDIS_URL", raising=False)
    monkeypatch.setenv("ELMREC_REDIS_CLUSTER", "true")
    with pytest.raises(ValidationError, match="ELMREC_REDIS_CLUSTER=true needs ELMREC_REDIS_URL"):
        Settings()
    monkeypatch.setenv("ELMREC_REDIS_URL", "redis://10.0.0.5:7000")
    assert Settings().REDIS_CLUSTER is True
