"""Served = offline (graph prior off, and on as shipped): direct and sequential answers equal the evaluator's,
filtering drops all history, batched = unbatched."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_testkit import MakeSettings, make_settings

from model_store.bundle import Bundle, load_bundle
from model_store.engine import filter_rerank
from service.app import create_app
from service.errors import StoreUnavailableError
from service.store import InMemoryHistoryStore
from training.evaluate import split_cases

DIRECT = "/recommend/direct"
SEQUENTIAL = "/recommend/sequential"
Call = tuple[str, dict[str, Any]]
Served = tuple[TestClient, Bundle]


def _ids(body: dict[str, Any]) -> list[str]:
    return [entry["item_id"] for entry in body["items"]]


@pytest.fixture(scope="module", params=["digits, prior off", "digits, prior on", "shipped: items, prior on"])
def served(request: pytest.FixtureRequest, tiny_bundle: Path, shipped_bundle: Bundle,
           bundle: Bundle) -> Iterator[Served]:
    """The digit-id tiny bundle (graph prior off: the T5 alone), one trained with the graph prior on, and
    the default model kind as shipped (items, prior on), each served by its own app."""
    chosen = {"digits, prior off": load_bundle(tiny_bundle), "digits, prior on": shipped_bundle,
              "shipped: items, prior on": bundle}[request.param]
    with TestClient(create_app(make_settings(chosen.path))) as client:
        yield client, chosen


def test_the_served_bundles_are_what_their_names_say(
    shipped_bundle: Bundle, bundle: Bundle, tiny_bundle: Path
) -> None:
    """What makes the "prior on" cases below test the prior: validation chose non-zero weights."""
    for with_prior in (shipped_bundle, bundle):
        prior = with_prior.config.graph_prior
        assert prior.direct_weight > 0 and prior.sequential_weight > 0, prior
    assert shipped_bundle.config.graph_prior.direct_reads_history and shipped_bundle.item_graph is not None
    assert bundle.config.model.kind == "items" and shipped_bundle.config.model.kind == "digits"
    plain = load_bundle(tiny_bundle).config.graph_prior
    assert plain.direct_weight == plain.sequential_weight == 0


def test_direct_ranking_equals_the_offline_evaluator(served: Served) -> None:
    """The evaluator's scoring (exact T5 scores of positive + negatives, then the bundle's graph prior)
    given the history the service holds for the user (the bundle's whole recorded sequence)."""
    client, bundle = served
    users = list(range(12))
    case = split_cases(bundle.data.sequences, bundle.data.negatives, "test", users)
    candidates = [[target, *negs] for target, negs in zip(case.targets, case.negatives, strict=True)]
    engine = bundle.engine("cpu")
    # what evaluate_direct calls, given the history the service reads for a known user (the bundle's)
    t5 = engine.score_direct(case.users, candidates, pure=True,
                             histories=[bundle.data.sequences[u] for u in case.users])
    items = bundle.codec.items
    changed_by_prior = 0
    for user, cands, pure in zip(case.users, candidates, t5, strict=True):
        scores = engine.with_graph(user, pure, None, history=bundle.data.sequences[user])
        expected = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        changed_by_prior += [i for i, _ in expected] != sorted(pure, key=lambda i: (-pure[i], i))
        body = client.post(DIRECT, json={"user_id": bundle.codec.users[user],
                                         "candidates": [items[i] for i in cands], "k": len(cands)}).json()
        assert body["fallback"] is None
        assert _ids(body) == [items[i] for i, _ in expected]
        served_scores = [entry["score"] for entry in body["items"]]
        assert served_scores == pytest.approx([s for _, s in expected], abs=1e-4)
    assert (changed_by_prior > 0) == (bundle.config.graph_prior.direct_weight > 0)


def test_sequential_answer_equals_the_offline_evaluator(served: Served) -> None:
    """The evaluator's beam (width max(beam, k + N), the graph prior's rescoring) and history filter, for
    the test split's history sent in the request."""
    client, bundle = served
    users = list(range(12))
    case = split_cases(bundle.data.sequences, bundle.data.negatives, "test", users)
    engine = bundle.engine("cpu")
    k, extra = 10, bundle.config.rerank_n
    width = max(bundle.config.beam, k + extra)
    generated = engine.beam_sequential(case.users, case.histories, width)  # what evaluate_sequential calls
    pure = engine.beam_sequential(case.users, case.histories, width, pure=True)
    items = bundle.codec.items
    changed_by_prior = 0
    for i, user in enumerate(case.users):
        expected = filter_rerank(generated[i], case.histories[i], k, extra, True)
        changed_by_prior += ([s.item for s in expected] !=
                             [s.item for s in filter_rerank(pure[i], case.histories[i], k, extra, True)])
        body = client.post(SEQUENTIAL, json={"user_id": bundle.codec.users[user], "k": k,
                                             "history": [items[j] for j in case.histories[i]]}).json()
        assert body["fallback"] is None
        assert _ids(body) == [items[s.item] for s in expected]
        assert [e["score"] for e in body["items"]] == pytest.approx([s.score for s in expected], abs=1e-4)
    assert (changed_by_prior > 0) == (bundle.config.graph_prior.sequential_weight > 0)


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
    shipped_bundle: Bundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped prior mixes item co-occurrence into the direct score: served = engine given the user's
    history; with the store down, a known user is still answered, from the bundle's history."""
    cooc = shipped_bundle
    assert cooc.config.graph_prior.direct_cooc_mix > 0
    engine = cooc.engine("cpu")
    items = cooc.codec.items
    with TestClient(create_app(make_settings(cooc.path))) as client:
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
    with TestClient(create_app(make_settings(cooc.path))) as client:  # the store is down: bundle history
        user, cands = 2, list(range(12))
        scores = engine.score_direct([user], [cands], histories=[cooc.data.sequences[user]])[0]
        body = client.post(DIRECT, json={"user_id": cooc.codec.users[user],
                                         "candidates": [items[i] for i in cands], "k": 12})
        assert body.status_code == 200
        expected = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        assert _ids(body.json()) == [items[i] for i, _ in expected]
