"""Admin routes: `POST /admin/reload` swaps in a new bundle version (API key required; off without a key)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Security, status
from pydantic import BaseModel, ConfigDict, Field

from service.deps import MetricsDep, RuntimeDep, SettingsDep, api_key_header, require_api_key

_error = {"content": {"application/json": {"example": {"detail": "..."}}}}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body cannot be parsed (not UTF-8, nested too deeply)", **_error},
    401: {"description": "missing or invalid X-API-Key", **_error},
    403: {"description": "admin routes are disabled because ELMREC_API_KEY is not set", **_error},
    409: {"description": "another reload is running", **_error},
    413: {"description": "body larger than ELMREC_MAX_BODY_BYTES", **_error},
    422: {"description": "invalid body, or the bundle was refused (the current model keeps serving)",
          **_error},
    503: {"description": "model not ready", **_error},
}


def require_admin_key(settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)]) -> None:
    """Admin routes never run open: without ELMREC_API_KEY they answer 403; with it, the key is checked."""
    if settings.API_KEY is None:
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN,
                            detail="admin routes are disabled: set ELMREC_API_KEY to enable them")
    require_api_key(settings, key)


admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin_key)],
                  responses=ADMIN_ERRORS)


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_dir: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="bundle folder to load; absent = ELMREC_MODEL_DIR read again (e.g. a symlink moved)")


class ReloadResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str = Field(description="the version now serving")
    previous_version: str
    model_dir: str
    seconds: float = Field(description="load + verify + warm-up + drain of the old version")
    drained: bool = Field(description="the old version's requests all finished before it was stopped")
    reloads: int = Field(description="successful reloads since the service started")


@admin.post("/reload", summary="Load, verify and warm up a bundle, then swap it in without dropping requests")
async def reload_model(
    runtime: RuntimeDep, settings: SettingsDep, metrics: MetricsDep,
    body: Annotated[ReloadRequest | None, Body()] = None,
) -> ReloadResponse:
    given = body.model_dir if body is not None else None
    path = Path(given) if given is not None else settings.MODEL_DIR
    if path is None:  # cannot happen once started (MODEL_DIR is required), kept for the type checker
        raise HTTPException(status_code=422, detail="no model_dir given and ELMREC_MODEL_DIR is not set")
    result = await runtime.reload(path, settings, metrics, drain_timeout_s=float(settings.SHUTDOWN_TIMEOUT_S))
    return ReloadResponse(model_version=result.model_version, previous_version=result.previous_version,
                          model_dir=result.model_dir, seconds=round(result.seconds, 3),
                          drained=result.drained, reloads=runtime.reloads)
