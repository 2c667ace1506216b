"""HTTP routes: thin handlers that validate input (schemas) and call the recommender."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.responses import JSONResponse

from service.deps import MetricsDep, OptionalRuntimeDep, RecommenderDep, RuntimeDep, require_api_key
from service.disconnect import unless_disconnected
from service.metrics import CONTENT_TYPE_LATEST
from service.runtime import readiness
from service.schemas import (
    MAX_ID_LENGTH,
    DirectRequest,
    HealthResponse,
    HistoryResponse,
    InteractionsRequest,
    InteractionsResponse,
    ModelResponse,
    ReadyResponse,
    RecommendResponse,
    SequentialRequest,
)

UserIdPath = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, description="external user id")]

_error = {"content": {"application/json": {"example": {"detail": "..."}}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body cannot be parsed (not UTF-8, nested too deeply) or a bad Content-Length",
          **_error},
    401: {"description": "missing or invalid X-API-Key", **_error},
    413: {"description": "body larger than ELMREC_MAX_BODY_BYTES", **_error},
    422: {"description": "invalid input, unknown item ids or a limit exceeded", **_error},
    503: {"description": "model not ready, history store unavailable, or overloaded (`reason`: `queue_full`, "
               "the task's queue holds ELMREC_MAX_QUEUE requests; `deadline`, no answer within "
               "ELMREC_REQUEST_TIMEOUT_MS); `Retry-After` says when to retry", **_error},
}

recommend = APIRouter(prefix="/recommend", tags=["recommend"], dependencies=[Depends(require_api_key)],
                      responses=ERRORS)
users = APIRouter(prefix="/users", tags=["users"], dependencies=[Depends(require_api_key)], responses=ERRORS)
health = APIRouter(prefix="/health", tags=["health"])
info = APIRouter(tags=["model"])


@recommend.post("/direct", summary="Rank candidates (or retrieve then rank) by exact likelihood")
async def recommend_direct(
    body: DirectRequest, recommender: RecommenderDep, request: Request
) -> RecommendResponse:
    return await unless_disconnected(request.receive, recommender.recommend_direct(body))


@recommend.post("/sequential", summary="Next items by constrained beam search and history-filtering rerank")
async def recommend_sequential(
    body: SequentialRequest, recommender: RecommenderDep, request: Request
) -> RecommendResponse:
    return await unless_disconnected(request.receive, recommender.recommend_sequential(body))


@users.post("/{user_id}/interactions", summary="Append items to a user's history")
async def add_interactions(
    user_id: UserIdPath, body: InteractionsRequest, recommender: RecommenderDep
) -> InteractionsResponse:
    return await recommender.add_interactions(user_id, body.items)


@users.get("/{user_id}/history", summary="A user's history (training + online), oldest first")
async def get_history(user_id: UserIdPath, recommender: RecommenderDep) -> HistoryResponse:
    return await recommender.history(user_id)


@health.get("/live", summary="The process is up")
async def live() -> HealthResponse:
    return HealthResponse(status="alive")


@health.get("/ready", summary="Model loaded and warmed up, history store reachable",
            response_model=ReadyResponse,
            responses={503: {"model": ReadyResponse, "description": "not ready, with the reason"}})
async def ready(runtime: OptionalRuntimeDep) -> JSONResponse:
    state = await readiness(runtime)
    return JSONResponse(state.model_dump(), status_code=200 if state.status == "ready" else 503)


@info.get("/model", summary="The served model: version, preset, protocol, dataset, offline metrics")
async def model(runtime: RuntimeDep) -> ModelResponse:
    served = runtime.served
    return ModelResponse(**served.recommender.describe(runtime.device, runtime.backend),
                         loaded_at=served.loaded_at, reloads=runtime.reloads)


@info.get("/metrics", include_in_schema=False)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

