"""Sentiment of a customer's message and the judgement of frustration, shared by the
sentiment_monitor and triage blueprints and the support pipeline's `sentiment` check.

Offline, a message is scored with VADER (`vaderSentiment`) plus a small support lexicon:
VADER's general-purpose lexicon reads "still not working, third time I ask" as neutral, which
is exactly what a support team must not miss. `assess_messages` is pure: message + previous
messages in, an `Assessment` out, no I/O.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

__all__ = [
    "SUPPORT_PHRASES",
    "Assessment",
    "FrustrationSettings",
    "Sentiment",
    "assess_messages",
    "assess_scores",
    "customer_text",
    "labelled",
    "score_sentiment",
]

# VADER's normalisation constant: compound = x / sqrt(x² + ALPHA) over the summed valence.
_ALPHA = 15.0
# Support phrases VADER's lexicon misses, in VADER's valence units (-4..4 per word).
SUPPORT_PHRASES: Mapping[str, float] = {
    "still not working": -1.8,
    "still broken": -1.5,
    "still waiting": -1.5,
    "still no": -1.2,
    "still haven't": -1.2,
    "still have not": -1.2,
    "third time": -1.5,
    "fourth time": -1.8,
    "again and again": -1.5,
    "nobody has": -1.2,
    "no one has": -1.2,
    "no response": -1.2,
    "no reply": -1.2,
    "waste of time": -2.0,
    "wasted hours": -2.0,
    "is a joke": -2.2,
    "cancel my subscription": -1.5,
    "cancel my account": -1.5,
    "switching to": -1.0,
    "moving to a competitor": -1.8,
    "not acceptable": -2.0,
    "fed up": -2.0,
    "sick of": -2.0,
    "losing money": -2.0,
    "lost money": -2.0,
    "worst": -2.0,
    "doesn't work": -0.8,
    "does not work": -0.8,
    "not working": -0.8,
    "crashes": -0.8,
    "keeps crashing": -1.5,
}
_PHRASES = [
    (re.compile(r"\b" + re.escape(phrase) + r"\b", re.IGNORECASE), valence)
    for phrase, valence in SUPPORT_PHRASES.items()
]


# `agentflow.kernel.guardrails.wrap_untrusted`'s fence around a webhook's text (a rule's run).
_FENCED = re.compile(r"<<<BEGIN UNTRUSTED ([0-9a-f]{12})>>>\n(.*?)\n<<<END UNTRUSTED \1>>>", re.S)


def customer_text(message: str) -> str:
    """The customer's own words of a run's message: a webhook's fenced text without the
    fence and its warning (which would read as the same words in every ticket)."""
    fenced = [match.group(2) for match in _FENCED.finditer(message)]
    return "\n".join(fenced) if fenced else message


@dataclass(frozen=True, slots=True)
class Sentiment:
    compound: float  # -1 (most negative) .. 1 (most positive)
    label: str  # negative | neutral | positive

    def to_dict(self) -> dict[str, Any]:
        return {"compound": self.compound, "label": self.label}


@dataclass(frozen=True, slots=True)
class FrustrationSettings:
    """When a customer's messages call for a person (the blueprint's config)."""

    frustration_threshold: float = -0.5  # compound at or below: frustrated
    drop_delta: float = 0.6  # a fall this large below the previous window's mean
    window: int = 5  # the previous messages the trend and the drop compare with
    negative_below: float = -0.05  # VADER's usual label cut-offs
    positive_above: float = 0.05


@dataclass(frozen=True, slots=True)
class Assessment:
    sentiment: Sentiment
    trend: dict[str, Any]
    alert: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sentiment": self.sentiment.to_dict(),
            "trend": self.trend,
            "alert": self.alert,
            "reasons": list(self.reasons),
        }


@functools.cache
def _analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()  # reads its lexicon file once per process


def _phrase_valence(text: str) -> float:
    return sum(valence * len(pattern.findall(text)) for pattern, valence in _PHRASES)


def score_sentiment(text: str, settings: FrustrationSettings | None = None) -> Sentiment:
    """VADER's compound score of `text`, with the support phrases added to its valence."""
    settings = settings or FrustrationSettings()
    compound = float(_analyzer().polarity_scores(text)["compound"])
    extra = _phrase_valence(text)
    if extra:
        # Back to VADER's summed valence, add the phrases, normalise again.
        bounded = max(min(compound, 0.9999), -0.9999)
        total = bounded * math.sqrt(_ALPHA / (1 - bounded * bounded)) + extra
        compound = total / math.sqrt(total * total + _ALPHA)
    return labelled(compound, settings)


