"""Resumable training state without pickle: weights and optimizer moments in safetensors, the rest in JSON."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn


def save_checkpoint(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
    best: Mapping[str, nn.Module] | None = None,
) -> None:
    """Write model, optimizer and `state` (JSON-able) atomically into `folder`."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    for key, module in (best or {}).items():
        save_model(module, str(tmp / _best_file(key)))
    tensors: dict[str, torch.Tensor] = {}
    for index, param_state in optimizer.state_dict()["state"].items():
        for name, value in param_state.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{index}.{name}"] = tensor.detach().cpu().contiguous()
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    state = dict(state, torch_rng=torch.get_rng_state().tolist())
    (tmp / "state.json").write_text(json.dumps(state))
    previous = _previous(folder)
    shutil.rmtree(previous, ignore_errors=True)
    if folder.exists():
        os.replace(folder, previous)  # kept until the new one is in place: a kill loses no checkpoint
    os.replace(tmp, folder)
    shutil.rmtree(previous, ignore_errors=True)


def _best_file(key: str) -> str:
    """best.safetensors for selection "mean" (the format before per-task selection), else best-<key>."""
    return "best.safetensors" if key == "mean" else f"best-{key}.safetensors"


def _previous(folder: Path) -> Path:
    return folder.with_name(folder.name + ".old")


def recover_checkpoint(folder: Path) -> bool:
    """Put back the previous checkpoint if a kill came between moving it aside and the new one landing."""
    previous = _previous(folder)
    if not folder.exists() and previous.exists():
        os.replace(previous, folder)
    return folder.exists()


def load_checkpoint(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
    best: Mapping[str, nn.Module] | None = None,
) -> dict[str, Any]:
    """Restore what save_checkpoint wrote; returns the JSON state."""
    load_model(model, str(folder / "model.safetensors"))
    for key, module in (best or {}).items():
        if (folder / _best_file(key)).exists():
            load_model(module, str(folder / _best_file(key)))
    tensors = load_file(str(folder / "optimizer.safetensors"))
    opt_state = optimizer.state_dict()
    restored: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        restored.setdefault(int(index), {})[name] = value
    opt_state["state"] = restored
    optimizer.load_state_dict(opt_state)
    state: dict[str, Any] = json.loads((folder / "state.json").read_text())
    torch.set_rng_state(torch.tensor(state.pop("torch_rng"), dtype=torch.uint8))
    return state
