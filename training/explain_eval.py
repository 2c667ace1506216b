"""Explanation metrics on held-out reviews: BLEU-4 (sacrebleu) and ROUGE-1/2/L (rouge-score).

Held-out reviews are those of each user's held-out pair of the split (leave-one-out: the validation
item for `valid`, the test item for `test`); reviews of training pairs train the model
(`training.trainer.load_reviews` keeps only those), so they are never scored here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_store.bundle import Bundle
from model_store.codec import IdCodec
from model_store.device import describe, resolve_device
from model_store.errors import BundleError, DataError
from model_store.explain import MAX_BEAMS, MAX_EXPLANATION_TOKENS, Explainer, carries_explanation
from model_store.prompts import load_tokenizer
from training.split import leave_one_out

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@dataclass(frozen=True)
class ReviewRow:
    """One line of a reviews file: external ids and the text, with its 1-based line number."""

    line: int
    user: str
    item: str
    text: str


def read_reviews(path: Path) -> list[ReviewRow]:
    """jsonl of {"user", "item", "text"} (external ids); a malformed line raises DataError naming it."""
    rows: list[ReviewRow] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append(ReviewRow(number, str(row["user"]), str(row["item"]), str(row["text"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(
                f"{path}, line {number}: expected a JSON object with user, item, text ({exc})"
            ) from exc
    return rows


@dataclass
class HeldOutReviews:
    """The reviews of held-out pairs (dense ids) and how many lines were not held-out ones."""

    users: list[int]
    items: list[int]
    texts: list[str]
    skipped: int


def held_out_reviews(
    path: Path, codec: IdCodec, sequences: Sequence[Sequence[int]], split: str,
    users: Sequence[int] | None = None,
) -> HeldOutReviews:
    """Reviews of the split's held-out (user, item) pairs (leave-one-out: the validation or the test item).

    Lines of other pairs, of users outside `users`, and held-out pairs whose item is also in the user's
    training part (a repeated item: its review may have been trained on) are skipped and counted.
    """
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    loo = leave_one_out(sequences)
    targets = loo.valid if split == "valid" else loo.test
    chosen = range(len(sequences)) if users is None else users
    held_out = {u: int(targets[u]) for u in chosen if int(targets[u]) not in set(loo.train[u])}
    out = HeldOutReviews([], [], [], 0)
    for row in read_reviews(path):
        u, i = codec.find_user(row.user), codec.find_item(row.item)
        if u is None or i is None:
            kind, name = ("user", row.user) if u is None else ("item", row.item)
            raise DataError(f"{path}, line {row.line}: unknown {kind} id {name!r} (not in the bundle)")
        if held_out.get(u) == i:
            out.users.append(u)
            out.items.append(i)
            out.texts.append(row.text)
        else:
            out.skipped += 1
    return out


def text_metrics(generated: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-4 (sacrebleu, 13a tokenization) and mean ROUGE-1/2/L F1 (rouge-score), in percent."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated texts for {len(references)} references")
    if not references:
        raise ValueError("no texts to score")
    out = {"bleu4": float(sacrebleu.corpus_bleu(list(generated), [list(references)]).score)}
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES))
    scores = [scorer.score(ref, gen) for gen, ref in zip(generated, references, strict=True)]
    for name in ROUGE_TYPES:
        out[name] = 100.0 * sum(s[name].fmeasure for s in scores) / len(scores)
    return {k: round(v, 4) for k, v in out.items()}


def evaluate_explanation(
    bundle: Bundle, reviews: Path, split: str = "test", limit_users: int | None = None,
    device: str = "auto", max_tokens: int | None = None, beams: int = 1, batch_size: int = 64,
    examples: int = 5,
) -> dict[str, Any]:
    """Generate an explanation for every held-out reviewed pair and score it against the review.

    `max_tokens` None = MAX_EXPLANATION_TOKENS; `beams` 1 = greedy decoding.
    """
    if not carries_explanation(bundle.metrics):
        raise BundleError(f"{bundle.path}: the model was not trained on the explanation task (metrics.json "
                          "training.explanation_examples is 0; train with --reviews FILE)")
    if limit_users is not None and limit_users < 1:
        raise DataError(f"--limit-users must be >= 1, got {limit_users}")
    max_tokens = MAX_EXPLANATION_TOKENS if max_tokens is None else max_tokens
    if not 1 <= max_tokens <= MAX_EXPLANATION_TOKENS:
        raise DataError(f"--max-tokens must be in 1..{MAX_EXPLANATION_TOKENS}, got {max_tokens}")
    if not 1 <= beams <= MAX_BEAMS:
        raise DataError(f"--beams must be in 1..{MAX_BEAMS}, got {beams}")
    n = bundle.codec.n_users if limit_users is None else min(limit_users, bundle.codec.n_users)
    pairs = held_out_reviews(reviews, bundle.codec, bundle.data.sequences, split, range(n))
    if not pairs.texts:
        raise DataError(f"{reviews}: no review of a {split} pair among the first {n} users (held-out reviews "
                        f"are those of each user's {split} item; reviews of training pairs train the model)")
    dev = resolve_device(device)
    explainer = Explainer.from_engine(bundle.engine(dev), load_tokenizer(bundle.tokenizer_dir()))
    start = time.perf_counter()
    generated: list[str] = []
    for s in range(0, len(pairs.texts), batch_size):
        generated += explainer.generate(pairs.users[s : s + batch_size], pairs.items[s : s + batch_size],
                                        max_tokens, beams)
    protocol = bundle.config.protocol
    return {
        **text_metrics(generated, pairs.texts),
        "scale": "percent",
        "reviews": len(pairs.texts),
        "skipped_reviews": pairs.skipped,
        "users": len(set(pairs.users)),
        "seconds": round(time.perf_counter() - start, 2),
        "decoding": {"beams": beams, "max_tokens": max_tokens},
        "examples": [
            {"user_id": bundle.codec.users[u], "item_id": bundle.codec.items[i], "generated": g, "review": r}
            for u, i, g, r in zip(pairs.users[:examples], pairs.items, generated, pairs.texts, strict=False)
        ],
        "task": "explanation", "split": split, "dataset": bundle.config.dataset.name,
        "preset": bundle.config.preset, "method": "elmrec", "seed": protocol.seed,
        "device": describe(dev), "model_version": bundle.config.model_version,
        "protocol": {**protocol.model_dump(), "label": protocol.label, "omega": bundle.config.omega.kind},
    }
