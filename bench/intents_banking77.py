"""Offline intent classifier on BANKING77: closed-set accuracy and out-of-scope detection.

Prints one JSON object with two variants trained and scored in the same run, so the figures
compare on a shared machine: "lexical" (TF-IDF only, what the default install runs) and
"encoder" (plus a sentence encoder: by default the one the platform uses, INTENT_ENCODER or else
wordllama when the `quality` extra is installed; `--encoder minilm` measures all-MiniLM-L6-v2
of the `intent-minilm` extra; absent when there is none). In each, "plain" trains on train.csv and
tests on test.csv (77 categories); "oos" relabels the 10 alphabetically last categories as
"oos" in both files (written to a temporary folder), so they never become categories and must
come back OUT_OF_SCOPE. Both list the most frequent remaining confusions.
`--sweep` adds in-scope accuracy / out-of-scope recall for a range of novelty gate settings
(`novelty_keep`, the share of correctly classified out-of-fold training messages the gate keeps)
twice: on a validation split of train.csv alone (20% of the in-scope rows, stratified, plus the
held-out categories' training rows as out-of-scope), which is where DEFAULT_NOVELTY_KEEP is
chosen, and on test.csv, which is only reported. The gate's threshold moves without training
again, so a sweep costs one training per split.

    .venv/bin/python bench/intents_banking77.py [--data DIR] [--sweep] [--lexical-only]
                                                [--encoder auto|wordllama|minilm]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentflow.kernel.intents_encoder import SentenceEncoder, configured_encoder, encoder_named
from agentflow.kernel.intents_eval import evaluate, load_labelled_csv

DATA = Path("/work/shared/data/banking77")
HELD_OUT = 10
OOS_LABEL = "oos"
KEEPS = (0.995, 0.99, 0.985, 0.98, 0.975, 0.97, 0.965, 0.96, 0.955, 0.95, 0.94)
KEYS = (
    "accuracy",
    "macro_f1",
    "top1_accuracy",
    "ece",
    "in_scope_accuracy",
    "oos_recall",
    "out_of_scope_rate",
    "n_train",
    "n_test",
    "n_categories",
    "n_oos_test",
    "encoder",
    "oos_threshold",
    "temperature",
    "novelty_threshold",
    "train_seconds",
    "eval_seconds",
    "top_confusions",
)
SWEEP_KEYS = ("novelty_keep", "novelty_threshold", "accuracy", "in_scope_accuracy", "oos_recall")


class Remembered:
    """An encoder that keeps every vector it computed: the sweep classifies the same test
    messages once per keep, and MiniLM takes ~15 s per pass over them on 2 cores."""

    def __init__(self, encoder: SentenceEncoder) -> None:
        self.name = encoder.name
        self._encoder = encoder
        self._vectors: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(text for text in texts if text not in self._vectors))
        if missing:
            self._vectors.update(zip(missing, self._encoder.encode(missing), strict=True))
        return (
            np.stack([self._vectors[text] for text in texts]) if texts else self._encoder.encode([])
        )


def relabel(source: Path, target: Path, held_out: set[str]) -> None:
    texts, labels = load_labelled_csv(source)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        for text, label in zip(texts, labels, strict=True):
            writer.writerow([text, OOS_LABEL if label in held_out else label])


def split(source: Path, folder: Path) -> None:
    """train.csv / test.csv in `folder`: 80/20 of the in-scope rows of `source` (stratified,
    seeded), and every out-of-scope row of `source` in test.csv."""
    from sklearn.model_selection import train_test_split

    texts, labels = load_labelled_csv(source)
    inside = [i for i, label in enumerate(labels) if label != OOS_LABEL]
    fit, held = train_test_split(
        inside, test_size=0.2, stratify=[labels[i] for i in inside], random_state=0
    )
    outside = [i for i, label in enumerate(labels) if label == OOS_LABEL]
    for name, rows in (("train.csv", fit), ("test.csv", [*held, *outside])):
        with (folder / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "category"])
            writer.writerows([texts[i], labels[i]] for i in rows)


def summary(report: dict[str, object]) -> dict[str, object]:
    return {
        key: round(value, 4) if isinstance(value, float) else value
        for key in KEYS
        if (value := report.get(key)) is not None
    }


def sweep_rows(report: dict[str, Any]) -> list[dict[str, object]]:
    return [
        {
            k: round(v, 4) if isinstance(v, float) else v
            for k in SWEEP_KEYS
            if (v := row.get(k)) is not None
        }
        for row in report["sweep"]
    ]


def variant(train: Path, test: Path, folder: Path, encoder: Any, *, sweep: bool) -> dict[str, Any]:
    """Plain, out-of-scope and (with `sweep`) validation figures of one classifier variant."""
    held_out = set(sorted(set(load_labelled_csv(train)[1]))[-HELD_OUT:])
    oos_train, oos_test = folder / "train.csv", folder / "test.csv"
    if not oos_train.exists():
        relabel(train, oos_train, held_out)
        relabel(test, oos_test, held_out)
    keeps = KEEPS if sweep else ()
    plain = evaluate(train, test, encoder=encoder, sweep=keeps)
    output: dict[str, Any] = {"plain": summary(plain)}
    oos = evaluate(oos_train, oos_test, OOS_LABEL, encoder=encoder, sweep=keeps)
    output["oos"] = {"held_out": sorted(held_out), **summary(oos)}
    if sweep:
        validation = folder / "validation"
        if not validation.exists():
            validation.mkdir()
            split(oos_train, validation)
        checked = evaluate(
            validation / "train.csv",
            validation / "test.csv",
            OOS_LABEL,
            encoder=encoder,
            sweep=keeps,
        )
        output["sweep"] = {
            "validation": sweep_rows(checked),
            "test": sweep_rows(oos),
            "plain": sweep_rows(plain),
        }
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--lexical-only", action="store_true", help="skip the encoder variant")
    parser.add_argument(
        "--encoder", choices=("auto", "wordllama", "minilm"), default="auto", help="the encoder"
    )
    args = parser.parse_args()
    train, test = args.data / "train.csv", args.data / "test.csv"
    encoder = None
    if not args.lexical_only:
        encoder = configured_encoder() if args.encoder == "auto" else encoder_named(args.encoder)

    output: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as folder:
        output["lexical"] = variant(train, test, Path(folder), None, sweep=args.sweep)
        if encoder is not None:
            remembered = Remembered(encoder)
            output["encoder"] = variant(train, test, Path(folder), remembered, sweep=args.sweep)
    print(json.dumps(output, indent=2))


if __name__ == "__main__":
    main()
