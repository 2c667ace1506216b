"""The app factory: `create_app(settings)` wires settings, metrics, middleware, error handlers and routes."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from service.admin import admin
from service.errors import ServiceError, StartupError
from service.explain import explain
from service.metrics import RequestMetricsMiddleware, ServiceMetrics
from service.middleware import BodySizeLimitMiddleware
from service.routes import health, info, recommend, users
from service.runtime import Runtime, start_runtime
from service.settings import Settings

log = logging.getLogger("service")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Startup: load, warm up, then serve; shutdown: drain batchers, close the store and the model thread."""
    try:
        runtime = await start_runtime(app.state.settings, app.state.metrics)
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        raise
    app.state.runtime = runtime
    try:
        yield
    finally:
        app.state.runtime = None
        await runtime.close()


async def service_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    headers = {"Retry-After": "1"} if exc.status_code == 503 else None
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)


def json_safe(value: Any) -> Any:
    """Echoed input made renderable: lone surrogates and undecodable bytes escaped, inf/NaN as text."""
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, str):
        return value.encode("utf-8", errors="backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 body, safe to render whatever the client sent (the default handler 500s on some)."""
    assert isinstance(exc, RequestValidationError)
    errors = json_safe(jsonable_encoder(exc.errors(), custom_encoder={bytes: json_safe}))
    return JSONResponse({"detail": errors}, status_code=422)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def key_optional_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """Without ELMREC_API_KEY the X-API-Key is not needed: the schema says so (`security: [{}, ...]`)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    if "security" in operation and not path.startswith("/admin"):  # admin stays 403
                        operation["security"] = [{}, *operation["security"]]
        return app.openapi_schema or {}

    return openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app (with its own metrics registry); the bundle is loaded when the app starts (lifespan)."""
    settings = settings if settings is not None else Settings()
    if not logging.getLogger().handlers:  # run by `uvicorn --factory`: give our records somewhere to go
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("service").setLevel(settings.LOG_LEVEL)
    metrics = ServiceMetrics()
    app = FastAPI(
        title="ELMRec recommendation API",
        summary="Direct (candidate ranking) and sequential (next item) recommendation from a trained bundle",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.runtime = None
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected_error)
    for router in (recommend, users, explain, health, info, admin):
        app.include_router(router)
        metrics.init_routes(router.routes)  # included without a prefix: the same path templates
    if settings.API_KEY is None:
        app.openapi = key_optional_openapi(app)  # type: ignore[method-assign]
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.MAX_BODY_BYTES)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics, routes=app.router.routes)
    return app


__all__ = ["Runtime", "create_app"]
