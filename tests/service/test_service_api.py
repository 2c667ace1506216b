"""Every route and every client error of the API, on the tiny bundle with the in-process store."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from service_testkit import new_user_id

from model_store.bundle import Bundle

DIRECT = "/recommend/direct"
SEQUENTIAL = "/recommend/sequential"


def _ids(body: dict[str, object]) -> list[str]:
    items = body["items"]
    assert isinstance(items, list)
    return [entry["item_id"] for entry in items]


# -- health, model, docs ---------------------------------------------------------------------------

def test_live_and_ready(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"model": "ok", "store": "ok"}, "reason": None}


def test_model_describes_the_bundle(client: TestClient, bundle: Bundle) -> None:
    body = client.get("/model").json()
    assert body["model_version"] == bundle.config.model_version
    assert body["preset"] == "tiny-items" and body["model_kind"] == "items"
    assert body["protocol"]["label"] == "honest"
    assert body["dataset"]["n_users"] == 40 and body["dataset"]["n_items"] == 30
    assert body["metrics"]["direct"]["hr@10"] == bundle.metrics["direct"]["hr@10"]
    assert body["device"] == "cpu" and body["backend"] == "torch"
    assert body["rerank_n"] == bundle.config.rerank_n


def test_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in (DIRECT, SEQUENTIAL, "/users/{user_id}/interactions", "/users/{user_id}/history",
                 "/health/live", "/health/ready", "/model"):
        assert path in paths


# -- direct ------------------------------------------------------------------------------------------

def test_direct_ranks_the_given_candidates(client: TestClient, bundle: Bundle) -> None:
    candidates = ["3", "9", "14", "20", "27"]
    body = client.post(DIRECT, json={"user_id": "7", "candidates": candidates, "k": 3}).json()
    assert body["user_id"] == "7" and body["fallback"] is None
    assert body["model_version"] == bundle.config.model_version
    assert len(body["items"]) == 3 and set(_ids(body)) <= set(candidates)
    scores = [entry["score"] for entry in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)


def test_direct_k_larger_than_candidates_returns_them_all_once(client: TestClient) -> None:
    body = client.post(DIRECT, json={"user_id": "7", "candidates": ["3", "9", "3"], "k": 10}).json()
    assert sorted(_ids(body)) == ["3", "9"]


def test_direct_without_candidates_retrieves_outside_the_history(client: TestClient, bundle: Bundle) -> None:
    history = set(client.get("/users/2/history").json()["items"])
    body = client.post(DIRECT, json={"user_id": "2", "k": 30}).json()
    assert body["fallback"] is None
    assert body["items"] and not set(_ids(body)) & history
    assert len(body["items"]) == bundle.codec.n_items - len(history)


def test_direct_cold_start_uses_stored_history(client: TestClient) -> None:
    user = new_user_id()
    assert client.post(f"/users/{user}/interactions", json={"items": ["4", "5", "6"]}).status_code == 200
    body = client.post(DIRECT, json={"user_id": user, "k": 5}).json()
    assert body["fallback"] == "cold_start"
    assert len(body["items"]) == 5 and not {"4", "5", "6"} & set(_ids(body))
    ranked = client.post(DIRECT, json={"user_id": user, "candidates": ["1", "2", "3"], "k": 3}).json()
    assert ranked["fallback"] == "cold_start" and sorted(_ids(ranked)) == ["1", "2", "3"]
    assert all(entry["score"] < 0 for entry in ranked["items"])


def test_direct_user_with_nothing_gets_popularity(client: TestClient, bundle: Bundle) -> None:
    body = client.post(DIRECT, json={"user_id": new_user_id(), "k": 4}).json()
    assert body["fallback"] == "popularity"
    assert _ids(body) == [bundle.codec.items[i] for i in bundle.config.popular_items[:4]]
    assert [entry["score"] for entry in body["items"]] == [0.0, -1.0, -2.0, -3.0]
    popular = [bundle.codec.items[i] for i in bundle.config.popular_items]
    given = [popular[5], popular[1], popular[9]]
    ranked = client.post(DIRECT, json={"user_id": new_user_id(), "candidates": given, "k": 2}).json()
    assert ranked["fallback"] == "popularity" and _ids(ranked) == [popular[1], popular[5]]


def test_direct_unknown_items_are_named(client: TestClient) -> None:
    response = client.post(DIRECT, json={"user_id": "1", "candidates": ["3", "nope", "B0000X"]})
    assert response.status_code == 422
    body = response.json()
    assert "nope" in body["detail"] and "B0000X" in body["detail"]
    assert body["unknown_item_ids"] == ["nope", "B0000X"]


@pytest.mark.parametrize(
    "payload",
    [
        {"candidates": ["1"]},                                   # no user_id
        {"user_id": "", "candidates": ["1"]},                    # empty id
        {"user_id": "x" * 257},                                  # id too long
        {"user_id": "1", "candidates": []},                      # empty candidates
        {"user_id": "1", "candidates": "1,2"},                   # wrong type
        {"user_id": "1", "candidates": [1, 2]},                  # ids are strings
        {"user_id": "1", "k": 0},
        {"user_id": "1", "k": 101},
        {"user_id": "1", "k": "ten"},
        {"user_id": "1", "top_k": 5},                            # unknown field
        ["user_id", "1"],                                        # not an object
    ],
)
def test_direct_bad_bodies_are_422(client: TestClient, payload: object) -> None:
    response = client.post(DIRECT, json=payload)
    assert response.status_code == 422, response.text
    assert "detail" in response.json()


def test_direct_too_many_candidates(client: TestClient) -> None:
    response = client.post(DIRECT, json={"user_id": "1", "candidates": ["1"] * 101})
    assert response.status_code == 422
    assert "at most 100" in response.json()["detail"]


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(DIRECT, content=b'{"user_id": ', headers={"content-type": "application/json"})
    assert response.status_code == 422 and "detail" in response.json()


# -- sequential ------------------------------------------------------------------------------------

def test_sequential_known_user_with_stored_history(client: TestClient) -> None:
    body = client.post(SEQUENTIAL, json={"user_id": "3", "k": 5}).json()
    assert body["fallback"] is None and len(body["items"]) == 5
    history = set(client.get("/users/3/history").json()["items"])
    assert not set(_ids(body)) & history
    scores = [entry["score"] for entry in body["items"]]
    assert scores == sorted(scores, reverse=True)


def test_sequential_supplied_history_replaces_the_stored_one(client: TestClient) -> None:
    body = client.post(SEQUENTIAL, json={"user_id": "3", "k": 5, "history": ["10", "11", "12"]}).json()
    assert len(body["items"]) == 5 and not {"10", "11", "12"} & set(_ids(body))


def test_sequential_cold_start_and_popularity(client: TestClient, bundle: Bundle) -> None:
    supplied = client.post(SEQUENTIAL, json={"user_id": new_user_id(), "history": ["7", "8"], "k": 3}).json()
    assert supplied["fallback"] == "cold_start" and len(supplied["items"]) == 3
    user = new_user_id()
    client.post(f"/users/{user}/interactions", json={"items": ["7", "8"]})
    stored = client.post(SEQUENTIAL, json={"user_id": user, "k": 3}).json()
    assert stored["fallback"] == "cold_start" and _ids(stored) == _ids(supplied)
    nothing = client.post(SEQUENTIAL, json={"user_id": new_user_id(), "k": 3}).json()
    assert nothing["fallback"] == "popularity"
    assert _ids(nothing) == [bundle.codec.items[i] for i in bundle.config.popular_items[:3]]


def test_sequential_extra_and_k(client: TestClient) -> None:
    for extra in (0, 5, 40):
        body = client.post(SEQUENTIAL, json={"user_id": "4", "k": 2, "extra": extra}).json()
        assert len(body["items"]) <= 2
    body = client.post(SEQUENTIAL, json={"user_id": "4", "k": 25, "extra": 0, "filter_history": False}).json()
    assert len(body["items"]) == 25


def test_sequential_errors(client: TestClient) -> None:
    unknown = client.post(SEQUENTIAL, json={"user_id": "1", "history": ["1", "zzz"]})
    assert unknown.status_code == 422 and "zzz" in unknown.json()["detail"]
    too_long = client.post(SEQUENTIAL, json={"user_id": "1", "history": ["1"] * 201})
    assert too_long.status_code == 422 and "at most 200" in too_long.json()["detail"]
    for bad in ({"user_id": "1", "extra": -1}, {"user_id": "1", "extra": 101},
                {"user_id": "1", "filter_history": "perhaps"}, {"user_id": "1", "filter_histroy": False}):
        assert client.post(SEQUENTIAL, json=bad).status_code == 422, bad


# -- users -------------------------------------------------------------------------------------------

def test_interactions_then_history(client: TestClient) -> None:
    user = new_user_id()
    empty = client.get(f"/users/{user}/history").json()
    assert empty == {"user_id": user, "items": [], "length": 0, "known_user": False, "stored": 0}
    first = client.post(f"/users/{user}/interactions", json={"items": ["1", "2"]})
    assert first.status_code == 200 and first.json() == {"user_id": user, "length": 2}
    assert client.post(f"/users/{user}/interactions", json={"items": ["3"]}).json()["length"] == 3
    history = client.get(f"/users/{user}/history").json()
    assert history["items"] == ["1", "2", "3"] and history["stored"] == 3


def test_known_user_history_is_bundle_then_stored(client: TestClient, bundle: Bundle) -> None:
    trained = [bundle.codec.items[i] for i in bundle.data.sequences[39]]
    history = client.get("/users/40/history").json()
    assert history["known_user"] is True and history["items"] == trained and history["stored"] == 0


def test_interactions_errors(client: TestClient) -> None:
    user = new_user_id()
    unknown = client.post(f"/users/{user}/interactions", json={"items": ["1", "ghost"]})
    assert unknown.status_code == 422 and unknown.json()["unknown_item_ids"] == ["ghost"]
    assert client.get(f"/users/{user}/history").json()["length"] == 0  # nothing half-written
    assert client.post(f"/users/{user}/interactions", json={"items": []}).status_code == 422
    assert client.post(f"/users/{user}/interactions", json={}).status_code == 422
    assert client.post(f"/users/{'u' * 257}/interactions", json={"items": ["1"]}).status_code == 422


# -- HTTP-level errors ------------------------------------------------------------------------------

def test_not_found_and_method_not_allowed_are_json(client: TestClient) -> None:
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and "detail" in missing.json()
    wrong = client.get(DIRECT)
    assert wrong.status_code == 405 and "detail" in wrong.json()


def test_body_size_limit(client: TestClient) -> None:
    big = {"user_id": "1", "candidates": ["1"] * 20_000}
    response = client.post(DIRECT, json=big)
    assert response.status_code == 413
    assert "ELMREC_MAX_BODY_BYTES" in response.json()["detail"]


def test_body_size_limit_without_content_length(client: TestClient) -> None:
    def chunks() -> object:
        for _ in range(100):
            yield b" " * 1024

    response = client.post(DIRECT, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


# -- metrics ---------------------------------------------------------------------------------------

def test_metrics_exposes_every_named_metric(client: TestClient, bundle: Bundle) -> None:
    client.post(DIRECT, json={"user_id": "1", "candidates": ["1", "2"], "k": 1})
    client.post(SEQUENTIAL, json={"user_id": "1", "k": 1})
    client.post(DIRECT, json={"user_id": new_user_id(), "k": 1})
    client.post(DIRECT, json={"user_id": "1", "candidates": ["nope"]})
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in ("elmrec_request_duration_seconds_bucket", "elmrec_requests_in_flight",
                 "elmrec_inference_batch_size_bucket", "elmrec_queue_wait_seconds_bucket",
                 "elmrec_inference_duration_seconds_bucket", "elmrec_history_store_operations_total",
                 "elmrec_fallbacks_total", "elmrec_model_info", "# TYPE elmrec_history_store_errors_total"):
        assert name in text, name
    assert 'route="/recommend/direct",status="200"' in text.replace('method="POST",', "")
    assert 'route="/recommend/direct",status="422"' in text.replace('method="POST",', "")
    assert 'elmrec_inference_batch_size_count{task="direct"}' in text
    assert 'elmrec_inference_batch_size_count{task="sequential"}' in text
    assert 'elmrec_fallbacks_total{kind="popularity"}' in text
    assert 'elmrec_history_store_operations_total{backend="memory",op="get"}' in text
    info = (f'elmrec_model_info{{backend="torch",device="cpu",preset="{bundle.config.preset}",'
            f'version="{bundle.config.model_version}"}} 1.0')
    assert info in text


def test_unmatched_paths_share_one_route_label(client: TestClient) -> None:
    client.get("/no/such/path/123")
    client.get("/users/abc/history")
    text = client.get("/metrics").text
    assert 'route="unmatched"' in text and "/no/such/path/123" not in text
    assert 'route="/users/{user_id}/history"' in text and "/users/abc/history" not in text
