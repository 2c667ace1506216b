"""Property-based fuzzing of every route with schemathesis, against the app's own OpenAPI schema.

Each operation gets valid and invalid inputs (schemathesis' positive and negative modes), on an open
app, and on a locked app called with and without the API key. A response fails the test if it is a 5xx,
if its status code is not documented for the route, if its content type or body violates the schema,
or if an input the schema forbids is accepted. The default suite runs FAST_EXAMPLES per operation;
`pytest -m slow tests/service/test_reliability_fuzz.py` runs SLOW_EXAMPLES.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.config import SchemathesisConfig
from schemathesis.python import asgi
from service_testkit import MakeSettings

from service.app import create_app

KEY = "fuzz-key"
FAST_EXAMPLES = 25
SLOW_EXAMPLES = 300
RELOAD_EXAMPLES = 4  # an empty reload body really reloads the bundle (about 2 s on 2 CPU cores)
CHECKS = [getattr(checks, name) for name in (
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance", "negative_data_rejection")]
# 413 is how an over-long list is refused when it also exceeds ELMREC_MAX_BODY_BYTES (documented per route)
CONFIG = {"checks": {"negative_data_rejection": {
    "expected-statuses": [400, 401, 403, 404, 405, 409, 413, 415, 422]}}}
COMMON = {"deadline": None, "derandomize": True, "database": None,
          "suppress_health_check": [HealthCheck.too_slow, HealthCheck.filter_too_much,
                                    HealthCheck.function_scoped_fixture]}


@pytest.fixture(scope="module")
def apps(settings_for: MakeSettings) -> Iterator[dict[str, Any]]:
    """An open app and a locked one; schemathesis runs their lifespans (loaded once, stopped at the end)."""
    made = {"open": create_app(settings_for()), "locked": create_app(settings_for(API_KEY=KEY))}
    yield made
    asgi.shutdown_lifespans()


def _schema(app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=SchemathesisConfig.from_dict(CONFIG))


@pytest.fixture(scope="module")
def open_schema(apps: dict[str, Any]) -> Any:
    return _schema(apps["open"])


@pytest.fixture(scope="module")
def locked_schema(apps: dict[str, Any]) -> Any:
    return _schema(apps["locked"])


open_api = schemathesis.pytest.from_fixture("open_schema")  # admin answers 403 there: fuzzed too
locked_api = schemathesis.pytest.from_fixture("locked_schema").exclude(path="/admin/reload")
admin_api = schemathesis.pytest.from_fixture("locked_schema").include(path="/admin/reload")


def _call(case: Any, headers: dict[str, str] | None = None) -> None:
    response = case.call_and_validate(headers=headers, checks=CHECKS)
    assert response.status_code < 500, response.text


@open_api.parametrize()
@settings(max_examples=FAST_EXAMPLES, **COMMON)
def test_open_app(case: Any) -> None:
    _call(case)


@locked_api.parametrize()
@settings(max_examples=FAST_EXAMPLES, **COMMON)
def test_locked_app_with_the_key(case: Any) -> None:
    _call(case, {"X-API-Key": KEY})


@locked_api.parametrize()
@settings(max_examples=FAST_EXAMPLES, **COMMON)
def test_locked_app_without_the_key(case: Any) -> None:
    """Protected routes refuse every request: 401, or 405 / 413 / 400 / 422-not-JSON where the method,
    the body size or the body's syntax is refused before the key is looked at; open routes still answer."""
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "x-api-key"}
    response = case.call_and_validate(checks=CHECKS)
    if case.path.startswith(("/recommend", "/users")):
        assert response.status_code in (400, 401, 405, 413, 422), response.text
        if response.status_code == 422:  # FastAPI parses JSON before it runs the key dependency
            assert [e["type"] for e in response.json()["detail"]] == ["json_invalid"], response.text
    assert response.status_code < 500, response.text


@admin_api.parametrize()
@settings(max_examples=RELOAD_EXAMPLES, **COMMON)
def test_admin_reload(case: Any) -> None:
    _call(case, {"X-API-Key": KEY})


@pytest.mark.slow
@open_api.parametrize()
@settings(max_examples=SLOW_EXAMPLES, **COMMON)
def test_open_app_long(case: Any) -> None:
    _call(case)


@pytest.mark.slow
@locked_api.parametrize()
@settings(max_examples=SLOW_EXAMPLES, **COMMON)
def test_locked_app_with_the_key_long(case: Any) -> None:
    _call(case, {"X-API-Key": KEY})
