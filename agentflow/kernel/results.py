"""Typed values the pipeline hands around and returns (SPEC 4.1).

`AgentReply` is what `process_message` returns; `ContextItem` is one piece of
gathered context (knowledge article, golden path, memory case, tool output).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from agentflow.kernel.llm.base import TokenUsage

# Context kinds the offline provider understands; tool output is passed to the
# model as untrusted data in the prompt instead.
PROVIDER_CONTEXT_KINDS = frozenset({"knowledge", "golden_path", "memory"})


@dataclass(slots=True)
class ContextItem:
    """One retrieved piece of context with its similarity score in [0, 1]."""

    kind: str
    id: str
    title: str
    text: str
    score: float

    def to_provider_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "id": self.id,
            "title": self.title,
            "text": self.text,
            "score": self.score,
        }


class SourceRef(NamedTuple):
    """A source the answer was built from (no text: replies stay small).

    A NamedTuple rather than a frozen dataclass: one is made per retrieved item per
    message, and a tuple is several times cheaper to create.
    """

    kind: str
    id: str
    title: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "title": self.title, "score": self.score}


StepOutcomeName = Literal["success", "error", "skipped", "paused"]


class PlanStep(NamedTuple):
    """One step of the path the agent's planner took for a message (SPEC 4.8).

    A NamedTuple, like `SourceRef`: several are made per message.

    `node` is the FSM state (or behavior-tree node), `action` what it ran (``"step:classify"``,
    ``"tool:order_lookup"``, ``"none"``). `started_ms` is the offset from the start of the
    message's processing. `transition` is the state the planner went to next and `via` the
    rule that chose it (``on_success``, ``on_error``, ``on_true``, ``on_false``,
    ``conditional_transitions[i]``), with `condition` the CEL text when a condition decided;
    all three are None for the step that ended the run. `tokens` and `cost_usd` are what the
    step's LLM calls spent.
    """

    node: str
    action: str
    outcome: StepOutcomeName
    started_ms: float
    duration_ms: float
    transition: str | None = None
    via: str | None = None
    condition: str | None = None
    error: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "action": self.action,
            "outcome": self.outcome,
            "started_ms": self.started_ms,
            "duration_ms": self.duration_ms,
            "transition": self.transition,
            "via": self.via,
            "condition": self.condition,
            "error": self.error,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
        }


@dataclass(slots=True)
class AgentReply:
    """The outcome of one message.

    When `escalated` is true, `content` is the escalation message shown to the user
    and `proposed_answer` keeps what the agent would have said, for a human to approve.
    `plan_path` lists the planner's steps for this message, in order.
    """

    content: str
    user_id: str
    session_id: str
    intent: str
    intent_confidence: float
    confidence: float
    thread_id: str
    transition: str
    escalated: bool = False
    escalation_reason: str | None = None
    proposed_answer: str | None = None
    sources: list[SourceRef] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    plan_path: list[PlanStep] = field(default_factory=list)
    # Where the plan paused for a person, when it goes on after the decision
    # (`agentflow.kernel.continuation`); kept by the caller, never shown to the customer.
    plan_snapshot: dict[str, Any] | None = None

    @property
    def trace_id(self) -> str:
        return str(self.metadata.get("trace_id", ""))

    @property
    def knowledge_ids(self) -> list[str]:
        return [s.id for s in self.sources if s.kind == "knowledge"]

    @property
    def golden_path_ids(self) -> list[str]:
        return [s.id for s in self.sources if s.kind == "golden_path"]

    @property
    def total_ms(self) -> float:
        return sum(self.timings_ms.values())

    def __getitem__(self, key: str) -> Any:
        # The seed documents read replies as dicts (`reply["content"]`); keep that working.
        try:
            return self.to_dict()[key]
        except KeyError:
            raise KeyError(key) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "intent": self.intent,
            "intent_confidence": self.intent_confidence,
            "confidence": self.confidence,
            "thread_id": self.thread_id,
            "transition": self.transition,
            "escalated": self.escalated,
            "escalation_reason": self.escalation_reason,
            "proposed_answer": self.proposed_answer,
            "sources": [s.to_dict() for s in self.sources],
            "knowledge_ids": self.knowledge_ids,
            "golden_path_ids": self.golden_path_ids,
            "timings_ms": dict(self.timings_ms),
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
                "total_tokens": self.usage.total_tokens,
            },
            "cost_usd": self.cost_usd,
            "metadata": dict(self.metadata),
            "plan_path": [step.to_dict() for step in self.plan_path],
            "trace_id": self.trace_id,
        }
