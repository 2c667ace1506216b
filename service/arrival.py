"""When the HTTP request being served reached the app (event-loop time): deadlines count from there.

Set by the outermost middleware (`RequestMetricsMiddleware`) in the request's context; tasks the
request starts inherit it. Outside a request (warm-up, tests of the batcher alone) it is None.
"""

from __future__ import annotations

from contextvars import ContextVar

ARRIVAL: ContextVar[float | None] = ContextVar("elmrec_request_arrival", default=None)
