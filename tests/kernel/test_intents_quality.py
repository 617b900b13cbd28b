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


def test_with_an_encoder_the_nearest_similarity_is_standardised_per_category() -> None:
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(2), 50)
    scores = rng.normal(0.0, 0.2, (100, 2))
    scores[np.arange(100), labels] += 1.0  # every row scores highest on its own category
    # Category 0's members sit close together, category 1's far apart (weighted similarities).
    nearest = np.empty((100, 2))
    nearest[:, 0] = np.where(labels == 0, rng.normal(2.7, 0.05, 100), 1.0)
    nearest[:, 1] = np.where(labels == 1, rng.normal(1.5, 0.3, 100), 1.0)

    raw = Novelty.fit(scores, nearest, labels, keep=0.9)
    each = Novelty.fit(scores, nearest, labels, keep=0.9, standardise_nearest=True)

    assert raw.near_mean is None
    assert each.near_mean is not None
    assert each.near_std is not None
    assert each.near_mean[0] == pytest.approx(2.7, abs=0.05)
    assert each.near_std[0] < each.near_std[1]
    # As close to category 0 as a typical member of category 1 is to its own: a stranger to
    # the tight category, for the per-category standard only; the same closeness is ordinary
    # for the loose one.
    message, closeness = np.array([[1.0, 0.0]]), np.array([[1.6, 1.6]])
    assert raw.score(message, closeness, np.array([0]))[0] >= raw.threshold
    assert each.score(message, closeness, np.array([0]))[0] < each.threshold
    assert each.score(message[:, ::-1], closeness, np.array([1]))[0] >= each.threshold


def test_the_per_category_standard_comes_from_correctly_classified_members() -> None:
    labels = np.repeat(np.arange(2), 4)
    scores = np.array([[2.0, 0.0]] * 3 + [[0.0, 1.0]] + [[0.0, 2.0]] * 4)  # row 3 misclassified
    nearest = np.array([[2.0, 0.0]] * 3 + [[0.2, 0.0]] + [[0.0, 1.0]] * 4)
    each = Novelty.fit(scores, nearest, labels, keep=1.0, standardise_nearest=True)
    assert each.near_mean is not None
    assert each.mean[0] == pytest.approx(2.0)  # the misclassified member's 0.0 is left out
    assert each.near_mean[0] == pytest.approx(2.0)


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


# Virtual cards and exchange rates the classifier knows; their near neighbours it was never taught.
NEIGHBOURS_KNOWN = (
    "getting_virtual_card",
    "get_disposable_virtual_card",
    "card_not_working",
    "card_arrival",
    "pin_blocked",
    "exchange_rate",
    "card_payment_wrong_exchange_rate",
    "declined_cash_withdrawal",
    "cash_withdrawal_charge",
    "top_up_failed",
)
NEIGHBOURS_UNKNOWN = ("virtual_card_not_working", "wrong_exchange_rate_for_cash_withdrawal")


@needs_banking77
def test_with_the_encoder_the_gate_refuses_near_neighbours_of_known_categories() -> None:
    pytest.importorskip("wordllama")
    examples: dict[str, list[str]] = {}
    for text, label in _rows("train.csv", NEIGHBOURS_KNOWN):
        examples.setdefault(label, []).append(text)
    classifier = OfflineIntentClassifier(
        [IntentCategory(n, examples=t) for n, t in examples.items()]
    )
    assert classifier.encoder is not None
    assert classifier.novelty is not None
    assert classifier.novelty.near_mean is not None
    unknown = [text for text, _ in _rows("test.csv", NEIGHBOURS_UNKNOWN)]
    known = _rows("test.csv", NEIGHBOURS_KNOWN)
    refused = np.mean([r.out_of_scope for r in classifier.classify_batch(unknown)])
    results = classifier.classify_batch([text for text, _ in known])
    in_scope = np.mean([r.name == label for r, (_, label) in zip(results, known, strict=True)])
    # Measured: 0.46 refused (0.24 with the score standardised over all categories and the raw
    # similarity, the gate before issue 21) at 0.95 in-scope accuracy.
    assert refused >= 0.4
    assert in_scope >= 0.93
    off_topic = classifier.classify_sync("My virtual card won't work for online payments")
    assert off_topic.out_of_scope
    assert classifier.classify_sync("How do I get a virtual card?").name == "getting_virtual_card"


@needs_banking77
def test_the_gate_threshold_comes_from_the_training_data_alone(tmp_path: Path) -> None:
    with (tmp_path / "train.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "category"), *_rows("train.csv", KNOWN)])
    known = _rows("test.csv", KNOWN)
    for name, rows in (("a.csv", known[::2]), ("b.csv", known[1::2] + _rows("test.csv", UNKNOWN))):
        with (tmp_path / name).open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([("text", "category"), *rows])
    first = evaluate(tmp_path / "train.csv", tmp_path / "a.csv")
    second = evaluate(tmp_path / "train.csv", tmp_path / "b.csv")
    assert first["n_test"] != second["n_test"]
    assert first["novelty_threshold"] == second["novelty_threshold"]
    assert first["temperature"] == second["temperature"]


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
