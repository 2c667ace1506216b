"""The known label values that metrics.py initialises match what the service really emits."""

from __future__ import annotations

import inspect

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.metrics import STORE_ERROR_KINDS, STORE_OPS, ServiceMetrics
from service.store import HistoryStore, _error_kind


def test_store_label_values_are_the_stores() -> None:
    kinds = {_error_kind(exc) for exc in (RedisTimeoutError("t"), TimeoutError(), RedisConnectionError("c"),
                                          OSError(), ResponseError("r"), RedisError("o"), ValueError())}
    assert kinds == set(STORE_ERROR_KINDS)
    operations = {name for name, _ in inspect.getmembers(HistoryStore, inspect.iscoroutinefunction)}
    assert operations - {"close"} == set(STORE_OPS)


def test_a_task_has_every_series_at_zero_before_any_request() -> None:
    metrics = ServiceMetrics(process=False)
    value = metrics.registry.get_sample_value
    assert value("elmrec_requests_shed_total", {"task": "direct", "reason": "deadline"}) is None
    metrics.init_task("direct")
    for reason in ("queue_full", "deadline", "client_gone"):
        assert value("elmrec_requests_shed_total", {"task": "direct", "reason": reason}) == 0
    assert value("elmrec_queue_depth", {"task": "direct"}) == 0
    assert value("elmrec_queue_wait_seconds_count", {"task": "direct"}) == 0
    assert value("elmrec_history_store_errors_total", {"op": "get", "kind": "timeout"}) == 0
    assert value("elmrec_fallbacks_total", {"kind": "popularity"}) == 0
    assert value("elmrec_model_reloads_total", {"result": "refused"}) == 0
