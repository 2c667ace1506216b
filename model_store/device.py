"""The one device helper: resolve "auto" / "cpu" / "cuda[:n]" to a torch device, and describe it."""

from __future__ import annotations

import os

import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """"auto" = the GPU when torch sees one, else the CPU; anything else as torch reads it."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """The GPU's name, or "cpu (N cores)": what every metric record reports."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores)"
