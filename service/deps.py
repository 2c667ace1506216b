"""FastAPI dependencies: settings, the loaded runtime and recommender, and the API key check."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from service.errors import NotReadyError
from service.metrics import ServiceMetrics
from service.recommender import Recommender
from service.runtime import Runtime
from service.settings import Settings

API_KEY_HEADER = "X-API-Key"
api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                              description="required on /recommend/*, /explain and /users/* when "
                              "ELMREC_API_KEY is set")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


def get_optional_runtime(request: Request) -> Runtime | None:
    runtime: Runtime | None = request.app.state.runtime
    return runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime | None = request.app.state.runtime
    if runtime is None or not runtime.ready:
        raise NotReadyError("the model is not loaded and warmed up yet; retry shortly")
    return runtime


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
OptionalRuntimeDep = Annotated[Runtime | None, Depends(get_optional_runtime)]


async def get_recommender(runtime: RuntimeDep) -> AsyncIterator[Recommender]:
    """The served model version, leased for the whole request (a reload waits for it before retiring it)."""
    with runtime.lease() as recommender:
        yield recommender


RecommenderDep = Annotated[Recommender, Depends(get_recommender)]


def require_api_key(settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)]) -> None:
    """With ELMREC_API_KEY set, the X-API-Key header must equal it (constant-time compare); else 401."""
    if settings.API_KEY is None:
        return
    expected = settings.API_KEY.get_secret_value().encode("utf-8")
    # Starlette decodes header bytes as latin-1: encoding back gives the bytes the client sent.
    if key is None or not hmac.compare_digest(key.encode("latin-1", errors="replace"), expected):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=f"missing or invalid {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )
