"""Bundle round trip, manifest verification and refusal of corrupt or incompatible bundles."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model_store.bundle import FORMAT_VERSION, MANIFEST, load_bundle, write_manifest
from model_store.errors import BundleError


@pytest.fixture
def copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, target)
    return target


def test_round_trip_restores_weights_omega_ids_and_data(tiny_bundle: Path, tiny_data: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    model = bundle.build_model()
    again = load_bundle(tiny_bundle).build_model()
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    lines = (tiny_data / "sequential_data.txt").read_text().split("\n")
    first = lines[0].split()
    assert [bundle.codec.items[i] for i in bundle.data.sequences[0]] == first[1:]
    assert len(bundle.data.sequences) == bundle.config.dataset.n_users == len([x for x in lines if x])
    assert bundle.omega.users.shape == (bundle.codec.n_users, bundle.config.model.omega_dim)
    assert bundle.metrics["direct"]["protocol"]["id_scheme"] == "shuffled"
    for u, negs in enumerate(bundle.data.negatives):
        assert not set(negs) & set(bundle.data.sequences[u])


def test_weights_file_is_safetensors_not_pickle(tiny_bundle: Path) -> None:
    names = {p.name for p in tiny_bundle.iterdir()}
    assert {"config.json", "model.safetensors", "omega.safetensors", "ids.json", "metrics.json",
            MANIFEST} <= names
    assert not any(p.suffix in {".pt", ".pkl", ".bin"} for p in tiny_bundle.rglob("*"))
    with np.load(tiny_bundle / "dataset.npz", allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)


def test_corrupted_weights_are_refused(copy: Path) -> None:
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.safetensors is corrupt"):
        load_bundle(copy)


def test_missing_file_is_refused(copy: Path) -> None:
    (copy / "omega.safetensors").unlink()
    with pytest.raises(BundleError, match=r"omega\.safetensors"):
        load_bundle(copy)


def test_missing_manifest_is_refused(copy: Path) -> None:
    (copy / MANIFEST).unlink()
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(copy)


def test_newer_format_is_refused_even_with_a_valid_manifest(copy: Path) -> None:
    config = json.loads((copy / "config.json").read_text())
    config["format_version"] = FORMAT_VERSION + 1
    (copy / "config.json").write_text(json.dumps(config))
    write_manifest(copy)
    with pytest.raises(BundleError, match="not supported"):
        load_bundle(copy)


def test_incompatible_shapes_are_refused(copy: Path) -> None:
    config = json.loads((copy / "config.json").read_text())
    config["model"]["d_ff"] = config["model"]["d_ff"] * 2
    (copy / "config.json").write_text(json.dumps(config))
    write_manifest(copy)
    with pytest.raises(BundleError, match="does not fit"):
        load_bundle(copy).build_model()


def test_unknown_config_field_is_refused(copy: Path) -> None:
    config = json.loads((copy / "config.json").read_text())
    config["surprise"] = 1
    (copy / "config.json").write_text(json.dumps(config))
    write_manifest(copy)
    with pytest.raises(BundleError, match=r"config\.json"):
        load_bundle(copy)


def test_unlisted_files_are_reported_and_unlisted_tokenizer_files_refused(
    copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (copy / "notes.txt").write_text("not part of the bundle")
    (copy / "extra").mkdir()
    (copy / "extra" / "weights.safetensors").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="model_store.bundle"):
        load_bundle(copy)
    warned = [r.getMessage() for r in caplog.records if "not in the manifest" in r.getMessage()]
    assert len(warned) == 1 and "2 file(s)" in warned[0], warned
    assert "extra/weights.safetensors, notes.txt" in warned[0]
    # the tokenizer loader reads every file of tokenizer/: an unverified one there is refused
    (copy / "tokenizer" / "added_tokens.json").write_text("{}")
    with pytest.raises(BundleError, match=r"tokenizer/added_tokens\.json not in the manifest"):
        load_bundle(copy)


def test_a_complete_manifest_warns_about_nothing(copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="model_store.bundle"):
        load_bundle(copy)
    assert not [r for r in caplog.records if "not in the manifest" in r.getMessage()]


def test_manifest_paths_outside_the_bundle_are_malformed(copy: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("x")
    digest = hashlib.sha256(b"x").hexdigest()
    with (copy / MANIFEST).open("a") as fh:
        fh.write(f"{digest}  ../outside.txt\n")
    with pytest.raises(BundleError, match=r"MANIFEST\.sha256:\d+: malformed manifest line"):
        load_bundle(copy)
