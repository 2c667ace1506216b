"""Bad input of every kind gets a clear 4xx naming the problem, and the service answers normally after it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_testkit import MakeSettings, new_user_id

from model_store.bundle import Bundle
from service.app import create_app

DIRECT = "/recommend/direct"
SEQUENTIAL = "/recommend/sequential"
KEY = "bad-inputs-key"
JSON = {"content-type": "application/json"}
TEN_MB = 10 * 1024 * 1024

# (method, path, keyword arguments of the request, expected status, a fragment the body must contain)
CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    # unknown ids: items are named; (unknown *users* are not an error: they get a fallback, tested below)
    ("post", DIRECT, {"json": {"user_id": "1", "candidates": ["3", "no-such-item"]}}, 422, "'no-such-item'"),
    ("post", SEQUENTIAL, {"json": {"user_id": "1", "history": ["B0-UNKNOWN"]}}, 422, "'B0-UNKNOWN'"),
    ("post", "/users/u1/interactions", {"json": {"items": ["1", "ghost"]}}, 422, "'ghost'"),
    # empty and oversized lists
    ("post", DIRECT, {"json": {"user_id": "1", "candidates": []}}, 422, "at least 1 item"),
    ("post", "/users/u1/interactions", {"json": {"items": []}}, 422, "at least 1 item"),
    ("post", DIRECT, {"json": {"user_id": "1", "candidates": ["1"] * 101}}, 422, "at most 100"),
    ("post", SEQUENTIAL, {"json": {"user_id": "1", "history": ["1"] * 201}}, 422, "at most 200"),
    ("post", "/users/u1/interactions", {"json": {"items": ["1"] * 1001}}, 422, "at most 1000"),
    ("post", DIRECT, {"json": {"user_id": "1", "candidates": ["1"] * 10_001}}, 422, "at most 10000 items"),
    ("post", DIRECT, {"json": {"user_id": "1", "candidates": ["12345"] * 20_000}}, 413, "MAX_BODY_BYTES"),
    # k of 0, negative, huge, and extra out of range
    ("post", DIRECT, {"json": {"user_id": "1", "k": 0}}, 422, "greater than or equal to 1"),
    ("post", DIRECT, {"json": {"user_id": "1", "k": -3}}, 422, "greater than or equal to 1"),
    ("post", SEQUENTIAL, {"json": {"user_id": "1", "k": 10**30}}, 422, "less than or equal to 100"),
    ("post", SEQUENTIAL, {"json": {"user_id": "1", "extra": -1}}, 422, "greater than or equal to 0"),
    # wrong JSON types (strict: no silent coercion of booleans, strings or floats into integers)
    ("post", DIRECT, {"json": {"user_id": 12, "k": 2}}, 422, "valid string"),
    ("post", DIRECT, {"json": {"user_id": "1", "k": "2"}}, 422, "valid integer"),
    ("post", DIRECT, {"json": {"user_id": "1", "k": True}}, 422, "valid integer"),
    ("post", DIRECT, {"json": {"user_id": "1", "k": 2.5}}, 422, "valid integer"),
    ("post", SEQUENTIAL, {"json": {"user_id": "1", "extra": False}}, 422, "valid integer"),
    ("post", SEQUENTIAL, {"json": {"user_id": "1", "filter_history": "yes"}}, 422, "valid boolean"),
    ("post", DIRECT, {"json": {"user_id": "1", "candidates": "1,2"}}, 422, "valid list"),
    ("post", DIRECT, {"json": {"user_id": "1", "candidates": [1, 2]}}, 422, "valid string"),
    ("post", DIRECT, {"json": ["user_id", "1"]}, 422, "valid dictionary"),
    ("post", DIRECT, {"json": None}, 422, "Field required"),
    ("post", DIRECT, {"json": {"user_id": "1", "topk": 3}}, 422, "Extra inputs are not permitted"),
    # numbers JSON cannot represent, echoed back without breaking the error response
    ("post", DIRECT, {"content": b'{"user_id": "1", "k": NaN}', "headers": JSON}, 422, "valid integer"),
    ("post", DIRECT, {"content": b'{"user_id": "1", "k": 1e400}', "headers": JSON}, 422, "valid integer"),
    ("post", DIRECT, {"json": {"user_id": "1", "k": 2e300}}, 422, "valid integer"),
    # non-JSON bodies
    ("post", DIRECT, {"content": b'{"user_id": ', "headers": JSON}, 422, "JSON decode error"),
    ("post", DIRECT, {"content": b"user_id=1&k=2",
                      "headers": {"content-type": "application/x-www-form-urlencoded"}}, 422, "dictionary"),
    ("post", DIRECT, {"content": b'{"user_id": "1"}', "headers": {"content-type": "text/plain"}}, 422,
     "dictionary"),
    ("post", DIRECT, {"content": b"\xff\xfe\x00\x81binary", "headers": JSON}, 422, "JSON decode error"),
    ("post", DIRECT, {"content": b"\xff\xfe\x00\x81binary"}, 422, "dictionary"),
    ("post", DIRECT, {"content": b"[" * 50_000, "headers": JSON}, 400, "error parsing the body"),
    # a 10 MB body, declared and chunked
    ("post", DIRECT, {"content": b" " * TEN_MB, "headers": JSON}, 413, "ELMREC_MAX_BODY_BYTES"),
    ("post", DIRECT, {"content": iter([b" " * (1 << 20)] * 10), "headers": JSON}, 413, "MAX_BODY_BYTES"),
    ("post", DIRECT, {"content": b"{}", "headers": {**JSON, "content-length": "ten"}}, 400, "Content-Length"),
    # unicode and very long ids
    ("post", DIRECT, {"json": {"user_id": "1", "candidates": ["ß-日本-🙂"]}}, 422, "'ß-日本-🙂'"),
    ("post", DIRECT, {"content": b'{"user_id": "\\ud800", "k": 2}', "headers": JSON}, 422, "unicode"),
    ("post", DIRECT, {"content": b'{"user_id": "1", "\\udfff": 2}', "headers": JSON}, 422, "unicode"),
    ("post", DIRECT, {"json": {"user_id": "u" * 257}}, 422, "at most 256 characters"),
    ("post", DIRECT, {"json": {"user_id": "1", "candidates": ["é" * 10_000]}}, 422, "at most 256 characters"),
    ("get", "/users/" + "ü" * 300 + "/history", {}, 422, "at most 256 characters"),
    ("post", "/users/" + "x" * 5000 + "/interactions", {"json": {"items": ["1"]}}, 422, "at most 256"),
    # methods and paths that do not exist
    ("get", DIRECT, {}, 405, "Method Not Allowed"),
    ("delete", "/users/u1/history", {}, 405, "Method Not Allowed"),
    ("get", "/recommend/everything", {}, 404, "Not Found"),
]


def _healthy(client: TestClient) -> None:
    assert client.get("/health/ready").status_code == 200
    answer = client.post(DIRECT, json={"user_id": "1", "candidates": ["3", "4", "5"], "k": 2})
    assert answer.status_code == 200 and len(answer.json()["items"]) == 2


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "fragment"), CASES,
                         ids=[f"{i}-{c[0]}-{c[3]}" for i, c in enumerate(CASES)])
def test_bad_input_is_a_clear_4xx_and_the_service_stays_healthy(
    client: TestClient, method: str, path: str, kwargs: dict[str, Any], status: int, fragment: str
) -> None:
    response = client.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert "detail" in body and fragment in json.dumps(body, ensure_ascii=False), response.text
    _healthy(client)


@pytest.mark.parametrize("user_id", ["never-seen-user", "日本語ユーザー🙂", "u" * 256, "with space/slash"])
def test_unknown_and_unicode_users_are_not_errors(client: TestClient, bundle: Bundle, user_id: str) -> None:
    """An unknown user is a new user, not bad input: popularity, then cold start once it has history."""
    assert bundle.codec.find_user(user_id) is None
    most_popular = [bundle.codec.items[i] for i in bundle.config.popular_items[:3]]
    for path in (DIRECT, SEQUENTIAL):  # no history anywhere: the three most popular training items
        first = client.post(path, json={"user_id": user_id, "k": 3})
        assert first.status_code == 200 and first.json()["user_id"] == user_id
        assert first.json()["fallback"] == "popularity", first.text
        assert [x["item_id"] for x in first.json()["items"]] == most_popular
    fresh = new_user_id() + user_id[:50].replace("/", "_")  # a "/" cannot travel in the path
    assert client.post(f"/users/{fresh}/interactions", json={"items": ["4", "5"]}).status_code == 200
    for path in (DIRECT, SEQUENTIAL):
        answer = client.post(path, json={"user_id": fresh, "k": 3}).json()
        assert answer["fallback"] == "cold_start", answer
        assert not {"4", "5"} & {x["item_id"] for x in answer["items"]}  # its history is not recommended


def test_duplicates_are_answered_once_not_refused(client: TestClient) -> None:
    """Duplicate candidates count once (documented); duplicate interactions are repeat purchases, kept."""
    ranked = client.post(DIRECT, json={"user_id": "1", "candidates": ["3", "3", "4", "3"], "k": 10})
    assert ranked.status_code == 200 and sorted(i["item_id"] for i in ranked.json()["items"]) == ["3", "4"]
    user = new_user_id()
    assert client.post(f"/users/{user}/interactions", json={"items": ["2", "2"]}).json()["length"] == 2
    assert client.get(f"/users/{user}/history").json()["items"] == ["2", "2"]


@pytest.fixture(scope="module")
def locked(settings_for: MakeSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(API_KEY=KEY))) as test_client:
        yield test_client


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}, {"X-API-Key": KEY + " "},
                                     {"x-api-key": KEY.upper()}, {"Authorization": f"Bearer {KEY}"}])
def test_missing_or_wrong_key_is_401_and_the_service_stays_healthy(
    locked: TestClient, headers: dict[str, str]
) -> None:
    for method, path, body in (("post", DIRECT, {"user_id": "1", "k": 1}),
                               ("post", SEQUENTIAL, {"user_id": "1"}),
                               ("post", "/users/u/interactions", {"items": ["1"]}),
                               ("get", "/users/u/history", None), ("post", "/admin/reload", None)):
        response = locked.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.json() == {"detail": "missing or invalid X-API-Key header"}
    assert locked.get("/health/ready").status_code == 200
    ok = locked.post(DIRECT, json={"user_id": "1", "candidates": ["3", "4"], "k": 1},
                     headers={"X-API-Key": KEY})
    assert ok.status_code == 200
