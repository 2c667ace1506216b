"""Where the read-only shared datasets live, from any checkout location."""

from __future__ import annotations

import os
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def shared_data_dir() -> Path:
    """The P5 datasets: $ELMREC_SHARED_DATA, else ../shared/data, else /work/shared/data."""
    for candidate in (os.environ.get("ELMREC_SHARED_DATA"), SHARED / "data", "/work/shared/data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return SHARED / "data"
