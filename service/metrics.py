"""Prometheus metrics of one app (its own CollectorRegistry) and the ASGI middleware that times requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Literal, get_args

from fastapi.routing import APIRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.arrival import ARRIVAL
from service.schemas import Fallback

__all__ = ["CONTENT_TYPE_LATEST", "RequestMetricsMiddleware", "ServiceMetrics", "ShedReason"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
QUEUE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
UNMATCHED_ROUTE = "unmatched"

# Known label values: every labelled series a dashboard or an alert reads exists (at 0) from the start,
# instead of appearing with the first event (Prometheus would show "No data" until then).
ShedReason = Literal["queue_full", "deadline", "client_gone"]
ReloadOutcome = Literal["success", "refused", "busy"]
STORE_OPS = ("get", "append", "ping")  # the HistoryStore operations (service/store.py)
STORE_ERROR_KINDS = ("connection", "timeout", "response", "other")  # service/store.py::_error_kind
INITIAL_STATUS = "200"  # request series are created per route and method with the success status


class ServiceMetrics:
    """Every metric the service exports (prefix `elmrec_`), registered in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.request_duration = Histogram(
            "elmrec_request_duration_seconds", "HTTP request latency by route template, method and status",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.requests_in_flight = Gauge(
            "elmrec_requests_in_flight", "HTTP requests being served now", registry=r)
        self.inference_batch_size = Histogram(
            "elmrec_inference_batch_size", "requests per micro-batch run by the model",
            ["task"], buckets=BATCH_BUCKETS, registry=r)
        self.queue_wait = Histogram(
            "elmrec_queue_wait_seconds", "time a request waited for its micro-batch to start",
            ["task"], buckets=QUEUE_BUCKETS, registry=r)
        self.inference_duration = Histogram(
            "elmrec_inference_duration_seconds", "model time of one micro-batch",
            ["task"], buckets=LATENCY_BUCKETS, registry=r)
        self.store_operations = Counter(
            "elmrec_history_store_operations", "history store operations attempted",
            ["op", "backend"], registry=r)
        self.store_errors = Counter(
            "elmrec_history_store_errors", "history store operations that failed, by kind of failure",
            ["op", "kind"], registry=r)
        self.fallbacks = Counter(
            "elmrec_fallbacks", "answers not made from a known user: cold_start or popularity",
            ["kind"], registry=r)
        self.model_info = Gauge(
            "elmrec_model_info", "the served model (value is always 1)",
            ["version", "preset", "device", "backend"], registry=r)
        self.model_reloads = Counter(
            "elmrec_model_reloads", "model reloads (POST /admin/reload) by result: success, refused, busy",
            ["result"], registry=r)
        self.requests_shed = Counter(
            "elmrec_requests_shed", "requests given no model answer: queue_full (refused at admission, 503), "
            "deadline (ELMREC_REQUEST_TIMEOUT_MS passed, 503), client_gone (disconnected before its batch)",
            ["task", "reason"], registry=r)
        self.queue_depth = Gauge(
            "elmrec_queue_depth", "requests waiting for a micro-batch (at most ELMREC_MAX_QUEUE per task)",
            ["task"], registry=r)
        for op in STORE_OPS:
            for kind in STORE_ERROR_KINDS:
                self.store_errors.labels(op=op, kind=kind)
        for fallback in get_args(Fallback):
            self.fallbacks.labels(kind=fallback)
        for outcome in get_args(ReloadOutcome):
            self.model_reloads.labels(result=outcome)

    def init_task(self, task: str) -> None:
        """Create the series of one batcher task (at 0)."""
        for histogram in (self.inference_batch_size, self.queue_wait, self.inference_duration):
            histogram.labels(task=task)
        self.queue_depth.labels(task=task)
        for reason in get_args(ShedReason):
            self.requests_shed.labels(task=task, reason=reason)

    def init_store(self, backend: str) -> None:
        """Create the operation series of the history store in use (at 0)."""
        for op in STORE_OPS:
            self.store_operations.labels(op=op, backend=backend)

    def init_routes(self, routes: Iterable[BaseRoute]) -> None:
        """Create the request series of every API route and method, with the success status (at 0)."""
        for route in routes:
            if isinstance(route, APIRoute):
                for method in sorted(route.methods or ()):
                    self.request_duration.labels(route=route.path, method=method, status=INITIAL_STATUS)

    def reloaded(self, outcome: ReloadOutcome) -> None:
        self.model_reloads.labels(result=outcome).inc()

    def set_model(self, version: str, preset: str, device: str, backend: str) -> None:
        self.model_info.clear()
        self.model_info.labels(version=version, preset=preset, device=device, backend=backend).set(1)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


def route_template(scope: Scope, routes: list[BaseRoute]) -> str:
    """The path template that served (or would serve) this request, never the raw path (bounded labels)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    for candidate in routes:
        match, _ = candidate.matches(scope)
        if match == Match.FULL:
            found = getattr(candidate, "path", None)
            if isinstance(found, str):
                return found
    return UNMATCHED_ROUTE


class RequestMetricsMiddleware:
    """Times every HTTP request into `elmrec_request_duration_seconds`, counts requests in flight, and
    marks the request's arrival (`service.arrival.ARRIVAL`) for the deadline."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.metrics.requests_in_flight.inc()
        arrived = ARRIVAL.set(asyncio.get_running_loop().time())
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            ARRIVAL.reset(arrived)
            self.metrics.requests_in_flight.dec()
            self.metrics.request_duration.labels(
                route=route_template(scope, self.routes), method=scope.get("method", ""), status=str(status)
            ).observe(time.perf_counter() - start)
