"""API key: /recommend/* and /users/* need X-API-Key when ELMREC_API_KEY is set; the rest stays open.

/explain (also keyed) is checked in test_service_explain.py on a bundle that carries the task.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from service_testkit import MakeSettings

from service.app import create_app

KEY = "k3y-with-ünïcode"
KEY_BYTES = KEY.encode("utf-8")  # what a client sends; HTTP headers are bytes
PROTECTED = [
    ("post", "/recommend/direct", {"user_id": "1", "candidates": ["1", "2"], "k": 1}),
    ("post", "/recommend/sequential", {"user_id": "1", "k": 1}),
    ("post", "/users/someone/interactions", {"items": ["1"]}),
    ("get", "/users/someone/history", None),
]


@pytest.fixture(scope="module")
def locked(settings_for: MakeSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(API_KEY=KEY))) as test_client:
        yield test_client


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
@pytest.mark.parametrize("header", [None, b"wrong", KEY_BYTES[:-1], KEY_BYTES + b"x", b"", b"k3y-with-"])
def test_missing_or_wrong_key_is_401(
    locked: TestClient, method: str, path: str, body: object, header: bytes | None
) -> None:
    headers = {} if header is None else {"X-API-Key": header}
    response = locked.request(method, path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"detail": "missing or invalid X-API-Key header"}


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_right_key_passes(locked: TestClient, method: str, path: str, body: object) -> None:
    response = locked.request(method, path, json=body, headers={"X-API-Key": KEY_BYTES})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("path", ["/health/live", "/health/ready", "/metrics", "/docs", "/openapi.json"])
def test_health_metrics_docs_stay_open(locked: TestClient, path: str) -> None:
    assert locked.get(path).status_code == 200


def test_compare_is_constant_time() -> None:
    import inspect

    from service import deps

    source = inspect.getsource(deps.require_api_key)
    assert "hmac.compare_digest" in source and "==" not in source


def test_key_is_checked_before_the_body_is_validated(locked: TestClient) -> None:
    response = locked.post("/recommend/direct", json={"user_id": "1", "k": 0})
    assert response.status_code == 401
