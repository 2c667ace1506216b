"""POST /explain: review-like text for a (user, item) pair, when the served bundle trained the task.

Generation runs `model_store.explain.Explainer` on the served version's own model (shared with its
inference engine) in the single model thread, one request per call (no micro-batching).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from weakref import WeakKeyDictionary

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from model_store.explain import MAX_EXPLANATION_TOKENS, Explainer, carries_explanation
from model_store.prompts import load_tokenizer
from service.deps import MetricsDep, RuntimeDep, require_api_key
from service.errors import BadRequestError, ServiceError
from service.routes import ERRORS
from service.runtime import ServedModel
from service.schemas import ExternalId, StrictBody


class ExplainRequest(StrictBody):
    user_id: ExternalId = Field(description="external id of a user the model was trained on")
    item_id: ExternalId = Field(description="external id of an item of the model's catalogue")
    max_tokens: int = Field(default=MAX_EXPLANATION_TOKENS, ge=1, le=MAX_EXPLANATION_TOKENS,
                            description="longest explanation, in T5 tokens (greedy decoding stops earlier "
                                        "at end-of-text)")

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"user_id": "1", "item_id": "3", "max_tokens": 32}]}
    )


class ExplainResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    user_id: str
    item_id: str
    explanation: str = Field(description="generated text (greedy decoding over the whole T5 vocabulary)")
    model_version: str


class TaskNotTrainedError(ServiceError):
    """The served bundle was not trained on the requested task (404)."""

    status_code = 404


explain = APIRouter(tags=["explain"], dependencies=[Depends(require_api_key)], responses={
    **ERRORS,
    404: {"description": "the served model was not trained on the explanation task",
          "content": {"application/json": {"example": {"detail": "..."}}}},
})

# One explainer per served version (it shares that version's model); dropped with the version.
_explainers: WeakKeyDictionary[ServedModel, Explainer] = WeakKeyDictionary()


def explainer_for(served: ServedModel) -> Explainer:
    """The served version's explainer, built on first use (run it in the model thread)."""
    explainer = _explainers.get(served)
    if explainer is None:
        explainer = Explainer.from_engine(served.engine, load_tokenizer(served.bundle.tokenizer_dir()))
        _explainers[served] = explainer
    return explainer


def run_explain(served: ServedModel, user: int, item: int, max_tokens: int) -> str:
    return explainer_for(served).generate([user], [item], max_tokens)[0]


@explain.post("/explain", summary="Explain why a user would like an item (needs a bundle trained on reviews)")
async def explain_pair(body: ExplainRequest, runtime: RuntimeDep, metrics: MetricsDep) -> ExplainResponse:
    served = runtime.served  # leased with no await in between: a reload cannot swap it under us
    with served.lease():
        bundle = served.bundle
        version = bundle.config.model_version
        if not carries_explanation(bundle.metrics):
            raise TaskNotTrainedError(
                f"the served model ({version}) was not trained on the explanation task: it needs review "
                "text (`python -m training train ... --reviews FILE`)", model_version=version)
        user = bundle.codec.find_user(body.user_id)
        item = bundle.codec.find_item(body.item_id)
        unknown: dict[str, Any] = {}
        problems: list[str] = []
        if user is None:
            problems.append(f"user_id: unknown user id {body.user_id!r} (explanations need a user the model "
                            "was trained on)")
            unknown["unknown_user_ids"] = [body.user_id]
        if item is None:
            problems.append(f"item_id: unknown item id {body.item_id!r} (not in the model's catalogue)")
            unknown["unknown_item_ids"] = [body.item_id]
        if user is None or item is None:
            raise BadRequestError("; ".join(problems), **unknown)
        started = time.perf_counter()
        text = await asyncio.get_running_loop().run_in_executor(
            runtime.executor, run_explain, served, user, item, body.max_tokens)
        metrics.inference_duration.labels(task="explanation").observe(time.perf_counter() - started)
    return ExplainResponse(user_id=body.user_id, item_id=body.item_id, explanation=text,
                           model_version=version)
