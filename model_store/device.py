"""Torch device resolution ("auto" / "cpu" / "cuda[:N]") and its description, for every entry point."""

from __future__ import annotations

import os

import torch

from model_store.errors import DataError

CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device) -> torch.device:
    """auto -> cuda when torch sees a GPU, else cpu; cpu / cuda / cuda:N as given (cuda needs a GPU)."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        raise DataError(f"device {name!r}: expected one of {', '.join(CHOICES)} or cuda:<index>")
    if kind == "cuda" and not torch.cuda.is_available():
        raise DataError(f"device {name!r}: torch sees no CUDA device; use auto or cpu")
    return torch.device(name)


def describe(device: torch.device | str) -> str:
    """The device in words, as every result JSON records it: the GPU's name, or `cpu (N cores)`."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores)"
