"""Served = offline: direct ranks equal the evaluator's, filtering drops all history, batched = unbatched."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save_file
from service_testkit import MakeSettings, make_settings

from model_store.bundle import ITEM_GRAPH, Bundle, load_bundle, write_manifest
from model_store.item_graph import ItemGraph
from service.app import create_app
from service.errors import StoreUnavailableError
from service.store import InMemoryHistoryStore
from training.evaluate import split_cases

DIRECT = "/recommend/direct"
SEQUENTIAL = "/recommend/sequential"
Call = tuple[str, dict[str, Any]]


def _ids(body: dict[str, Any]) -> list[str]:
    return [entry["item_id"] for entry in body["items"]]


def test_direct_ranking_equals_the_offline_evaluator(client: TestClient, bundle: Bundle) -> None:
    """The evaluator's test cases (positive + negatives), scored by the evaluator's engine call."""
    users = list(range(12))
    case = split_cases(bundle.data.sequences, bundle.data.negatives, "test", users)
    candidates = [[target, *negs] for target, negs in zip(case.targets, case.negatives, strict=True)]
    engine = bundle.engine("cpu")
    offline = engine.score_direct(case.users, candidates)  # exactly what evaluate_direct calls
    items = bundle.codec.items
    for user, cands, scores in zip(case.users, candidates, offline, strict=True):
        expected = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        body = client.post(DIRECT, json={"user_id": bundle.codec.users[user],
                                         "candidates": [items[i] for i in cands], "k": len(cands)}).json()
        assert body["fallback"] is None
        assert _ids(body) == [items[i] for i, _ in expected]
        served = [entry["score"] for entry in body["items"]]
        assert served == pytest.approx([s for _, s in expected], abs=1e-4)


def test_filter_history_never_returns_a_history_item(client: TestClient, bundle: Bundle) -> None:
    users = bundle.codec.users
    leaked_without_filter = 0
    for user in users:
        history = set(client.get(f"/users/{user}/history").json()["items"])
        kept = client.post(SEQUENTIAL, json={"user_id": user, "k": 10, "filter_history": True}).json()
        assert len(kept["items"]) == 10
        assert not set(_ids(kept)) & history, f"user {user} got items of its history"
        raw = client.post(SEQUENTIAL, json={"user_id": user, "k": 10, "filter_history": False}).json()
        leaked_without_filter += len(set(_ids(raw)) & history)
    assert leaked_without_filter > 0  # the model does propose history items: the filter is what drops them
    supplied = ["1", "2", "3", "4", "5", "6"]
    for user in users[:5]:
        body = client.post(SEQUENTIAL, json={"user_id": user, "history": supplied, "k": 10}).json()
        assert not set(_ids(body)) & set(supplied)


def _calls(bundle: Bundle) -> list[Call]:
    items = bundle.codec.items
    calls: list[Call] = []
    for n, user in enumerate(bundle.codec.users[:14]):
        cands = [items[(n * 7 + j * 3) % len(items)] for j in range(3 + n % 9)]
        calls.append((DIRECT, {"user_id": user, "candidates": cands, "k": 4}))
    calls += [(DIRECT, {"user_id": "3", "k": 6}), (DIRECT, {"user_id": "cold-1", "k": 5}),
              (DIRECT, {"user_id": "cold-1", "candidates": ["1", "2", "3", "9"], "k": 3})]
    for n, user in enumerate(bundle.codec.users[10:24]):
        body: dict[str, Any] = {"user_id": user, "k": 3 + n % 5, "extra": [0, 5, 10, 25][n % 4]}
        if n % 3 == 0:
            body["history"] = [items[(n + j) % len(items)] for j in range(1 + n % 6)]
        if n % 4 == 1:
            body["filter_history"] = False
        calls.append((SEQUENTIAL, body))
    calls += [(SEQUENTIAL, {"user_id": "cold-1", "k": 5}),
              (SEQUENTIAL, {"user_id": "cold-2", "history": ["4", "8"], "k": 5})]
    return calls


Batches = dict[str, tuple[float | None, float | None]]


def _serve(
    settings_for: MakeSettings, calls: list[Call], concurrent: bool, **overrides: Any
) -> tuple[list[dict[str, Any]], Batches]:
    app = create_app(settings_for(**overrides))
    with TestClient(app) as client:
        client.post("/users/cold-1/interactions", json={"items": ["5", "6", "7"]})

        def one(call: Call) -> dict[str, Any]:
            response = client.post(call[0], json=call[1])
            assert response.status_code == 200, response.text
            return dict(response.json())

        if concurrent:
            with ThreadPoolExecutor(len(calls)) as pool:
                answers = list(pool.map(one, calls))
        else:
            answers = [one(call) for call in calls]
        registry = app.state.metrics.registry
        batches = {task: (registry.get_sample_value("elmrec_inference_batch_size_count", {"task": task}),
                          registry.get_sample_value("elmrec_inference_batch_size_sum", {"task": task}))
                   for task in ("direct", "sequential")}
    return answers, batches


def test_batched_equals_unbatched(settings_for: MakeSettings, bundle: Bundle) -> None:
    calls = _calls(bundle)
    single, single_batches = _serve(settings_for, calls, concurrent=False, MAX_BATCH=1, MAX_WAIT_MS=0)
    # every call at once: the admission queue must hold them all (its default, MAX_BATCH, would refuse some)
    batched, batches = _serve(settings_for, calls, concurrent=True, MAX_BATCH=8, MAX_WAIT_MS=100,
                              MAX_QUEUE=len(calls))
    for task, (count, total) in single_batches.items():
        assert count == total, f"{task}: the unbatched app ran batches larger than 1"
    for task, (count, total) in batches.items():
        assert count is not None and total is not None and count < total, f"{task}: nothing was batched"
        assert total / count <= 8
    for call, one, many in zip(calls, single, batched, strict=True):
        assert _ids(many) == _ids(one), call
        assert many["fallback"] == one["fallback"]
        assert [e["score"] for e in many["items"]] == pytest.approx([e["score"] for e in one["items"]],
                                                                     abs=1e-4)


def test_direct_with_cooccurrence_reads_the_served_history(
    bundle: Bundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prior mixing item co-occurrence into the direct score: served = engine given the user's history;
    with the store down, a known user is still answered, from the bundle's history."""
    folder = tmp_path / "cooc"
    shutil.copytree(bundle.path, folder)
    users_e = np.repeat(np.arange(len(bundle.data.sequences)), [len(s) for s in bundle.data.sequences])
    items_e = np.concatenate([np.asarray(s) for s in bundle.data.sequences])
    graph = ItemGraph.build(len(bundle.data.sequences), bundle.codec.n_items, users_e, items_e)
    save_file(graph.to_tensors(), str(folder / ITEM_GRAPH))
    raw = json.loads((folder / "config.json").read_text())
    raw["graph_prior"].update(direct_weight=2.0, direct_cooc_mix=0.5, direct_cooc_decay=0.6)
    (folder / "config.json").write_text(json.dumps(raw))
    write_manifest(folder)
    cooc = load_bundle(folder)
    engine = cooc.engine("cpu")
    items = cooc.codec.items
    with TestClient(create_app(make_settings(folder))) as client:
        for user in range(6):
            cands = list(range(12))
            history = cooc.data.sequences[user]
            scores = engine.score_direct([user], [cands], histories=[history])[0]
            without = engine.score_direct([user], [cands])[0]
            assert scores != without  # the history changes the ranking scores
            body = client.post(DIRECT, json={"user_id": cooc.codec.users[user],
                                             "candidates": [items[i] for i in cands], "k": 12}).json()
            expected = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
            assert _ids(body) == [items[i] for i, _ in expected]
            assert [e["score"] for e in body["items"]] == pytest.approx([s for _, s in expected], abs=1e-4)


    async def down(self: InMemoryHistoryStore, user_id: str) -> list[str]:
        raise StoreUnavailableError("get", "connection", "store down (test)")

    monkeypatch.setattr(InMemoryHistoryStore, "get", down)
    with TestClient(create_app(make_settings(folder))) as client:  # the store is down: bundle history
        user, cands = 2, list(range(12))
        scores = engine.score_direct([user], [cands], histories=[cooc.data.sequences[user]])[0]
        body = client.post(DIRECT, json={"user_id": cooc.codec.users[user],
                                         "candidates": [items[i] for i in cands], "k": 12})
        assert body.status_code == 200
        expected = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        assert _ids(body.json()) == [items[i] for i, _ in expected]
