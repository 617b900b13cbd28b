"""Continuing a support plan that paused for a person (SPEC 4.8, issue 16).

A plan pauses at a ``human_review`` state that has somewhere to go next (it is not one of
the plan's final states), or at a tool call that needs approval. The pipeline returns its
`Snapshot`; the platform keeps it with the run. When the person decides, the decision is
the paused state's outcome and the plan goes on from that state:

- approve or edit: success, with ``state.review`` = ``{decision, reason}`` for conditions;
- reject (or an expired review): an error outcome ``rejected: <reason>``, so the state's
  ``on_error`` is the plan's rejection branch;
- an approved tool call: its result, as if the call had run in the plan (``tool.<id>``).

The message's turn (its classification, gathered context and generated answer) ended with
the worker that paused, so what a plan can do after a review is what does not need it:
tool calls, ``deliver`` and ``human_review``. Any other built-in step is an error outcome
that names why, for the plan's ``on_error`` to handle. What the customer reads is the
review's (the approved, edited or hand-off text); the plan decides what happens around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from agentflow.kernel.pipeline import plan_path
from agentflow.kernel.planning import BehaviorTreePlan, FSMPlan
from agentflow.kernel.planning.model import Action, PlanState, Snapshot, StepOutcome, ToolInvoker
from agentflow.kernel.planning.runtime import ResumeLedger
from agentflow.kernel.planning.support import REVIEW_STEP, pauses_for_review
from agentflow.kernel.results import PlanStep

__all__ = [
    "Continued",
    "continue_plan",
    "review_outcome",
    "tool_outcome",
]

DELIVER_STEP = "deliver"
WAITING_FOR_REVIEW = "waiting for a human review"

# What ``state.review.decision`` says for each way a review ends.
_APPROVING = frozenset({"approve", "edit"})


def review_outcome(decision: str, reason: str = "") -> StepOutcome:
    """The paused ``human_review`` state's outcome for a reviewer's ``decision``."""
    review = {"decision": decision, "reason": reason}
    if decision in _APPROVING:
        return StepOutcome.ok(review)
    return StepOutcome("error", review, f"rejected: {reason or 'by the reviewer'}")


def tool_outcome(status: str, output: Any = None, error: str | None = None) -> StepOutcome:
    """The paused tool state's outcome once a person decided on the call: its result when
    it ran (``ok``), an error outcome otherwise (``rejected``, ``error``, ``timeout``...)."""
    if status == "ok":
        return StepOutcome.ok(output)
    return StepOutcome("error", output, f"{status}: {error}" if error else status)


@dataclass(frozen=True, slots=True)
class Continued:
    """How a continued plan ended.

    ``deliver``: the plan went on to the end without asking a person again (the review's
    text is the answer). ``review``: it reached ``human_review`` as a final state, or failed
    (``error`` says why): a person decides again. ``paused``: it waits again (at
    ``human_review`` or a tool call that needs approval), with a new ``snapshot``.
    """

    status: Literal["deliver", "review", "paused"]
    node: str | None
    path: list[PlanStep]
    snapshot: dict[str, Any] | None = None
    error: str | None = None


class _AfterReview:
    """The step executor of a continued plan: ``deliver`` and ``human_review`` record the
    plan's decision; steps that need the message's turn fail and say so."""

    def __init__(self, pauses: bool) -> None:
        self.pauses = pauses
        self.reviewed = False

    async def execute(self, action: Action, state: PlanState) -> StepOutcome:
        if action.kind == "step" and action.name == DELIVER_STEP:
            self.reviewed = False
            return StepOutcome.ok()
        if action.kind == "step" and action.name == REVIEW_STEP:
            self.reviewed = True
            return (
                StepOutcome("paused", error=WAITING_FOR_REVIEW)
                if self.pauses
                else (StepOutcome.ok())
            )
        return StepOutcome.failed(
            f"`{action}` cannot run after a review: it needs the message's turn, "
            "which ended when the plan paused"
        )


async def continue_plan(
    plan: FSMPlan | BehaviorTreePlan,
    snapshot: Mapping[str, Any],
    decision: StepOutcome,
    *,
    tools: ToolInvoker | None,
    ledger: ResumeLedger,
    origin: float,
    clock: Any,
    tool_id: str | None = None,
) -> Continued:
    """Resume ``plan`` at ``snapshot``'s state with ``decision`` as its outcome, and run it on.

    For the plan's conditions, a review's decision (`review_outcome`) is written to
    ``state.review``; with ``tool_id``, the approved call's output to ``tool.<tool_id>``.
    Path times are ms since ``origin`` on ``clock``. Raises `ResumeError` when the snapshot
    is not this plan's (the agent's plan changed while the run waited), `AlreadyResumed`
    when ``ledger`` refuses its token.
    """
    paused = Snapshot.from_dict(dict(snapshot))
    data = PlanState.from_dict(paused.data)
    if tool_id:
        if decision.status == "ok":
            data.tool[tool_id] = decision.output
    elif isinstance(decision.output, Mapping):
        data.state["review"] = dict(decision.output)
    paused = Snapshot(
        paused.planner, paused.node, data.to_dict(), paused.token, paused.plan_digest,
        paused.steps_taken, paused.memo,
    )  # fmt: skip
    steps = _AfterReview(pauses_for_review(plan))
    result = await plan.resume(paused, decision, steps, tools=tools, ledger=ledger, clock=clock)
    path = plan_path(result, origin)
    if result.status == "paused":
        again = result.snapshot.to_dict() if result.snapshot is not None else None
        return Continued("paused", result.node, path, again, result.error)
    if result.status == "completed" and not steps.reviewed:
        return Continued("deliver", result.node, path)
    reason = result.error or "the plan asks a person again"
    return Continued("review", result.node, path, error=reason)
