"""The service on the real Redis: keys under its prefix; Redis down -> 503 (never 500); reconnection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from service_testkit import MakeSettings, TcpProxy, free_port, new_user_id

from service.app import create_app

DIRECT = "/recommend/direct"
SEQUENTIAL = "/recommend/sequential"


@pytest.fixture(scope="module")
def redis_client(
    settings_for: MakeSettings, redis_server: str, module_redis_prefix: str
) -> Iterator[TestClient]:
    settings = settings_for(REDIS_URL=redis_server, REDIS_PREFIX=module_redis_prefix, HISTORY_MAX_LEN=12)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_interactions_are_stored_in_redis_and_merged(
    redis_client: TestClient, module_redis_prefix: str, sync_redis: redis.Redis
) -> None:
    prefix = module_redis_prefix
    response = redis_client.post("/users/5/interactions", json={"items": ["1", "2"]})
    assert response.status_code == 200
    assert sync_redis.lrange(f"{prefix}history:5", 0, -1) == ["1", "2"]
    history = redis_client.get("/users/5/history").json()
    assert history["known_user"] is True and history["items"][-2:] == ["1", "2"] and history["stored"] == 2
    assert response.json()["length"] == history["length"]
    # the training history is read from the bundle, never copied into Redis
    keys = set(sync_redis.scan_iter(match=f"{prefix}*"))
    assert f"{prefix}history:5" in keys and f"{prefix}history:1" not in keys and len(keys) < 10


def test_history_is_capped(
    redis_client: TestClient, sync_redis: redis.Redis, module_redis_prefix: str
) -> None:
    user = new_user_id()
    items = [str(i) for i in range(1, 31)]
    assert redis_client.post(f"/users/{user}/interactions", json={"items": items}).json()["length"] == 12
    assert sync_redis.llen(f"{module_redis_prefix}history:{user}") == 12
    assert redis_client.get(f"/users/{user}/history").json()["items"] == items[-12:]


def test_filter_drops_items_stored_online(redis_client: TestClient) -> None:
    unfiltered = redis_client.post(SEQUENTIAL, json={"user_id": "9", "k": 5, "filter_history": False}).json()
    top = [entry["item_id"] for entry in unfiltered["items"]]
    redis_client.post("/users/9/interactions", json={"items": top[:2]})
    filtered = redis_client.post(SEQUENTIAL, json={"user_id": "9", "k": 5}).json()
    assert not set(top[:2]) & {entry["item_id"] for entry in filtered["items"]}


def test_cold_start_from_redis_history(redis_client: TestClient) -> None:
    user = new_user_id()
    redis_client.post(f"/users/{user}/interactions", json={"items": ["11", "12", "13"]})
    for path in (DIRECT, SEQUENTIAL):
        body = redis_client.post(path, json={"user_id": user, "k": 3}).json()
        assert body["fallback"] == "cold_start" and len(body["items"]) == 3


@pytest.fixture(scope="module")
def down_client(settings_for: MakeSettings) -> Iterator[TestClient]:
    """Redis pointed at a closed port; raise_server_exceptions makes any 500 fail the test."""
    settings = settings_for(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", REDIS_TIMEOUT_S=0.5)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_redis_down_ready_is_503_with_reason(down_client: TestClient) -> None:
    response = down_client.get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not_ready" and body["checks"] == {"model": "ok", "store": "unavailable"}
    assert "redis" in body["reason"] and "unreachable" in body["reason"]
    assert down_client.get("/health/live").status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (DIRECT, {"user_id": "1", "candidates": ["1", "2", "3"], "k": 2}),  # known user + candidates
        (SEQUENTIAL, {"user_id": "1", "history": ["1", "2"], "k": 2}),      # own history
        (SEQUENTIAL, {"user_id": "stranger", "history": ["1", "2"], "k": 2}),
    ],
)
def test_redis_down_requests_with_their_own_data_answer(
    down_client: TestClient, path: str, body: dict[str, object]
) -> None:
    response = down_client.post(path, json=body)
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == 2


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", SEQUENTIAL, {"user_id": "1", "k": 2}),
        ("post", DIRECT, {"user_id": "1", "k": 2}),                        # retrieval excludes history
        ("post", DIRECT, {"user_id": "stranger", "candidates": ["1"]}),    # cold start needs the store
        ("post", "/users/1/interactions", {"items": ["1"]}),               # a write is refused, not dropped
        ("get", "/users/1/history", None),
    ],
)
def test_redis_down_store_dependent_requests_are_503(
    down_client: TestClient, method: str, path: str, body: object
) -> None:
    response = down_client.request(method, path, json=body)
    assert response.status_code == 503, response.text
    assert "history store unavailable" in response.json()["detail"]
    assert response.headers["retry-after"] == "1"


def test_redis_down_is_counted(down_client: TestClient) -> None:
    down_client.get("/users/1/history")
    text = down_client.get("/metrics").text
    assert 'elmrec_history_store_errors_total{kind="connection",op="get"}' in text
    assert ('elmrec_request_duration_seconds_count{method="GET",route="/users/{user_id}/history",'
            'status="503"}') in text


def test_reconnects_when_redis_comes_back(
    settings_for: MakeSettings, redis_proxy: TcpProxy, redis_prefix: str
) -> None:
    settings = settings_for(REDIS_URL=f"redis://127.0.0.1:{redis_proxy.port}/0", REDIS_PREFIX=redis_prefix,
                            REDIS_TIMEOUT_S=0.5)
    with TestClient(create_app(settings)) as client:
        assert client.post("/users/u/interactions", json={"items": ["1"]}).status_code == 200
        redis_proxy.stop()
        assert client.post("/users/u/interactions", json={"items": ["2"]}).status_code == 503
        assert client.get("/health/ready").status_code == 503
        redis_proxy.start()
        assert client.get("/health/ready").status_code == 200
        assert client.post("/users/u/interactions", json={"items": ["3"]}).json()["length"] == 2
        assert client.get("/users/u/history").json()["items"] == ["1", "3"]
