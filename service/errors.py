"""Errors the service raises on purpose, each with the HTTP status and message a client gets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ServiceError(Exception):
    """Base: answered as `{"detail": message, **extra}` with `status_code`."""

    status_code = 500

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"detail": self.message, **self.extra}


class BadRequestError(ServiceError):
    """A well-formed request that breaks a limit set in the settings (422)."""

    status_code = 422


class UnknownItemsError(BadRequestError):
    """Item ids that the model's catalogue does not hold (422, naming them)."""

    def __init__(self, field: str, ids: Sequence[str]) -> None:
        shown = ", ".join(repr(i) for i in list(ids)[:20])
        more = f" and {len(ids) - 20} more" if len(ids) > 20 else ""
        super().__init__(f"{field}: unknown item ids {shown}{more} (not in the model's catalogue)",
                         unknown_item_ids=list(ids))


class StoreUnavailableError(ServiceError):
    """The history store cannot be reached (503); the request may be retried later."""

    status_code = 503

    def __init__(self, op: str, kind: str, reason: str) -> None:
        super().__init__(
            f"history store unavailable ({reason}); retry later, or send `history` in the request "
            "where the endpoint accepts it"
        )
        self.op = op
        self.kind = kind
        self.reason = reason


class NotReadyError(ServiceError):
    """The model is not loaded or warmed up yet, or the service is shutting down (503)."""

    status_code = 503


class OverloadedError(ServiceError):
    """A task's admission queue is full (ELMREC_MAX_QUEUE): refused at once (503, `Retry-After`)."""

    status_code = 503


class DeadlineExceededError(ServiceError):
    """No model answer within ELMREC_REQUEST_TIMEOUT_MS of the request's arrival (503)."""

    status_code = 503


class ClientDisconnectedError(ServiceError):
    """The client closed the connection before its answer was ready; nobody reads the response.

    499 is nginx's "client closed request": it only labels the request in the metrics.
    """

    status_code = 499


class StartupError(RuntimeError):
    """The service cannot start with these settings (bad MODEL_DIR, unavailable backend or device)."""
