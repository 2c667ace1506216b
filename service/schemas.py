"""Request and response bodies of the API (pydantic), with a limit on every field."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

MAX_ID_LENGTH = 256
MAX_K = 100
MAX_EXTRA = 100
# Hard caps of the schema; the settings (MAX_CANDIDATES, HISTORY_MAX_LEN) set the limits in force.
LIST_CAP = 10_000

ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
Fallback = Literal["cold_start", "popularity"]


class StrictBody(BaseModel):
    """Unknown fields are an error (a typo such as `filter_histroy` must not pass silently); types are
    strict, as the schema says (`false` or `"5"` is not an integer)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class DirectRequest(StrictBody):
    user_id: ExternalId = Field(description="the user's external id")
    candidates: list[ExternalId] | None = Field(
        default=None, min_length=1, max_length=LIST_CAP,
        description="item ids to rank (at most ELMREC_MAX_CANDIDATES); absent = retrieve by Ω first",
    )
    k: int = Field(default=10, ge=1, le=MAX_K, description="items to return")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"user_id": "1", "candidates": ["3", "4", "5"], "k": 2}]},
    )


class SequentialRequest(StrictBody):
    user_id: ExternalId = Field(description="the user's external id")
    history: list[ExternalId] | None = Field(
        default=None, max_length=LIST_CAP,
        description="the user's items, oldest first (at most ELMREC_HISTORY_MAX_LEN); absent = stored",
    )
    k: int = Field(default=10, ge=1, le=MAX_K, description="items to return")
    filter_history: bool = Field(default=True, description="drop items of the history from the answer")
    extra: int | None = Field(
        default=None, ge=0, le=MAX_EXTRA, description="N of the rerank (k+N generated); absent = RERANK_EXTRA"
    )

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"user_id": "1", "k": 5, "filter_history": True}]}
    )


class InteractionsRequest(StrictBody):
    items: list[ExternalId] = Field(min_length=1, max_length=1000, description="new items, oldest first")


class ScoredItem(BaseModel):
    item_id: str
    score: float = Field(description="log-likelihood under the model; popularity fallback: minus the rank")


class RecommendResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    user_id: str
    items: list[ScoredItem]
    model_version: str
    fallback: Fallback | None = None


class InteractionsResponse(BaseModel):
    user_id: str
    length: int = Field(description="length of the user's history after the append (bundle + stored, capped)")


class HistoryResponse(BaseModel):
    user_id: str
    items: list[str] = Field(description="bundle history then stored history, oldest first, capped")
    length: int
    known_user: bool = Field(description="the user was in the training data")
    stored: int = Field(description="how many of the items came from the online store")


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]
    reason: str | None = None


class ModelResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    preset: str
    model_kind: str = Field(description="items: one token per item, exact full ranking; digits: the paper's "
                            "digit-id formulation with beam search")
    created: str
    protocol: dict[str, Any]
    dataset: dict[str, Any]
    omega: dict[str, Any]
    rerank_n: int
    beam: int
    max_history: int
    device: str
    backend: str
    metrics: dict[str, Any]
    loaded_at: str = Field(description="when this version was loaded (UTC, ISO 8601)")
    reloads: int = Field(description="successful POST /admin/reload swaps since the service started")
