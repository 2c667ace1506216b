"""POST /explain: the offline explainer's text for a trained bundle, 404 without the task, bad input 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from review_fixture import review_text
from service_testkit import make_settings

from model_store.bundle import Bundle, load_bundle
from model_store.explain import Explainer
from model_store.prompts import load_tokenizer
from service.app import create_app

KEY = "explain-key"


@pytest.fixture(scope="module")
def explained(explained_bundle: Path) -> Bundle:
    return load_bundle(explained_bundle)


@pytest.fixture(scope="module")
def locked(explained_bundle: Path) -> Iterator[TestClient]:
    """The explained bundle served with an API key."""
    with TestClient(create_app(make_settings(explained_bundle, API_KEY=KEY)),
                    headers={"X-API-Key": KEY}) as test_client:
        yield test_client


def test_explanation_is_the_offline_explainers_text(locked: TestClient, explained: Bundle) -> None:
    offline = Explainer.from_engine(explained.engine("cpu"), load_tokenizer(explained.tokenizer_dir()))
    users = [0, 5, 9]
    items = [explained.data.sequences[u][-1] for u in users]  # held-out pairs: their reviews never trained
    expected = offline.generate(users, items)
    answers = []
    for u, i in zip(users, items, strict=True):
        body = {"user_id": explained.codec.users[u], "item_id": explained.codec.items[i]}
        response = locked.post("/explain", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["user_id"] == body["user_id"] and answer["item_id"] == body["item_id"]
        assert answer["model_version"] == explained.config.model_version
        answers.append(answer["explanation"])
    assert answers == expected
    assert sum(a == review_text(explained.codec.items[i]) for a, i in zip(answers, items, strict=True)) >= 2
    short = locked.post("/explain", json={"user_id": explained.codec.users[0],
                                          "item_id": explained.codec.items[items[0]], "max_tokens": 1})
    assert short.status_code == 200
    assert len(short.json()["explanation"].split()) <= 1


def test_explain_needs_the_api_key(locked: TestClient, explained: Bundle) -> None:
    body = {"user_id": explained.codec.users[0], "item_id": explained.codec.items[0]}
    for headers in ({"X-API-Key": ""}, {"X-API-Key": "wrong"}):
        response = locked.post("/explain", json=body, headers=headers)
        assert response.status_code == 401
        assert response.json() == {"detail": "missing or invalid X-API-Key header"}


def test_unknown_ids_are_named(locked: TestClient, explained: Bundle) -> None:
    user, item = explained.codec.users[0], explained.codec.items[0]
    response = locked.post("/explain", json={"user_id": "nobody", "item_id": item})
    assert response.status_code == 422
    assert response.json()["unknown_user_ids"] == ["nobody"]
    assert "unknown user id 'nobody'" in response.json()["detail"]
    response = locked.post("/explain", json={"user_id": user, "item_id": "NOT-AN-ITEM"})
    assert response.status_code == 422
    assert response.json() == {"detail": "item_id: unknown item id 'NOT-AN-ITEM' (not in the model's "
                               "catalogue)", "unknown_item_ids": ["NOT-AN-ITEM"]}
    both = locked.post("/explain", json={"user_id": "nobody", "item_id": "NOT-AN-ITEM"}).json()
    assert both["unknown_user_ids"] == ["nobody"] and both["unknown_item_ids"] == ["NOT-AN-ITEM"]


@pytest.mark.parametrize("body", [
    {"user_id": "1", "item_id": "2", "max_tokens": 0},
    {"user_id": "1", "item_id": "2", "max_tokens": 65},
    {"user_id": "1", "item_id": "2", "max_tokens": "5"},
    {"user_id": "1", "item_id": "2", "beam": 3},
    {"user_id": "1"},
    {"user_id": "", "item_id": "2"},
])
def test_bad_bodies_are_422(locked: TestClient, body: dict[str, object]) -> None:
    assert locked.post("/explain", json=body).status_code == 422


def test_a_bundle_without_the_task_answers_404(client: TestClient, bundle: Bundle) -> None:
    body = {"user_id": bundle.codec.users[0], "item_id": bundle.codec.items[0]}
    response = client.post("/explain", json=body)
    assert response.status_code == 404
    answer = response.json()
    assert "not trained on the explanation task" in answer["detail"] and "--reviews" in answer["detail"]
    assert answer["model_version"] == bundle.config.model_version
