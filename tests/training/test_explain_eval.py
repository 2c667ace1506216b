"""Explanation metrics: BLEU-4 / ROUGE on held-out reviews only, and `evaluate --task explanation`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from review_fixture import review_text

from model_store.bundle import load_bundle
from model_store.codec import IdCodec
from model_store.errors import DataError
from training.cli import main
from training.explain_eval import held_out_reviews, read_reviews, text_metrics


def test_metrics_of_known_texts() -> None:
    same = ["soft and gentle on my skin", "smells lovely and lasts all day"]
    assert text_metrics(same, same) == {"bleu4": 100.0, "rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    assert text_metrics(["red blue green yellow"], ["one two three four"]) == {
        "bleu4": 0.0, "rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    partial = text_metrics(["the cat sat on"], ["the cat sat"])  # P = 3/4, R = 1: F1 = 6/7
    assert partial["rouge1"] == pytest.approx(100 * 6 / 7, abs=1e-3)
    assert partial["rouge2"] == pytest.approx(100 * 0.8, abs=1e-3)  # P = 2/3, R = 1
    with pytest.raises(ValueError):
        text_metrics(["a"], [])


def test_only_the_splits_held_out_pairs_are_scored(tiny_reviews: Path) -> None:
    rows = read_reviews(tiny_reviews)
    users = list(dict.fromkeys(r.user for r in rows))
    items = list(dict.fromkeys(r.item for r in rows))
    codec = IdCodec.build(users, items)
    index = {item: i for i, item in enumerate(items)}
    sequences = [[index[r.item] for r in rows if r.user == u] for u in users]
    for split, position in (("test", -1), ("valid", -2)):
        held = held_out_reviews(tiny_reviews, codec, sequences, split)
        assert held.users == list(range(len(users)))
        assert held.items == [seq[position] for seq in sequences]
        assert held.texts == [review_text(items[seq[position]]) for seq in sequences]
        assert held.skipped == len(rows) - len(users)
    assert len(held_out_reviews(tiny_reviews, codec, sequences, "test", users=[0, 3]).texts) == 2


def test_a_held_out_item_also_in_training_is_not_scored(tmp_path: Path) -> None:
    codec = IdCodec.build(["u"], ["a", "b"])
    reviews = tmp_path / "r.jsonl"
    reviews.write_text('{"user": "u", "item": "a", "text": "seen in training too"}\n')
    held = held_out_reviews(reviews, codec, [[0, 1, 0]], "test")  # test item a is also a training item
    assert held.texts == [] and held.skipped == 1


@pytest.mark.parametrize(("line", "problem"), [
    ('{"user": "1", "item": "2"}', "expected a JSON object with user, item, text"),
    ("not json", "expected a JSON object"),
    ('{"user": "nobody", "item": "2", "text": "x"}', "unknown user id 'nobody'"),
    ('{"user": "1", "item": "no-such-item", "text": "x"}', "unknown item id 'no-such-item'"),
])
def test_bad_review_lines_are_named(tmp_path: Path, line: str, problem: str) -> None:
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text('{"user": "1", "item": "2", "text": "ok"}\n\n' + line + "\n")
    codec = IdCodec.build(["1"], ["2", "3", "4"])
    with pytest.raises(DataError, match=rf"reviews.jsonl, line 3: {problem}"):
        held_out_reviews(reviews, codec, [[0, 1, 2]], "test")


def test_evaluate_explanation_cli(explained_bundle: Path, tiny_reviews: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The trained fixture reproduces most held-out reviews; every test pair's review is scored once."""
    assert main(["evaluate", "--bundle", str(explained_bundle), "--task", "explanation",
                 "--reviews", str(tiny_reviews), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    n_users = load_bundle(explained_bundle).codec.n_users
    assert result["task"] == "explanation" and result["split"] == "test"
    assert result["reviews"] == result["users"] == n_users
    assert result["bleu4"] > 50 and result["rougeL"] > 60, result
    assert result["decoding"] == {"beams": 1, "max_tokens": 64}
    assert result["examples"][0]["review"] == review_text(result["examples"][0]["item_id"])
    assert main(["evaluate", "--bundle", str(explained_bundle), "--task", "explanation",
                 "--reviews", str(tiny_reviews), "--device", "cpu", "--json", "--split", "valid",
                 "--limit-users", "5", "--max-tokens", "4", "--beams", "2"]) == 0
    short = json.loads(capsys.readouterr().out)
    assert short["reviews"] == 5 and short["decoding"] == {"beams": 2, "max_tokens": 4}


@pytest.mark.parametrize(("args", "message"), [
    (["--task", "explanation"], "--task explanation needs --reviews FILE"),
    (["--task", "direct", "--reviews", "r.jsonl"], "--reviews applies to --task explanation only"),
    (["--task", "explanation", "--reviews", "{reviews}", "--max-tokens", "0"],
     "--max-tokens must be in 1..64"),
    (["--task", "explanation", "--reviews", "{reviews}", "--beams", "99"], "--beams must be in 1..8"),
])
def test_evaluate_explanation_refuses_bad_arguments(
    explained_bundle: Path, tiny_reviews: Path, capsys: pytest.CaptureFixture[str], args: list[str],
    message: str,
) -> None:
    argv = ["evaluate", "--bundle", str(explained_bundle), *[a.format(reviews=tiny_reviews) for a in args]]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_bundle_without_the_task_is_refused(tiny_bundle: Path, tiny_reviews: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--bundle", str(tiny_bundle), "--task", "explanation",
                 "--reviews", str(tiny_reviews)]) == 2
    assert "not trained on the explanation task" in capsys.readouterr().err
