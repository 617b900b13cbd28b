"""The offline intent classifier without scikit-learn in the serving process (issue 15, memory):
an exported model gives the very verdicts of the trained one, loading it imports neither
scikit-learn nor scipy, and the model cache trains in a child process, atomically."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agentflow.kernel.builder import AgentFrameworkBuilder
from agentflow.kernel.config import ConfigError
from agentflow.kernel.intents import OUT_OF_SCOPE, IntentCategory, OfflineIntentClassifier
from agentflow.kernel.intents_encoder import default_encoder
from agentflow.kernel.intents_fit import (
    IntentFitError,
    cached_classifier,
    prune,
)
from agentflow.kernel.intents_model import (
    ModelFileError,
    export_state,
    load_classifier,
    save,
)

ROOT = Path(__file__).resolve().parents[2]
BANKING77 = Path("/work/shared/data/banking77")
needs_banking77 = pytest.mark.skipif(
    not (BANKING77 / "train.csv").exists(), reason="BANKING77 not available"
)
SUPPORT = [
    IntentCategory("BILLING", examples=["I was charged twice", "refund my invoice"]),
    IntentCategory("LOGIN", examples=["I forgot my password", "I can't log in"]),
    IntentCategory("SHIPPING", "Where a parcel is", ["my parcel never came", "track my order"]),
]
EDGE_MESSAGES = [
    "",
    "   ",
    "what's the weather in Paris",
    "🙂🙂",
    "I CAN'T LOG IN!!  please\thelp",
    "refund refund refund",
    "x",
]


def _banking(count: int) -> tuple[list[IntentCategory], list[str]]:
    with (BANKING77 / "train.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    names = sorted({row["category"] for row in rows})[:count]
    categories = [
        IntentCategory(name, examples=[r["text"] for r in rows if r["category"] == name])
        for name in names
    ]
    with (BANKING77 / "test.csv").open(newline="", encoding="utf-8") as handle:
        tests = list(csv.DictReader(handle))
    # Messages of the known categories, and some of the others (out of scope).
    known = [row["text"] for row in tests if row["category"] in names]
    unknown = [row["text"] for row in tests if row["category"] not in names]
    return categories, known[:250] + unknown[:60]


def _exported(classifier: OfflineIntentClassifier, folder: Path) -> OfflineIntentClassifier:
    path = folder / "model.npz"
    save(path, *export_state(classifier))
    return load_classifier(path, classifier.categories, encoder=classifier.encoder)


def _assert_same_verdicts(
    trained: OfflineIntentClassifier, restored: OfflineIntentClassifier, messages: list[str]
) -> None:
    expected, expected_novelty = trained._judge(messages)
    actual, actual_novelty = restored._judge(messages)
    # Bit for bit: the numpy path repeats scikit-learn's and scipy's arithmetic in order.
    assert np.array_equal(expected, actual)
    if expected_novelty is None:
        assert actual_novelty is None
    else:
        assert np.array_equal(expected_novelty, actual_novelty)  # type: ignore[arg-type]
    assert restored.classify_batch(messages) == trained.classify_batch(messages)


@needs_banking77
def test_an_exported_banking77_model_gives_identical_verdicts(tmp_path: Path) -> None:
    # 12 categories of 100+ examples: temperature and novelty gate fitted, encoder if installed.
    categories, messages = _banking(12)
    trained = OfflineIntentClassifier(categories)
    assert trained.novelty is not None
    restored = _exported(trained, tmp_path)
    assert restored.temperature == trained.temperature
    _assert_same_verdicts(trained, restored, messages + EDGE_MESSAGES)
    verdicts = restored.classify_batch(messages)
    assert sum(not v.out_of_scope for v in verdicts) > 150  # real verdicts, not only refusals


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("encoder", ["auto", None])
def test_small_category_sets_round_trip_exactly(
    tmp_path: Path, count: int, encoder: str | None
) -> None:
    # One category (no SVM), two (the binary SVM's single score column), three.
    trained = OfflineIntentClassifier(SUPPORT[:count], encoder=encoder)  # type: ignore[arg-type]
    restored = _exported(trained, tmp_path)
    messages = ["please refund me", "password forgotten", "where is my parcel", *EDGE_MESSAGES]
    _assert_same_verdicts(trained, restored, messages)
    assert restored.classify_sync("refund my invoice").name == "BILLING"
    assert restored.classify_sync("").name == OUT_OF_SCOPE


def test_a_restored_model_keeps_the_callers_threshold(tmp_path: Path) -> None:
    trained = OfflineIntentClassifier(SUPPORT, encoder=None)
    path = tmp_path / "model.npz"
    save(path, *export_state(trained))
    strict = load_classifier(path, SUPPORT, oos_threshold=1.0)
    assert strict.oos_threshold == 1.0
    assert strict.classify_sync("refund my invoice").out_of_scope


def test_loading_a_model_of_other_categories_or_encoder_is_refused(tmp_path: Path) -> None:
    trained = OfflineIntentClassifier(SUPPORT, encoder=None)
    path = tmp_path / "model.npz"
    save(path, *export_state(trained))
    with pytest.raises(ModelFileError, match="other categories"):
        load_classifier(path, SUPPORT[:2])
    encoder = default_encoder()
    if encoder is not None:
        with pytest.raises(ModelFileError, match="encoder"):
            load_classifier(path, SUPPORT, encoder=encoder)


def test_serving_a_model_imports_neither_scikit_learn_nor_scipy(tmp_path: Path) -> None:
    path = tmp_path / "model.npz"
    trained = OfflineIntentClassifier(SUPPORT)
    save(path, *export_state(trained))
    expected = trained.classify_sync("I was charged twice this month")
    script = f"""
