"""Confidence evaluation: deliver or escalate (SPEC 4.1, 4.2).

The answer's confidence is a weighted geometric mean of how sure we are about
what was asked (the intent confidence `c_i`) and how sure the answer is (the
response confidence `c_r`):

    confidence = c_i ** w * c_r ** (1 - w),   w = 1/3 by default

`c_r` is the confidence the handler or provider reports (the offline provider
derives it from retrieval similarity); when none is reported it is the best
retrieval score of the context the answer was built from, and 0.5 (no evidence
either way) when there was no context. The geometric mean lets either factor
veto: a perfect retrieval cannot rescue a message we did not understand, and a
clear intent cannot rescue an answer with nothing behind it. The response gets
the larger weight because it is what the customer reads.

The threshold of an intent is, in this order: the builder's or the config's
`confidence.thresholds[intent]`, the category's own `threshold`, the config's
`confidence.default_threshold`. A threshold of exactly 0.0 means "always ask a
human"; out-of-scope messages always escalate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

NEUTRAL_CONFIDENCE = 0.5


class EscalationReason:
    """Reasons a reply goes to a human (strings, so stores and APIs can keep them as-is)."""

    ALWAYS = "always_escalate"
    OUT_OF_SCOPE = "out_of_scope"
    LOW_CONFIDENCE = "low_confidence"
    BUDGET_EXCEEDED = "budget_exceeded"
    # The cost preflight put the message's estimate above the hard budget: nothing was sent.
    BUDGET_PREFLIGHT = "budget_preflight"
    LLM_UNAVAILABLE = "llm_unavailable"
    HANDLER_REQUESTED = "handler_requested"
    # The agent's plan sent the answer to a human where the evaluator would have delivered.
    PLANNED = "planned"
    # The customer's message scored as frustrated (the agent's `sentiment` config).
    FRUSTRATED = "frustrated"


class ConfidenceDecision(NamedTuple):
    """The verdict on one answer (a tuple: one is made per message)."""

    confidence: float
    threshold: float
    escalate: bool
    reason: str | None


def _clamp(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


class ConfidenceEvaluator:
    def __init__(
        self,
        *,
        default_threshold: float = 0.6,
        thresholds: Mapping[str, float] | None = None,
        category_thresholds: Mapping[str, float | None] | None = None,
        intent_weight: float = 1 / 3,
    ) -> None:
        if not 0.0 <= intent_weight <= 1.0:
            raise ValueError("intent_weight must be within [0, 1]")
        self.default_threshold = default_threshold
        self.intent_weight = intent_weight
        # Resolve the precedence once: the hot path does a single dict lookup.
        resolved = {
            name: value for name, value in (category_thresholds or {}).items() if value is not None
        }
        resolved.update(thresholds or {})
        self._thresholds: dict[str, float] = resolved

    def threshold_for(self, intent: str) -> float:
        return self._thresholds.get(intent, self.default_threshold)

    def combine(self, intent_confidence: float, response_confidence: float) -> float:
        w = self.intent_weight
        return _clamp(_clamp(intent_confidence) ** w * _clamp(response_confidence) ** (1.0 - w))

    @staticmethod
    def response_confidence(reported: float | None, best_retrieval: float | None) -> float:
        if reported is not None:
            return _clamp(reported)
        if best_retrieval is not None:
            return _clamp(best_retrieval)
        return NEUTRAL_CONFIDENCE

    def evaluate(
        self,
        intent: str,
        intent_confidence: float,
        *,
        out_of_scope: bool,
        reported: float | None,
        best_retrieval: float | None,
        forced_reason: str | None = None,
        skip_check: bool = False,
    ) -> ConfidenceDecision:
        threshold = self.threshold_for(intent)
        confidence = self.combine(
            intent_confidence, self.response_confidence(reported, best_retrieval)
        )
        if forced_reason is not None:
            reason: str | None = forced_reason
        elif threshold == 0.0:
            reason = EscalationReason.ALWAYS
        elif skip_check:
            reason = None
        elif out_of_scope:
            reason = EscalationReason.OUT_OF_SCOPE
        elif confidence < threshold:
            reason = EscalationReason.LOW_CONFIDENCE
        else:
            reason = None
        return ConfidenceDecision(confidence, threshold, reason is not None, reason)
