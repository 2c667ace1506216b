"""Hot reload: POST /admin/reload swaps bundle versions under traffic with no failed request, every answer
made by exactly one version, and a corrupt or incompatible bundle refused while the old one keeps serving."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from service_testkit import MakeSettings

from model_store.bundle import write_manifest
from service.app import create_app

KEY = "admin-key"
ADMIN = {"X-API-Key": KEY}
DIRECT = {"user_id": "7", "candidates": ["3", "9", "14", "20", "27"], "k": 5}
SEQUENTIAL = {"user_id": "3", "k": 5}


def _variant(source: Path, target: Path, edit: Any, manifest: bool = True) -> Path:
    shutil.copytree(source, target)
    config_path = target / "config.json"
    config = json.loads(config_path.read_text())
    edit(config)
    config_path.write_text(json.dumps(config))
    if manifest:
        write_manifest(target)
    return target


@pytest.fixture(scope="module")
def versions(service_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """v1 (the tiny bundle), v2 (another version whose direct scores differ), and two refused bundles."""
    root = tmp_path_factory.mktemp("reload")

    def v2(config: dict[str, Any]) -> None:
        config["model_version"] = "v2-" + config["model_version"]
        config["graph_prior"]["direct_weight"] += 3.0

    def future_format(config: dict[str, Any]) -> None:
        config["format_version"] = 99

    def tampered(config: dict[str, Any]) -> None:
        config["model_version"] = "tampered"

    return {
        "v1": service_bundle,
        "v2": _variant(service_bundle, root / "v2", v2),
        "incompatible": _variant(service_bundle, root / "incompatible", future_format),
        "corrupt": _variant(service_bundle, root / "corrupt", tampered, manifest=False),  # sha256 mismatch
    }


def _answer(body: dict[str, Any]) -> list[tuple[str, float]]:
    return [(entry["item_id"], round(entry["score"], 3)) for entry in body["items"]]


async def test_reload_under_traffic(settings_for: MakeSettings, versions: dict[str, Path]) -> None:
    app = create_app(settings_for(API_KEY=KEY, MAX_WAIT_MS=20))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=transport, base_url="http://test", headers=ADMIN, timeout=60
    ) as client:

        async def reload(name: str) -> httpx.Response:
            return await client.post("/admin/reload", json={"model_dir": str(versions[name])})

        async def reference() -> tuple[str, list[tuple[str, float]]]:
            body = (await client.post("/recommend/direct", json=DIRECT)).json()
            return body["model_version"], _answer(body)

        v1, answer_v1 = await reference()
        assert (await reload("v2")).status_code == 200
        v2, answer_v2 = await reference()
        assert v1 != v2 and answer_v1 != answer_v2  # the two versions are told apart by their answers
        expected = {v1: answer_v1, v2: answer_v2}
        assert (await reload("v1")).status_code == 200

        stop = asyncio.Event()
        seen: list[tuple[int, str, list[tuple[str, float]] | None]] = []

        async def traffic(path: str, body: dict[str, Any]) -> None:
            while not stop.is_set():
                response = await client.post(path, json=body)
                answer = response.json()
                seen.append((response.status_code, answer.get("model_version", ""),
                             _answer(answer) if path.endswith("direct") and response.status_code == 200
                             else None))

        workers = [asyncio.create_task(traffic("/recommend/direct", DIRECT)) for _ in range(4)]
        workers += [asyncio.create_task(traffic("/recommend/sequential", SEQUENTIAL)) for _ in range(2)]
        results = []
        for name in ("v2", "corrupt", "v1", "incompatible", "v2"):
            await asyncio.sleep(0.3)
            results.append((name, await reload(name)))
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*workers)

        for name, response in results:
            body = response.json()
            if name in ("corrupt", "incompatible"):
                assert response.status_code == 422, response.text
                assert "keeps serving" in body["detail"]
                assert ("config.json is corrupt" if name == "corrupt" else "format 99") in body["detail"]
            else:
                assert response.status_code == 200, response.text
                assert body["drained"] is True and body["model_version"] in (v1, v2)
        print({"requests": len(seen),
               "by_version": {v: sum(1 for _, s, _ in seen if s == v) for v in (v1, v2)},
               "reload_seconds": [r.json().get("seconds") for _, r in results]})
        assert len(seen) > 30
        assert {status for status, _, _ in seen} == {200}
        assert {version for _, version, _ in seen} == {v1, v2}  # both served, nothing else
        for _, version, answer in seen:
            if answer is not None:
                assert answer == expected[version], version  # made by exactly the version it names

        model = (await client.get("/model")).json()
        assert model["model_version"] == v2 and model["reloads"] == 5
        metrics = (await client.get("/metrics")).text
        assert 'elmrec_model_reloads_total{result="success"} 5.0' in metrics
        assert 'elmrec_model_reloads_total{result="refused"} 2.0' in metrics
        assert f'version="{v2}"' in metrics and f'version="{v1}"' not in metrics  # elmrec_model_info


async def test_default_reload_rereads_the_model_dir_pointer(
    settings_for: MakeSettings, versions: dict[str, Path], tmp_path: Path
) -> None:
    """ELMREC_MODEL_DIR as a symlink: move it, POST /admin/reload with no body, the new target serves."""
    pointer = tmp_path / "current"
    pointer.symlink_to(versions["v1"])
    app = create_app(settings_for(API_KEY=KEY, MODEL_DIR=pointer))
    with TestClient(app, headers=ADMIN) as client:
        before = client.get("/model").json()["model_version"]
        pointer.unlink()
        pointer.symlink_to(versions["v2"])
        response = client.post("/admin/reload")
        assert response.status_code == 200, response.text
        assert response.json()["previous_version"] == before
        assert client.get("/model").json()["model_version"] == response.json()["model_version"] != before


def test_a_refused_reload_keeps_the_old_version(
    settings_for: MakeSettings, versions: dict[str, Path]
) -> None:
    with TestClient(create_app(settings_for(API_KEY=KEY)), headers=ADMIN) as client:
        version = client.get("/model").json()["model_version"]
        for body in ({"model_dir": str(versions["corrupt"])}, {"model_dir": "/no/such/bundle"},
                     {"model_dir": str(versions["incompatible"])}):
            response = client.post("/admin/reload", json=body)
            assert response.status_code == 422 and response.json()["model_version"] == version
        assert client.post("/admin/reload", json={"model_dir": 5}).status_code == 422
        assert client.post("/admin/reload", json={"path": "x"}).status_code == 422
        assert client.get("/model").json()["reloads"] == 0
        answer = client.post("/recommend/direct", json=DIRECT)
        assert answer.status_code == 200 and answer.json()["model_version"] == version


def test_admin_needs_the_key_and_is_off_without_one(settings_for: MakeSettings, client: TestClient) -> None:
    refused = client.post("/admin/reload")  # the shared open app: no ELMREC_API_KEY
    assert refused.status_code == 403 and "ELMREC_API_KEY" in refused.json()["detail"]
    with TestClient(create_app(settings_for(API_KEY=KEY))) as locked:
        for headers in ({}, {"X-API-Key": "wrong"}):
            assert locked.post("/admin/reload", headers=headers).status_code == 401
        assert locked.get("/model").json()["reloads"] == 0