import json, sys
from agentflow.kernel.intents import IntentCategory
from agentflow.kernel.intents_encoder import default_encoder
from agentflow.kernel.intents_fit import cached_classifier
from agentflow.kernel.intents_model import load_classifier
categories = [IntentCategory(**c) for c in json.loads(sys.argv[1])]
classifier = load_classifier({str(path)!r}, categories, encoder=default_encoder())
result = classifier.classify_sync("I was charged twice this month")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("sklearn", "scipy"))
print(json.dumps({{"result": result.to_dict(), "heavy": heavy}}))
"""
    categories = json.dumps(
        [{"name": c.name, "description": c.description, "examples": c.examples} for c in SUPPORT]
    )
    done = subprocess.run(
        [sys.executable, "-c", script, categories],
        capture_output=True,
        check=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["result"] == json.loads(json.dumps(expected.to_dict()))


# --- the cache and the child process ----------------------------------------------------------


def test_a_miss_trains_in_a_child_and_a_hit_reads_the_file(tmp_path: Path) -> None:
    first = cached_classifier(SUPPORT, tmp_path)
    [model] = list(tmp_path.iterdir())
    assert model.suffix == ".npz"
    written = model.stat()
    second = cached_classifier(SUPPORT, tmp_path)
    assert model.stat().st_ino == written.st_ino  # not trained again
    assert model.stat().st_mtime_ns == written.st_mtime_ns
    trained = OfflineIntentClassifier(SUPPORT)
    messages = ["refund my invoice", "I can't log in", "track my order", *EDGE_MESSAGES]
    _assert_same_verdicts(trained, first, messages)
    _assert_same_verdicts(trained, second, messages)
    # Other examples are another model; the pipeline's threshold is not part of the key.
    cached_classifier([*SUPPORT[:2], IntentCategory("SHIPPING", examples=["parcel?"])], tmp_path)
    cached_classifier(
        [*SUPPORT[:2], IntentCategory("SHIPPING", "Where a parcel is", SUPPORT[2].examples, 0.0)],
        tmp_path,
    )
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_a_corrupt_cached_model_is_trained_again(tmp_path: Path) -> None:
    cached_classifier(SUPPORT, tmp_path)
    [model] = list(tmp_path.iterdir())
    model.write_bytes(b"PK\x03\x04 truncated")
    classifier = cached_classifier(SUPPORT, tmp_path)
    assert classifier.classify_sync("refund my invoice").name == "BILLING"
    assert [p.name for p in tmp_path.iterdir()] == [model.name]
    load_classifier(model, SUPPORT, encoder=default_encoder())  # a whole model again


def test_invalid_categories_fail_with_the_training_error(tmp_path: Path) -> None:
    duplicated = [SUPPORT[0], IntentCategory("BILLING", examples=["refund"])]
    with pytest.raises(IntentFitError, match="duplicate intent category names: BILLING"):
        cached_classifier(duplicated, tmp_path)
    with pytest.raises(ValueError, match="no usable text"):
        cached_classifier([IntentCategory("_")], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_crashing_child_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(IntentFitError, match=r"failed \(exit status 1\): .*Error"):
        cached_classifier(SUPPORT, blocker / "models")
    with pytest.raises(IntentFitError, match=r"longer than 0\.01 s"):
        cached_classifier(SUPPORT, tmp_path / "slow", timeout_seconds=0.01)


def test_concurrent_misses_of_one_model_all_succeed(tmp_path: Path) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            results.append(cached_classifier(SUPPORT, tmp_path).classify_sync("refund it").name)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert results == ["BILLING"] * 4
    assert len(list(tmp_path.iterdir())) == 1  # one model, no temporary file left behind


def _age(path: Path, days: float) -> None:
    then = time.time() - days * 86_400
    os.utime(path, (then, then))


def test_training_prunes_models_unused_too_long_and_a_hit_marks_its_model_used(
    tmp_path: Path,
) -> None:
    cached_classifier(SUPPORT, tmp_path)
    [served] = list(tmp_path.glob("*.npz"))
    stale, recent = tmp_path / f"{'a' * 64}.npz", tmp_path / f"{'b' * 64}.npz"
    leftover, fresh_temporary = tmp_path / ".old.x.tmp", tmp_path / ".new.y.tmp"
    for path in (stale, recent, leftover, fresh_temporary):
        path.write_bytes(b"x")
    _age(stale, 31)
    _age(recent, 29)
    _age(leftover, 1)
    _age(served, 40)  # unused for 40 days, then served again: used today
    cached_classifier(SUPPORT, tmp_path)
    assert time.time() - served.stat().st_mtime < 60

    # Another agent's model is trained: the folder is pruned, the served model is kept.
    other = [*SUPPORT[:2], IntentCategory("SHIPPING", examples=["where is my parcel?"])]
    cached_classifier(other, tmp_path, keep_unused_days=30)
    left = {path.name for path in tmp_path.iterdir()}
    assert stale.name not in left
    assert leftover.name not in left
    assert {served.name, recent.name, fresh_temporary.name} <= left
    assert len(list(tmp_path.glob("*.npz"))) == 3  # served, recent and the new one


def test_a_cache_kept_forever_is_never_pruned(tmp_path: Path) -> None:
    stale = tmp_path / f"{'a' * 64}.npz"
    stale.write_bytes(b"x")
    _age(stale, 400)
    cached_classifier(SUPPORT, tmp_path, keep_unused_days=None)
    cached_classifier(SUPPORT[:2], tmp_path, keep_unused_days=0)
    assert stale.exists()
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_pruning_spares_the_model_just_trained_even_at_a_tiny_age_limit(tmp_path: Path) -> None:
    classifier = cached_classifier(SUPPORT, tmp_path, keep_unused_days=1e-12)
    assert classifier.classify_sync("refund my invoice").name == "BILLING"
    assert len(list(tmp_path.glob("*.npz"))) == 1
    assert prune(tmp_path, 0.0, now=time.time() + 1) == 1  # nothing spared: it goes too


# --- the builder --------------------------------------------------------------------------------


def test_the_builder_uses_the_configured_cache(tmp_path: Path) -> None:
    async def build() -> str:
        builder = AgentFrameworkBuilder().with_intent_model_cache(tmp_path)
        agent = await builder.with_intent_categories(SUPPORT).build()
        reply = await agent.process_message("u1", "refund my invoice please")
        return str(reply.intent)

    assert asyncio.run(build()) == "BILLING"
    assert len(list(tmp_path.glob("*.npz"))) == 1


def test_a_child_training_failure_is_a_config_error(tmp_path: Path) -> None:
    builder = AgentFrameworkBuilder().with_intent_model_cache(tmp_path)
    builder = builder.with_intent_categories([IntentCategory("_")])
    with pytest.raises(ConfigError) as raised:
        asyncio.run(builder.build())
    assert raised.value.issues[0].path == "intents.categories"
    assert "no usable text" in raised.value.issues[0].reason
