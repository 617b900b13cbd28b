"""The data every planner shares: actions, the state a plan runs over, outcomes and the path."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from agentflow.kernel.planning.expressions import CompiledExpression

__all__ = [
    "Action",
    "FailsTheMessage",
    "PlanResult",
    "PlanState",
    "Snapshot",
    "StepExecutor",
    "StepOutcome",
    "StepRecord",
    "ToolInvoker",
    "ToolResultLike",
]


class FailsTheMessage(Exception):
    """An error no plan branch may absorb: the message fails instead of taking ``on_error``
    (a conversation the stores could not keep must never be answered as if it were)."""


OutcomeStatus = Literal["ok", "error", "timeout", "paused"]
ActionKind = Literal["step", "tool", "agent", "human", "none"]


@dataclass(frozen=True, slots=True)
class Action:
    """What a state or node does: a built-in step, a tool call, a sub-agent, a pause for a
    human (``{human: "<why>"}``: the run stops with a snapshot), or nothing.

    Tool arguments are compiled CEL expressions evaluated against the state when the call is
    made (``{"order_id": "state.order_id"}``).
    """

    kind: ActionKind
    name: str = ""
    arguments: tuple[tuple[str, CompiledExpression], ...] = ()
    # Literal argument values (an LLM plan's JSON arguments are data, never expressions).
    values: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> dict[str, Any]:
        if self.kind == "none":
            return {"none": True}
        if self.kind == "tool":
            described = {k: e.source for k, e in self.arguments}
            described.update({k: repr(v) for k, v in self.values})
            return {"tool": self.name, "arguments": described}
        return {self.kind: self.name}

    def __str__(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.name}"


def _default_intent() -> dict[str, Any]:
    return {"name": "", "confidence": 0.0}


def _default_response() -> dict[str, Any]:
    return {"content": "", "confidence": 0.0, "data_sources": []}


@dataclass(slots=True)
class PlanState:
    """What expressions see: the six sections of the declared shape, plain data only."""

    message: str = ""
    intent: dict[str, Any] = field(default_factory=_default_intent)
    response: dict[str, Any] = field(default_factory=_default_response)
    tool: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    user: dict[str, Any] = field(default_factory=dict)

    def variables(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "intent": self.intent,
            "response": self.response,
            "tool": self.tool,
            "state": self.state,
            "user": self.user,
        }

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.variables())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanState:
        data = copy.deepcopy(data)
        return cls(
            message=str(data.get("message", "")),
            intent=dict(data.get("intent") or _default_intent()),
            response=dict(data.get("response") or _default_response()),
            tool=dict(data.get("tool") or {}),
            state=dict(data.get("state") or {}),
            user=dict(data.get("user") or {}),
        )


@dataclass(slots=True)
class StepOutcome:
    """What an executor reports for one action.

    ``paused`` means a human must act (a tool needing approval, a review state): the run stops
    with a resumable `Snapshot`.
    """

    status: OutcomeStatus
    output: Any = None
    error: str | None = None
    tokens: int = 0
    cost_usd: float = 0.0

    @classmethod
    def ok(cls, output: Any = None, **kwargs: Any) -> StepOutcome:
        return cls("ok", output, **kwargs)

    @classmethod
    def failed(cls, error: str, **kwargs: Any) -> StepOutcome:
        return cls("error", None, error, **kwargs)


@runtime_checkable
class StepExecutor(Protocol):
    """Runs built-in steps and sub-agents; may read and write the state it is given."""

    async def execute(self, action: Action, state: PlanState) -> StepOutcome: ...


class ToolResultLike(Protocol):
    """Read-only, so the registry's frozen `ToolOutcome` is one."""

    @property
    def status(self) -> str:
        """ok | error | timeout | denied | invalid_arguments | invalid_output | needs_approval"""
        ...

    @property
    def output(self) -> Any: ...

    @property
    def error(self) -> Any: ...


@runtime_checkable
class ToolInvoker(Protocol):
    async def __call__(self, tool_id: str, arguments: dict[str, Any]) -> ToolResultLike: ...


@dataclass(slots=True)
class StepRecord:
    """One entry of a run's path."""

    index: int
    node: str
    action: dict[str, Any]
    status: str
    started_at: float
    finished_at: float
    transition: str | None = None
    via: str | None = None
    condition: str | None = None
    error: str | None = None
    output: Any = None
    tokens: int = 0
    cost_usd: float = 0.0
    attempt: int = 1

    @property
    def duration_ms(self) -> float:
        return (self.finished_at - self.started_at) * 1000

    def signature(self) -> tuple[Any, ...]:
        """Everything but the clock: equal signatures mean the same path."""
        return (
            self.node,
            tuple(sorted((k, str(v)) for k, v in self.action.items())),
            self.status,
            self.transition,
            self.via,
            self.condition,
            self.attempt,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "node": self.node,
            "action": self.action,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_ms": round(self.duration_ms, 3),
            "transition": self.transition,
            "via": self.via,
            "condition": self.condition,
            "error": self.error,
            "tokens": self.tokens,
            "cost_usd": self.cost_usd,
            "attempt": self.attempt,
        }


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything needed to resume a paused run at the node that paused, exactly once.

    ``memo`` holds the outcomes of behavior-tree actions that already ran, so resuming
    re-ticks the tree without running them again.
    """

    planner: str
    node: str
    data: dict[str, Any]
    token: str
    plan_digest: str
    steps_taken: int
    memo: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "planner": self.planner,
            "node": self.node,
            "data": self.data,
            "token": self.token,
            "plan_digest": self.plan_digest,
            "steps_taken": self.steps_taken,
            "memo": dict(self.memo),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        return cls(
            planner=str(data["planner"]),
            node=str(data["node"]),
            data=dict(data["data"]),
            token=str(data["token"]),
            plan_digest=str(data["plan_digest"]),
            steps_taken=int(data["steps_taken"]),
            memo={str(k): str(v) for k, v in dict(data.get("memo") or {}).items()},
        )


RunStatus = Literal["completed", "failed", "paused"]


@dataclass(slots=True)
class PlanResult:
    status: RunStatus
    node: str | None
    path: list[StepRecord]
    state: PlanState
    snapshot: Snapshot | None = None
    error: str | None = None

    def signature(self) -> tuple[Any, ...]:
        return (self.status, self.node, tuple(r.signature() for r in self.path))

    @property
    def nodes(self) -> list[str]:
        return [r.node for r in self.path]
