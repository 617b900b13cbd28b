"""Replanning when a step fails, times out, runs out of budget, answers poorly, or is interrupted.

Configured per agent, one rule per trigger::

    replanning:
      failure:  {strategy: retry, max_attempts: 3, backoff_s: 0.2, factor: 2, then: escalate}
      timeout:  {strategy: retry, max_attempts: 2, then: fallback}
      budget:   {strategy: escalate}
      quality:  {strategy: retry, max_attempts: 2, check: "response.confidence >= 0.6",
                 steps: [generate_response], then: escalate}
      external: {strategy: escalate}

Strategies: ``retry`` (the same step again after ``backoff_s * factor**(attempt-1)``
seconds, at most ``max_attempts`` attempts in all, then the ``then`` strategy), ``fallback``
(stop this plan; `run_with_replanning` continues with the simpler fallback plan on the same
state), ``escalate`` (pause for a human at this step: the run returns a resumable snapshot),
``continue`` (the plan's own ``on_error``). A trigger without a rule continues.

Triggers: ``failure`` and ``timeout`` come from the step's outcome; ``budget`` from a hard
budget refusing an LLM call (`BudgetExceeded`); ``quality`` from the ``check`` condition
(CEL) failing after one of ``steps`` succeeded; ``external`` from `ReplanPolicy.signal`
(a webhook, a schedule, the user interrupting), which takes effect before the next step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentflow.kernel.planning.expressions import (
    CompiledExpression,
    ExpressionError,
    ExpressionEvalError,
    compile_expression,
)
from agentflow.kernel.planning.model import (
    Action,
    PlanResult,
    PlanState,
    StepExecutor,
    StepOutcome,
    ToolInvoker,
)
from agentflow.kernel.planning.runtime import TRIGGERS, ReplanDecision

__all__ = ["ReplanPolicy", "ReplanRule", "ReplanningExecutor", "run_with_replanning"]

STRATEGIES = ("retry", "fallback", "escalate", "continue")


@dataclass(frozen=True, slots=True)
class ReplanRule:
    strategy: str = "continue"
    max_attempts: int = 3
    backoff_s: float = 0.0
    factor: float = 2.0
    then: str = "continue"
    check: CompiledExpression | None = None
    steps: frozenset[str] | None = None

    def decide(self, attempt: int, reason: str) -> ReplanDecision:
        if self.strategy == "retry":
            if attempt < self.max_attempts:
                delay = self.backoff_s * self.factor ** (attempt - 1)
                return ReplanDecision("retry", delay, reason)
            return ReplanDecision(self.then, 0.0, reason)  # type: ignore[arg-type]
        return ReplanDecision(self.strategy, 0.0, reason)  # type: ignore[arg-type]


@dataclass(slots=True)
class ReplanPolicy:
    """A `Replanner` from per-trigger rules; records every decision it made."""

    rules: dict[str, ReplanRule] = field(default_factory=dict)
    decisions: list[tuple[str, str, str, int]] = field(default_factory=list)
    pending_events: list[str] = field(default_factory=list)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> ReplanPolicy:
        """Build from the ``replanning`` mapping; `ValueError` lists every problem."""
        problems: list[str] = []
        rules: dict[str, ReplanRule] = {}
        for trigger, raw in (config or {}).items():
            if trigger not in TRIGGERS:
                problems.append(f"unknown trigger `{trigger}` (one of {', '.join(TRIGGERS)})")
                continue
            if not isinstance(raw, Mapping):
                problems.append(f"{trigger}: a rule is a mapping with a strategy")
                continue
            rule = _rule(trigger, raw, problems)
            if rule is not None:
                rules[trigger] = rule
        if problems:
            raise ValueError("replanning: " + "; ".join(problems))
        return cls(rules)

    async def decide(
        self, trigger: str, node: str, outcome: StepOutcome, attempt: int
    ) -> ReplanDecision:
        rule = self.rules.get(trigger)
        decision = (
            rule.decide(attempt, outcome.error or trigger)
            if rule is not None
            else ReplanDecision("continue")
        )
        self.decisions.append((trigger, node, decision.strategy, attempt))
        return decision

    def signal(self, event: str) -> None:
        """An external event: the next step reports it instead of running."""
        self.pending_events.append(event)

    def executor(self, inner: StepExecutor) -> ReplanningExecutor:
        return ReplanningExecutor(inner, self)


def _rule(trigger: str, raw: Mapping[str, Any], problems: list[str]) -> ReplanRule | None:
    strategy = raw.get("strategy")
    then = raw.get("then", "continue")
    for name, value in (("strategy", strategy), ("then", then)):
        if value not in STRATEGIES:
            problems.append(f"{trigger}: {name} `{value}` is not one of {', '.join(STRATEGIES)}")
    if then == "retry":
        problems.append(f"{trigger}: `then` cannot be retry")
    numbers = {}
    for key, default, low in (("max_attempts", 3, 1), ("backoff_s", 0.0, 0), ("factor", 2.0, 1)):
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
            problems.append(f"{trigger}: `{key}` must be a number ≥ {low}")
            value = default
        numbers[key] = value
    check = None
    if trigger == "quality":
        try:
            check = compile_expression(raw.get("check", ""), boolean=True)
        except ExpressionError as exc:
            problems.append(f"quality: check {exc}")
    steps = raw.get("steps")
    if problems:
        return None
    return ReplanRule(
        str(strategy),
        int(numbers["max_attempts"]),
        float(numbers["backoff_s"]),
        float(numbers["factor"]),
        str(then),
        check,
        frozenset(steps) if steps else None,
    )


class ReplanningExecutor:
    """Wraps a step executor to raise the ``quality`` and ``external`` triggers."""

    def __init__(self, inner: StepExecutor, policy: ReplanPolicy) -> None:
        self.inner = inner
        self.policy = policy

    async def execute(self, action: Action, state: PlanState) -> StepOutcome:
        if self.policy.pending_events:
            event = self.policy.pending_events.pop(0)
            return StepOutcome("error", error=f"external: {event}")
        outcome = await self.inner.execute(action, state)
        rule = self.policy.rules.get("quality")
        if outcome.status != "ok" or rule is None or rule.check is None:
            return outcome
        if rule.steps is not None and action.name not in rule.steps:
            return outcome
        try:
            good = rule.check.test(state.variables())
        except ExpressionEvalError as exc:
            good, detail = False, str(exc)
        else:
            detail = rule.check.source
        if good:
            return outcome
        return StepOutcome(
            "error", outcome.output, f"quality: {detail} does not hold", outcome.tokens,
            outcome.cost_usd,
        )  # fmt: skip


async def run_with_replanning(
    plan: Any,
    state: PlanState,
    executor: StepExecutor,
    policy: ReplanPolicy,
    *,
    fallback: Any = None,
    tools: ToolInvoker | None = None,
    clock: Callable[[], float] | None = None,
) -> PlanResult:
    """Run ``plan`` under ``policy``; when a rule says ``fallback``, run ``fallback`` next.

    The fallback plan starts from the state the first plan left, and its steps follow the
    first plan's in the returned path. ``clock`` times the path (the planners' default).
    """
    wrapped = policy.executor(executor)
    timing = {} if clock is None else {"clock": clock}
    result: PlanResult = await plan.run(state, wrapped, tools=tools, replanner=policy, **timing)
    if result.status != "failed" or not (result.error or "").startswith("fallback:"):
        return result
    if fallback is None:
        result.error = f"{result.error} (no fallback plan configured)"
        return result
    second: PlanResult = await fallback.run(
        result.state, wrapped, tools=tools, replanner=policy, **timing
    )
    offset = len(result.path)
    for record in second.path:
        record.index += offset
    second.path[:0] = result.path
    return second
