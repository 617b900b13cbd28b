"""A run whose plan waits for a person goes on after the decision (issues 16, 17).

The kernel pauses a plan at a non-final ``human_review`` state or at a tool call that needs
approval (`agentflow.kernel.continuation`); the run keeps the snapshot in
``Run.plan_snapshot`` while it awaits review. The decision does not complete such a run: it
stores what the plan goes on with under the snapshot's ``resume`` key and sends the run back
to the queue (``pending``), inside the decision's transaction, so it is taken exactly once
(the run's compare-and-set) and survives the worker: a run lost mid-way is re-sent by the
recovery sweep like any other, and continues from the same snapshot.

``resume`` holds the paused state's outcome (``outcome``: the review's decision, or the
approved call's result with ``tool_id``) and the review's delivery (``delivery``: the text
the customer reads, whether the thread closes, the review record). This module runs the
kernel's continuation on the worker's loop; `agentflow.services` settles the run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from agentflow import tooling
from agentflow.kernel.continuation import Continued, continue_plan, review_outcome, tool_outcome
from agentflow.kernel.planning import BehaviorTreePlan, FSMPlan
from agentflow.kernel.planning.model import StepOutcome
from agentflow.kernel.planning.runtime import ResumeError
from agentflow.models import Run
from agentflow.pipelines import get_pipeline

__all__ = [
    "ContinuedRun",
    "carried",
    "continues",
    "resume_state",
    "run_continuation",
    "waiting_snapshot",
]

RESUME_KEY = "resume"
# What an earlier review of the same run decided the customer reads (its text waits with the
# snapshot while a later review, e.g. of a tool call, is pending).
CARRIED_KEY = "delivery"
_DELIVERY_KEYS = ("review", "content", "close_thread")


def waiting_snapshot(run: Run) -> dict[str, Any] | None:
    """The snapshot of a run that waits for a decision to go on (None: the decision ends it)."""
    snapshot = run.plan_snapshot
    if not snapshot or RESUME_KEY in snapshot:
        return None
    return snapshot


def continues(run: Run) -> bool:
    """Whether the run was decided and its plan is to go on (the worker continues it)."""
    return bool(run.plan_snapshot and RESUME_KEY in run.plan_snapshot)


def resume_state(
    snapshot: dict[str, Any],
    *,
    delivery: dict[str, Any],
    tool_call: Any = None,
) -> dict[str, Any]:
    """``snapshot`` with what the plan goes on with: the review's decision as the paused
    state's outcome, or (``tool_call``: the call the plan paused on, decided) its result."""
    review = delivery.get("review") or {}
    if tool_call is not None:
        rejected = tool_call.status == "rejected"
        error = f"{review.get('reason') or 'by the reviewer'}" if rejected else tool_call.error
        outcome = tool_outcome(tool_call.status, tool_call.result, error or None)
        tool_id: str | None = tool_call.tool
    else:
        outcome = review_outcome(str(review.get("decision")), str(review.get("reason") or ""))
        tool_id = None
    earlier = snapshot.get(CARRIED_KEY) or {}
    content = delivery.get("content")
    resume = {
        "outcome": {"status": outcome.status, "output": outcome.output, "error": outcome.error},
        "tool_id": tool_id,
        "delivery": {
            "review": review,
            # An approved call delivers no text of its own: the earlier review's stands.
            "content": content if content is not None else earlier.get("content"),
            "close_thread": bool(delivery.get("close_thread") or earlier.get("close_thread")),
        },
    }
    return {**snapshot, RESUME_KEY: resume}


def carried(delivery: dict[str, Any]) -> dict[str, Any]:
    """The part of a review's delivery that waits with a new snapshot."""
    return {key: delivery.get(key) for key in _DELIVERY_KEYS}


@dataclass(frozen=True, slots=True)
class ContinuedRun:
    """The kernel's `Continued`, with what the run's tool calls did on the way."""

    continued: Continued
    delivery: dict[str, Any]
    tool_cost_usd: Decimal
    tool_calls: int
    pending_action: dict[str, Any] | None
    # Why the plan did not go on (its snapshot no longer fits the agent's plan).
    plan_error: str | None = None


class _SnapshotLedger:
    """Claims only the token of the snapshot this worker holds under the run's lease: the
    run's compare-and-set transitions make the claim once; a re-delivery after a crash
    holds the same snapshot and may continue it."""

    def __init__(self, token: str) -> None:
        self._token = token

    def claim(self, token: str) -> bool:
        return token == self._token


async def run_continuation(run: Run) -> ContinuedRun:
    """Go on with ``run``'s plan from its snapshot (on the worker's loop; no DB access here
    beyond the tool invoker's, which enters the tenant's scope itself)."""
    snapshot = dict(run.plan_snapshot or {})
    resume = snapshot.pop(RESUME_KEY)
    snapshot.pop(CARRIED_KEY, None)
    delivery = dict(resume["delivery"])
    pipeline = await get_pipeline(run.agent)
    plan = pipeline.plan
    tools = tooling.RunToolInvoker(run.agent, run.pk)
    if not isinstance(plan, FSMPlan | BehaviorTreePlan):
        return _not_continued(delivery, "the agent's planner no longer pauses")
    outcome = StepOutcome(**resume["outcome"])
    origin = run.started_at.timestamp() if run.started_at else time.time()
    try:
        continued = await continue_plan(
            plan,
            snapshot,
            outcome,
            tools=tools,
            ledger=_SnapshotLedger(str(snapshot.get("token"))),
            origin=origin,
            clock=time.time,
            tool_id=resume.get("tool_id"),
        )
    except ResumeError as exc:
        return _not_continued(delivery, f"the plan did not go on: {exc}")
    return ContinuedRun(continued, delivery, tools.cost_usd, tools.calls, tools.pending_action)


def _not_continued(delivery: dict[str, Any], why: str) -> ContinuedRun:
    """The agent's plan changed while the run waited: the review's outcome is delivered as
    it would have been without a plan to go on with."""
    return ContinuedRun(Continued("deliver", None, []), delivery, Decimal(0), 0, None, why)
