"""Answer quality (issue 21): the offline classifier's novelty gate and calibration, and
golden paths retrieved within the message's intent."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentflow.kernel.context import ContextGatherer
from agentflow.kernel.inmemory import InMemoryGoldenPathStore, InMemoryMemoryStore
from agentflow.kernel.intents import OUT_OF_SCOPE, IntentCategory, Novelty, OfflineIntentClassifier
from agentflow.kernel.intents_eval import evaluate
from agentflow.kernel.llm.embeddings import OfflineEmbedder
from agentflow.kernel.memory import MemoryManager
from agentflow.kernel.results import ContextItem
from agentflow.kernel.stores import GoldenPath, golden_path_matches
from agentflow.kernel.vectors import Vector

BANKING77 = Path("/work/shared/data/banking77")
needs_banking77 = pytest.mark.skipif(
    not (BANKING77 / "train.csv").exists(), reason="BANKING77 not available"
)
# Card and transfer topics the classifier knows; identity checks it was never taught.
KNOWN = (
    "card_arrival",
    "card_payment_fee_charged",
    "exchange_rate",
    "lost_or_stolen_card",
    "pending_transfer",
    "pin_blocked",
    "top_up_failed",
    "transfer_not_received_by_recipient",
)
UNKNOWN = ("verify_my_identity", "why_verify_identity", "unable_to_verify_identity")


def _rows(name: str, categories: tuple[str, ...]) -> list[tuple[str, str]]:
    with (BANKING77 / name).open(newline="", encoding="utf-8") as handle:
        return [
            (r["text"], r["category"])
            for r in csv.DictReader(handle)
            if r["category"] in categories
        ]


@pytest.fixture(scope="module")
def banking() -> OfflineIntentClassifier:
    examples: dict[str, list[str]] = {}
    for text, label in _rows("train.csv", KNOWN):
        examples.setdefault(label, []).append(text)
    return OfflineIntentClassifier([IntentCategory(n, examples=t) for n, t in examples.items()])


# --- novelty gate -------------------------------------------------------------------------------


@needs_banking77
def test_novelty_gate_rejects_unknown_topics_and_keeps_known_ones(
    banking: OfflineIntentClassifier,
) -> None:
    assert banking.novelty is not None  # enough examples: the gate was fitted
    unknown = [text for text, _ in _rows("test.csv", UNKNOWN)]
    known = _rows("test.csv", KNOWN)
    rejected = np.mean([r.out_of_scope for r in banking.classify_batch(unknown)])
    results = banking.classify_batch([text for text, _ in known])
    in_scope = np.mean([r.name == label for r, (_, label) in zip(results, known, strict=True)])
    assert rejected >= 0.7
    assert in_scope >= 0.9


@needs_banking77
def test_the_gate_is_what_rejects_a_confident_off_topic_question(
    banking: OfflineIntentClassifier,
) -> None:
    question = "Why do you need to verify my identity?"
    ungated = OfflineIntentClassifier(banking.categories, novelty_keep=1.0)
    # The softmax alone is sure enough to answer; the message is atypical of its best guess.
    assert banking.classify_sync(question).confidence >= banking.oos_threshold
    assert banking.classify_sync(question).name == OUT_OF_SCOPE
    assert ungated.novelty is not None
    assert ungated.novelty.threshold < banking.novelty.threshold  # type: ignore[union-attr]


@needs_banking77
@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("my new card still hasn't come in the mail", "card_arrival"),
        ("I typed the wrong PIN too many times and now it's locked", "pin_blocked"),
        (
            "the money I sent never showed up in my friend's account",
            "transfer_not_received_by_recipient",
        ),
    ],
)
def test_in_scope_paraphrases_are_accepted(
    banking: OfflineIntentClassifier, message: str, expected: str
) -> None:
    result = banking.classify_sync(message)
    assert (result.name, result.out_of_scope) == (expected, False)


def test_novelty_threshold_keeps_the_asked_share_of_correct_held_out_rows() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    scores = rng.normal(-1.0, 0.3, (200, 4))
    scores[np.arange(200), labels] += 2.0  # every row scores highest on its own category
    nearest = rng.uniform(0.3, 0.9, (200, 4))
    novelty = Novelty.fit(scores, nearest, labels, keep=0.9)
    typicality = novelty.score(scores, nearest, labels)
    assert np.mean(typicality >= novelty.threshold) == pytest.approx(0.9, abs=0.01)
    # Standardised per category: a category that always scores low is not penalised.
    shifted = scores.copy()
    shifted[labels == 0, 0] -= 0.5
    low = Novelty.fit(shifted, nearest, labels, keep=0.9)
    assert low.mean[0] == pytest.approx(novelty.mean[0] - 0.5)
    assert np.allclose(low.score(shifted, nearest, labels), typicality)


def test_keeping_moves_the_threshold_as_fitting_again_would() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 40)
    scores = rng.normal(0.0, 1.0, (120, 3))
    scores[np.arange(120), labels] += 3.0
    nearest = rng.uniform(0.0, 3.0, (120, 3))
    fitted = Novelty.fit(scores, nearest, labels, keep=0.98)

    for keep in (0.9, 0.5):
        refitted = Novelty.fit(scores, nearest, labels, keep=keep)
        assert fitted.keeping(keep).threshold == pytest.approx(refitted.threshold)
    assert fitted.keeping(0.5).threshold > fitted.threshold
    with pytest.raises(ValueError, match="novelty_keep"):
        fitted.keeping(0.0)


def test_with_an_encoder_the_gate_standardises_over_all_categories_at_once() -> None:
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(2), 50)
    scores = rng.normal(0.0, 0.2, (100, 2))
    scores[labels == 0, 0] += 1.0  # category 0's members score high, category 1's barely
    nearest = np.zeros((100, 2))

    shared = Novelty.fit(scores, nearest, labels, keep=0.9, per_category=False)
    each = Novelty.fit(scores, nearest, labels, keep=0.9)

    assert shared.mean[0] == shared.mean[1]
    assert shared.std[0] == shared.std[1]
    assert each.mean[0] > each.mean[1] + 0.5
    # A weak member of the low-scoring category is atypical only for the shared standard.
    weak = np.array([[0.0, 0.0]])
    assert shared.score(weak, np.zeros((1, 2)), np.array([1]))[0] < shared.threshold
    assert each.score(weak, np.zeros((1, 2)), np.array([1]))[0] >= each.threshold


def test_small_category_sets_have_no_novelty_gate() -> None:
    classifier = OfflineIntentClassifier(
        [
            IntentCategory("BILLING", examples=["I was charged twice", "refund my invoice"]),
            IntentCategory("LOGIN", examples=["I forgot my password", "I can't log in"]),
        ]
    )
    assert classifier.novelty is None
    assert classifier.classify_sync("refund my invoice please").name == "BILLING"


@pytest.mark.parametrize("keep", [0.0, 1.5])
def test_novelty_keep_must_be_a_share(keep: float) -> None:
    with pytest.raises(ValueError, match="novelty_keep"):
        OfflineIntentClassifier([IntentCategory("A")], novelty_keep=keep)


# --- calibration on a fixed split -----------------------------------------------------------------


@needs_banking77
def test_confidence_is_calibrated_on_a_fixed_split(tmp_path: Path) -> None:
    for name in ("train.csv", "test.csv"):
        with (tmp_path / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "category"])
            writer.writerows(_rows(name, KNOWN))
    report = evaluate(tmp_path / "train.csv", tmp_path / "test.csv")
    assert report["top1_accuracy"] >= 0.9
    assert report["ece"] <= 0.05
    assert report["novelty_threshold"] is not None


# --- golden paths within the intent ---------------------------------------------------------

EMBEDDER = OfflineEmbedder()
PATHS = [
    # A near-paraphrase of the message, but about another category.
    GoldenPath("fee", "why was I charged a fee for my card payment", "[fee]", "card_payment_fee"),
    GoldenPath("arrival", "when will the new card be delivered", "[arrival]", "card_arrival"),
    GoldenPath("any", "card questions", "[any]", ""),
]
MESSAGE = "why was my card payment not delivered yet"


async def _store() -> InMemoryGoldenPathStore:
    store = InMemoryGoldenPathStore(EMBEDDER)
    await store.add([GoldenPath(p.id, p.question, p.answer, p.category) for p in PATHS])
    return store


async def test_retrieval_within_the_intent_prefers_the_right_category() -> None:
    store = await _store()
    vector = EMBEDDER.embed_one(MESSAGE)
    unfiltered = await store.search(MESSAGE, vector, limit=3)
    assert unfiltered[0].id == "fee"  # lexically closest, wrong category
    within = await store.search(MESSAGE, vector, limit=3, intent="card_arrival")
    assert [item.id for item in within] == ["arrival", "any"]
    assert await store.search(MESSAGE, vector, limit=3, intent=OUT_OF_SCOPE) == [
        item for item in unfiltered if item.id == "any"
    ]


def test_golden_path_matches_same_category_or_uncategorised() -> None:
    assert golden_path_matches("A", "A")
    assert golden_path_matches("", "A")
    assert golden_path_matches("A", None)
    assert golden_path_matches("A", "")
    assert not golden_path_matches("A", "B")
    assert not golden_path_matches("A", OUT_OF_SCOPE)


class _LegacyStore:
    """A golden-path store written before intents were passed (no `intent` keyword)."""

    io_bound = False

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def add(self, paths: Any) -> None:
        raise AssertionError("not used")

    async def search(self, query: str, vector: Vector, *, limit: int) -> list[ContextItem]:
        self.calls.append({"query": query, "limit": limit})
        return [ContextItem("golden_path", "legacy", query, "[legacy]", 0.9)]


async def test_gatherer_passes_the_intent_to_stores_that_take_it() -> None:
    memory = MemoryManager(InMemoryMemoryStore(), anonymise=str, recall_limit=0)
    vector = EMBEDDER.embed_one(MESSAGE)
    gatherer = ContextGatherer(memory=memory, golden_paths=await _store())
    gathered = await gatherer.gather("u1", MESSAGE, vector, "card_arrival")
    assert [item.id for item in gathered.golden_paths] == ["arrival", "any"]

    legacy = _LegacyStore()
    gathered = await ContextGatherer(memory=memory, golden_paths=legacy).gather(
        "u1", MESSAGE, vector, "card_arrival"
    )
    assert [item.id for item in gathered.golden_paths] == ["legacy"]
    assert legacy.calls == [{"query": MESSAGE, "limit": 3}]
