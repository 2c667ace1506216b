"""Service settings: one pydantic-settings class, read from `ELMREC_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]


class Settings(BaseSettings):
    """Everything the service can be told; every field is `ELMREC_<NAME>` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="ELMREC_", case_sensitive=False, env_ignore_empty=True, extra="ignore", frozen=True
    )

    MODEL_DIR: Path | None = Field(
        default=None, description="bundle folder written by `python -m training train --out DIR`")
    REDIS_URL: str | None = Field(default=None, description="history store; unset = in-process store")
    REDIS_PREFIX: str = Field(default="elmrec:", min_length=1, max_length=100, description="Redis key prefix")
    REDIS_TIMEOUT_S: float = Field(default=1.0, gt=0, le=30, description="Redis connect and socket timeout")
    REDIS_CLUSTER: bool = Field(
        default=False, description="REDIS_URL is a startup node of a Redis Cluster (cluster client)")
    API_KEY: SecretStr | None = Field(
        default=None, description="X-API-Key required on /recommend/*, /explain and /users/*; unset = open")
    DEVICE: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto = cuda when available")
    BACKEND: Literal["torch", "onnx"] = Field(
        default="torch", description="onnx: ONNX Runtime (the onnx or onnx-gpu extra; exported on first use)")
    MAX_BATCH: int = Field(default=32, ge=1, le=1024, description="requests per micro-batch")
    MAX_WAIT_MS: float = Field(default=5.0, ge=0, le=1000, description="longest wait to fill a micro-batch")
    MAX_QUEUE: int | None = Field(
        default=None, ge=1, le=100_000,
        description="requests waiting per task (direct, sequential), more are refused at once with 503; "
                    "unset = MAX_BATCH (one full batch waits while one computes)")
    REQUEST_TIMEOUT_MS: float = Field(
        default=2000.0, ge=1, le=600_000,
        description="longest time from a request's arrival to its model answer; then 503 (deadline)")

    @property
    def max_queue(self) -> int:
        """MAX_QUEUE, or MAX_BATCH when unset."""
        return self.MAX_BATCH if self.MAX_QUEUE is None else self.MAX_QUEUE
    MAX_CANDIDATES: int = Field(default=100, ge=1, le=1000, description="candidates per direct request")
    HISTORY_MAX_LEN: int = Field(default=200, ge=1, le=10_000, description="items kept per user history")
    RERANK_EXTRA: int | None = Field(
        default=None, ge=0, le=100, description="N of the history-filtering rerank; unset = the bundle's")
    LOG_LEVEL: LogLevel = Field(default="INFO", description="CRITICAL, ERROR, WARNING, INFO or DEBUG")
    MAX_BODY_BYTES: int = Field(
        default=64 * 1024, ge=1024, le=16 * 1024 * 1024, description="largest request body accepted")
    SHUTDOWN_TIMEOUT_S: int = Field(
        default=30, ge=1, le=600,
        description="`python -m service`: on SIGTERM, longest wait for in-flight requests before closing")
    HOST: str = Field(default="0.0.0.0", description="`python -m service` bind address")
    PORT: int = Field(default=8000, ge=1, le=65535, description="`python -m service` port")

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _cluster_needs_a_url(self) -> Settings:
        if self.REDIS_CLUSTER and not self.REDIS_URL:
            raise ValueError("ELMREC_REDIS_CLUSTER=true needs ELMREC_REDIS_URL (a startup node of a cluster)")
        return self
