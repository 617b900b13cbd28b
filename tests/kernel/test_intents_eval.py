"""`evaluate` on tiny hand-checkable CSV files, and its metric helpers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from agentflow.kernel.intents import DEFAULT_NOVELTY_KEEP, OUT_OF_SCOPE
from agentflow.kernel.intents_eval import (
    evaluate,
    expected_calibration_error,
    load_labelled_csv,
    macro_f1,
)

TRAIN = [
    ("hello", "GREETING"),
    ("hi there", "GREETING"),
    ("good morning", "GREETING"),
    ("I forgot my password", "PASSWORD"),
    ("reset my password please", "PASSWORD"),
    ("I cannot log in to my account", "PASSWORD"),
    # Out-of-scope rows in training must never become a category.
    ("what's the weather like", "oos"),
    ("play some music", "oos"),
]


# 20 examples per category: enough to fit a novelty gate.
GATED_TRAIN = [
    (f"{verb} my password {n}", "PASSWORD") for verb in ("reset", "lost") for n in range(10)
] + [(f"{verb} my card {n}", "CARD") for verb in ("block", "freeze") for n in range(10)]


def _write(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        writer.writerows(rows)
    return path


def test_metrics_with_an_out_of_scope_label(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.csv", TRAIN)
    test = _write(
        tmp_path / "test.csv",
        [
            ("hello there", "GREETING"),  # -> GREETING, right
            ("forgot password", "PASSWORD"),  # -> PASSWORD, right
            ("hi", "PASSWORD"),  # -> GREETING, wrong (mislabelled on purpose)
            ("who won the football match", "oos"),  # -> OUT_OF_SCOPE, right
            ("hello", "oos"),  # -> GREETING, wrong
        ],
    )
    report = evaluate(train, test, oos_label="oos")

    assert report["n_categories"] == 2  # GREETING and PASSWORD; "oos" is not a category
    assert report["n_train"] == 6
    assert report["n_oos_train_excluded"] == 2
    assert report["n_test"] == 5
    assert report["n_oos_test"] == 2
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["in_scope_accuracy"] == pytest.approx(2 / 3)
    assert report["oos_recall"] == pytest.approx(1 / 2)
    # F1: GREETING P=1/3 R=1 -> 0.5; PASSWORD P=1 R=1/2 -> 2/3; OUT_OF_SCOPE P=1 R=1/2 -> 2/3.
    assert report["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3)
    assert report["out_of_scope_rate"] == pytest.approx(1 / 5)
    assert report["top1_accuracy"] == pytest.approx(2 / 3)
    assert report["train_seconds"] >= 0
    assert report["eval_seconds"] >= 0
    # The mistakes, most frequent first: "hi" -> GREETING and "hello" -> GREETING.
    assert sorted(map(tuple, report["top_confusions"])) == [
        (OUT_OF_SCOPE, "GREETING", 1),
        ("PASSWORD", "GREETING", 1),
    ]
    json.dumps(report)  # the CLI prints it as one JSON object


def test_without_an_oos_label_every_label_is_a_category(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.csv", TRAIN)
    test = _write(
        tmp_path / "test.csv",
        [("hello there", "GREETING"), ("forgot password", "PASSWORD"), ("", "GREETING")],
    )
    report = evaluate(train, test)
    assert report["n_categories"] == 3
    assert report["n_train"] == 8
    # The empty message is out of scope, which counts as wrong without an oos label...
    assert report["accuracy"] == pytest.approx(2 / 3)
    assert report["out_of_scope_rate"] == pytest.approx(1 / 3)
    # ...and it has no best candidate at all, so top-1 counts it wrong too.
    assert report["top1_accuracy"] == pytest.approx(2 / 3)
    assert "oos_recall" not in report
    assert "in_scope_accuracy" not in report


def test_a_sweep_moves_the_novelty_gate_of_one_trained_classifier(tmp_path: Path) -> None:
    # Each keep re-scores the same trained classifier.
    train = _write(tmp_path / "train.csv", GATED_TRAIN)
    test = _write(tmp_path / "test.csv", [("reset my password", "PASSWORD"), ("lunch", "oos")])

    report = evaluate(train, test, oos_label="oos", encoder=None, sweep=(1.0, 0.5))

    assert report["encoder"] is None
    assert [row["novelty_keep"] for row in report["sweep"]] == [1.0, 0.5]
    looser, stricter = report["sweep"]
    assert looser["novelty_threshold"] < stricter["novelty_threshold"]
    assert {"accuracy", "in_scope_accuracy", "oos_recall"} <= set(looser)
    # The report's own figures are those of the default gate, restored after the sweep.
    assert report["novelty_threshold"] not in (looser["novelty_threshold"], 0.0)


def test_a_novelty_keep_trains_the_gate_at_that_keep(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.csv", GATED_TRAIN)
    test = _write(tmp_path / "test.csv", [("reset my password", "PASSWORD"), ("lunch", "oos")])

    default = evaluate(train, test, oos_label="oos", encoder=None)
    strict = evaluate(train, test, oos_label="oos", encoder=None, novelty_keep=0.5)

    assert default["novelty_keep"] == DEFAULT_NOVELTY_KEEP  # the lexical classifier's default
    assert strict["novelty_keep"] == 0.5
    assert strict["novelty_threshold"] > default["novelty_threshold"]


def test_threshold_override_and_unknown_test_categories(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.csv", TRAIN[:6])
    test = _write(tmp_path / "test.csv", [("hello there", "GREETING"), ("a refund", "BILLING")])
    report = evaluate(train, test, oos_threshold=1.0)
    assert report["oos_threshold"] == 1.0
    assert report["test_only_categories"] == ["BILLING"]
    assert report["accuracy"] == 0.0  # nothing clears a threshold of 1.0
    assert report["top1_accuracy"] == pytest.approx(1 / 2)


def test_bad_files_raise_value_errors_naming_the_file(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("message,label\nhello,GREETING\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"wrong\.csv.*category"):
        load_labelled_csv(wrong)
    empty = _write(tmp_path / "empty.csv", [])
    with pytest.raises(ValueError, match="no labelled rows"):
        load_labelled_csv(empty)
    only_oos = _write(tmp_path / "only_oos.csv", [("hi", "oos")])
    with pytest.raises(ValueError, match="outside the out-of-scope label"):
        evaluate(only_oos, only_oos, oos_label="oos")


def test_macro_f1_ignores_labels_that_are_only_predicted() -> None:
    expected = ["A", "A", "B", "B"]
    predicted = ["A", OUT_OF_SCOPE, "B", "A"]
    # A: P=1/2 R=1/2 -> 1/2; B: P=1 R=1/2 -> 2/3. OUT_OF_SCOPE is no class of its own.
    assert macro_f1(expected, predicted) == pytest.approx((0.5 + 2 / 3) / 2)
    assert macro_f1(["A"], ["A"]) == 1.0


def test_expected_calibration_error() -> None:
    # Bin 0.9-1.0: confidence 0.95 and 0.95, one right -> |0.5 - 0.95| = 0.45, weight 2/4.
    # Bin 0.2-0.3: confidence 0.25 and 0.25, both wrong -> 0.25, weight 2/4.
    error = expected_calibration_error([0.95, 0.95, 0.25, 0.25], [True, False, False, False])
    assert error == pytest.approx(0.5 * 0.45 + 0.5 * 0.25)
    assert expected_calibration_error([1.0], [True]) == pytest.approx(0.0)
    assert expected_calibration_error([], []) == 0.0
