"""The explanation fixture: review text for the synthetic P5 data (no review text ships with the data).

Each item gets the text of its block of ten consecutive items (the blocks users walk through), so the
text is learnable from the item alone and a held-out pair's review can be predicted.
"""

from __future__ import annotations

import json
from pathlib import Path

REVIEW_TEXTS = ("soft and gentle on my skin", "smells lovely and lasts all day",
                "too sticky, would not buy again")


def review_text(item_id: str) -> str:
    """The fixture's review of any (user, item) pair: the text of the item's block."""
    return REVIEW_TEXTS[(int(item_id) - 1) // 10 % len(REVIEW_TEXTS)]


def write_reviews(data: Path, path: Path) -> Path:
    """jsonl {user, item, text}: one review per interaction of the P5 folder (train, valid and test pairs)."""
    rows = []
    for line in (data / "sequential_data.txt").read_text().splitlines():
        user, *items = line.split()
        rows.extend({"user": user, "item": item, "text": review_text(item)} for item in items)
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path