def labelled(compound: float, settings: FrustrationSettings | None = None) -> Sentiment:
    """A compound score (VADER's, or a model's on the same -1..1 scale) with its label."""
    settings = settings or FrustrationSettings()
    compound = round(max(-1.0, min(1.0, compound)), 4)
    if compound <= settings.negative_below:
        label = "negative"
    elif compound >= settings.positive_above:
        label = "positive"
    else:
        label = "neutral"
    return Sentiment(compound, label)


def _series_trend(
    previous: Sequence[float], current: float, window: int, count: int | None = None
) -> dict[str, Any]:
    """The last `window` scores before `current` (oldest first), their mean and the change.

    `count`: how many messages came before, when `previous` holds only the latest scores.
    """
    recent = list(previous[-window:])
    if not recent:
        return {"messages": 1, "previous_mean": None, "delta": None, "direction": "new"}
    mean = sum(recent) / len(recent)
    delta = current - mean
    direction = "worsening" if delta <= -0.2 else "improving" if delta >= 0.2 else "stable"
    return {
        "messages": (len(previous) if count is None else count) + 1,
        "previous_mean": round(mean, 4),
        "delta": round(delta, 4),
        "direction": direction,
        "recent": [round(score, 4) for score in recent] + [current],
    }


def assess_messages(
    message: str,
    previous: Sequence[str] = (),
    *,
    thread_previous: Sequence[str] | None = None,
    settings: FrustrationSettings | None = None,
) -> Assessment:
    """Score `message` against the customer's `previous` messages (oldest first).

    `thread_previous`: the previous messages of the same thread, when there is one; a
    fast drop within the thread alerts too. Pure: no I/O, deterministic.
    """
    settings = settings or FrustrationSettings()

    def scores(texts: Sequence[str]) -> list[float]:
        return [score_sentiment(text, settings).compound for text in texts]

    return assess_scores(
        score_sentiment(message, settings),
        scores(previous),
        None if thread_previous is None else scores(thread_previous),
        settings=settings,
    )


def assess_scores(
    sentiment: Sentiment,
    previous: Sequence[float],
    thread_previous: Sequence[float] | None = None,
    *,
    settings: FrustrationSettings | None = None,
    counts: tuple[int | None, int | None] = (None, None),
) -> Assessment:
    """`assess_messages` over scores already given (a model's): the message's, then the
    earlier ones of the customer and of the thread, oldest first. `counts`: how many
    earlier messages there were, when only the latest are scored."""
    settings = settings or FrustrationSettings()
    customer = _series_trend(previous, sentiment.compound, settings.window, counts[0])
    trend: dict[str, Any] = {"customer": customer, "thread": None}
    series = [customer]
    if thread_previous is not None:
        thread = _series_trend(thread_previous, sentiment.compound, settings.window, counts[1])
        trend["thread"] = thread
        series.append(thread)
    reasons = []
    if sentiment.compound <= settings.frustration_threshold:
        reasons.append("frustration")
    if any(s["delta"] is not None and -s["delta"] >= settings.drop_delta for s in series):
        reasons.append("rapid_decline")
    return Assessment(sentiment, trend, bool(reasons), reasons)
