"""Measure the offline intent classifier on a labelled train/test pair of CSV files.

Used by `agentflow eval-intents` and bench/intents_banking77.py. The CSV files have the columns
`text,category`. With an out-of-scope label, rows carrying it never become a category: at test
time the right answer for them is OUT_OF_SCOPE, which measures out-of-scope detection.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from agentflow.kernel.intents import (
    OUT_OF_SCOPE,
    IntentCategory,
    IntentResult,
    Novelty,
    OfflineIntentClassifier,
    default_novelty_keep,
)
from agentflow.kernel.intents_encoder import SentenceEncoder

_CALIBRATION_BINS = 10
_CONFUSIONS = 10
_SWEEP_KEYS = ("accuracy", "in_scope_accuracy", "oos_recall", "out_of_scope_rate")


def load_labelled_csv(path: Path | str) -> tuple[list[str], list[str]]:
    """Texts and categories of a `text,category` CSV; rows without a category are skipped."""
    path = Path(path)
    texts: list[str] = []
    labels: list[str] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"text", "category"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for row in reader:
            category = (row["category"] or "").strip()
            if category:
                texts.append(row["text"] or "")
                labels.append(category)
    if not texts:
        raise ValueError(f"{path}: no labelled rows")
    return texts, labels


def macro_f1(expected: Sequence[str], predicted: Sequence[str]) -> float:
    """Unweighted mean F1 over the labels that occur in `expected`.

    Labels only ever predicted (e.g. OUT_OF_SCOPE on a closed test set) do not get a class of
    their own: those predictions already count as misses of the true class.
    """
    scores = []
    for label in sorted(set(expected)):
        true_positive = sum(
            e == label and p == label for e, p in zip(expected, predicted, strict=True)
        )
        n_predicted = sum(p == label for p in predicted)
        n_expected = sum(e == label for e in expected)
        precision = true_positive / n_predicted if n_predicted else 0.0
        recall = true_positive / n_expected
        total = precision + recall
        scores.append(2 * precision * recall / total if total else 0.0)
    return sum(scores) / len(scores)


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool]) -> float:
    """Weighted mean |accuracy - confidence| over 10 equal-width confidence bins."""
    if not confidences:
        return 0.0
    bins: list[list[tuple[float, bool]]] = [[] for _ in range(_CALIBRATION_BINS)]
    for confidence, ok in zip(confidences, correct, strict=True):
        bins[min(int(confidence * _CALIBRATION_BINS), _CALIBRATION_BINS - 1)].append(
            (confidence, ok)
        )
    error = 0.0
    for members in bins:
        if members:
            mean_confidence = sum(c for c, _ in members) / len(members)
            accuracy = sum(ok for _, ok in members) / len(members)
            error += len(members) / len(confidences) * abs(accuracy - mean_confidence)
    return error


def evaluate(
    train_csv: Path | str,
    test_csv: Path | str,
    oos_label: str | None = None,
    *,
    oos_threshold: float | None = None,
    novelty_keep: float | None = None,
    encoder: SentenceEncoder | Literal["auto"] | None = "auto",
    sweep: Sequence[float] = (),
) -> dict[str, Any]:
    """Train on `train_csv`, classify `test_csv`, return the metrics as a JSON-ready dict.

    "accuracy" scores the classifier as deployed: an OUT_OF_SCOPE answer is right only for a
    row labelled `oos_label`. "top1_accuracy" ignores the out-of-scope gate (the best category
    against the label, in-scope rows only) and "ece" is the calibration error of that best
    category's confidence. "encoder" names the sentence encoder the classifier used (None:
    lexical only; "auto" uses the `quality` extra when installed). `sweep` lists novelty_keep
    values to re-score the same trained classifier with (the gate's threshold moves, nothing is
    trained again): "sweep" then gives accuracy, in-scope accuracy and recall for each.
    """
    train_texts, train_labels = load_labelled_csv(train_csv)
    test_texts, test_labels = load_labelled_csv(test_csv)

    examples: dict[str, list[str]] = {}
    for text, label in zip(train_texts, train_labels, strict=True):
        if label != oos_label:
            examples.setdefault(label, []).append(text)
    if not examples:
        raise ValueError(f"{train_csv}: no training rows outside the out-of-scope label")
    categories = [IntentCategory(name, examples=texts) for name, texts in examples.items()]

    started = time.perf_counter()
    options: dict[str, float] = {}
    if oos_threshold is not None:
        options["oos_threshold"] = oos_threshold
    if novelty_keep is not None:
        options["novelty_keep"] = novelty_keep
    classifier = OfflineIntentClassifier(categories, encoder=encoder, **options)
    keep = novelty_keep or default_novelty_keep(classifier.encoder)
    trained = time.perf_counter()
    results = classifier.classify_batch(test_texts)
    evaluated = time.perf_counter()

    expected = [OUT_OF_SCOPE if label == oos_label else label for label in test_labels]
    report = _score(expected, results, oos=oos_label is not None)
    report |= {
        "n_train": sum(len(texts) for texts in examples.values()),
        "n_test": len(test_texts),
        "n_categories": len(categories),
        "encoder": None if classifier.encoder is None else classifier.encoder.name,
        "oos_threshold": classifier.oos_threshold,
        "temperature": classifier.temperature,
        "novelty_keep": None if classifier.novelty is None else keep,
        "novelty_threshold": None if classifier.novelty is None else classifier.novelty.threshold,
        "train_seconds": trained - started,
        "eval_seconds": evaluated - trained,
        "top_confusions": _confusions(expected, results),
    }
    unknown = sorted(set(expected) - set(examples) - {OUT_OF_SCOPE})
    if unknown:
        report["test_only_categories"] = unknown
    if oos_label is not None:
        report["n_oos_train_excluded"] = sum(label == oos_label for label in train_labels)
    if sweep and classifier.novelty is not None:
        report["sweep"] = _sweep(
            classifier, classifier.novelty, test_texts, expected, sweep, oos=oos_label is not None
        )
    return report


def _score(expected: list[str], results: list[IntentResult], *, oos: bool) -> dict[str, Any]:
    predicted = [result.name for result in results]
    best = [_best_candidate(result) for result in results]
    in_scope = [i for i, label in enumerate(expected) if label != OUT_OF_SCOPE]
    correct_best = [best[i][0] == expected[i] for i in in_scope]
    report: dict[str, Any] = {
        "accuracy": _mean(p == e for p, e in zip(predicted, expected, strict=True)),
        "macro_f1": macro_f1(expected, predicted),
        "top1_accuracy": _mean(correct_best),
        "ece": expected_calibration_error([best[i][1] for i in in_scope], correct_best),
        "out_of_scope_rate": _mean(p == OUT_OF_SCOPE for p in predicted),
    }
    if oos:
        oos_rows = [i for i, label in enumerate(expected) if label == OUT_OF_SCOPE]
        report["in_scope_accuracy"] = _mean(predicted[i] == expected[i] for i in in_scope)
        report["oos_recall"] = _mean(predicted[i] == OUT_OF_SCOPE for i in oos_rows)
        report["n_oos_test"] = len(oos_rows)
    return report


def _sweep(
    classifier: OfflineIntentClassifier,
    fitted: Novelty,
    texts: list[str],
    expected: list[str],
    keeps: Sequence[float],
    *,
    oos: bool,
) -> list[dict[str, Any]]:
    rows = []
    try:
        for keep in keeps:
            classifier.novelty = fitted.keeping(keep)
            scored = _score(expected, classifier.classify_batch(texts), oos=oos)
            rows.append(
                {"novelty_keep": keep, "novelty_threshold": classifier.novelty.threshold}
                | {key: scored[key] for key in _SWEEP_KEYS if key in scored}
            )
    finally:
        classifier.novelty = fitted
    return rows


def _confusions(expected: list[str], results: list[IntentResult]) -> list[list[Any]]:
    """The most frequent (expected, predicted, count) mistakes, out-of-scope answers included."""
    counts = Counter(
        (label, result.name)
        for label, result in zip(expected, results, strict=True)
        if label != result.name
    )
    return [[label, name, count] for (label, name), count in counts.most_common(_CONFUSIONS)]


def _best_candidate(result: IntentResult) -> tuple[str, float]:
    """The best in-scope category, whether or not it cleared the out-of-scope threshold."""
    if not result.out_of_scope:
        return result.name, result.confidence
    if result.alternatives:
        return result.alternatives[0]
    return OUT_OF_SCOPE, result.confidence  # every category at confidence 0 (e.g. empty text)


def _mean(values: Any) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 0.0
