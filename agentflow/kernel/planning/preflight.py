"""Cost preflight: tokens and dollars per step of a plan, before anything runs (SPEC 4.10).

For each step that calls an LLM, the estimate builds the prompt that step will send (the same
text the kernel sends: the intent classifier's system prompt with the configured categories,
the answer prompt with the agent's system prompt and the expected retrieved context, the LLM
planner's own prompt), counts its tokens with `agentflow.kernel.costs.estimate_tokens`
(about four characters a token, plus four tokens of role markup per message), and prices it
with the model's `PriceTable` entry. Two completion figures are kept: the *expected* answer
length (used to compare with what a run actually spent) and the call's cap (``max_tokens``, or
512 when the call sets none), which makes ``max_usd`` an upper bound.

Which steps are counted: an FSM's costliest path from the initial state to a final state
(each state once); every action of a behavior tree; an LLM plan's planning call plus the
costliest of its allowed actions ``max_steps`` times. Tool steps add their ``cost_per_call``.

Calibration: four characters a token is one rule for every model and language; a provider
counts with its own tokenizer. ``token_scale`` multiplies every estimated token count (prompt
and expected completion; never the completion cap, which the provider enforces), and
`calibrated_scale` learns it from an agent's own runs: the median of actual ÷ uncalibrated
estimate over its recent runs, once there are enough of them.

Budgets: ``max_usd`` (plus what the scope already spent) above a hard limit → ``refuse``,
raised as `PreflightRefused` by `enforce` before any call; above the soft limit → ``warn``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from agentflow.kernel.costs import (
    DEFAULT_COMPLETION_TOKENS,
    Budget,
    PriceTable,
    estimate_usage,
)
from agentflow.kernel.handlers import DEFAULT_SYSTEM_PROMPT
from agentflow.kernel.intents import IntentCategory
from agentflow.kernel.llm.base import BudgetExceeded, ChatMessage, TokenUsage
from agentflow.kernel.planning.model import Action, PlanState

__all__ = [
    "CostProfile",
    "PreflightEstimate",
    "PreflightLedger",
    "PreflightRefused",
    "StepEstimate",
    "calibrated_scale",
    "decide",
    "enforce",
    "preflight",
]

CLASSIFY_STEPS = frozenset({"classify", "classify_intent"})
ANSWER_STEPS = frozenset({"generate", "generate_response", "respond", "answer"})


class PreflightRefused(BudgetExceeded):
    """A hard budget refuses the whole plan before its first call."""


@dataclass(slots=True)
class CostProfile:
    """What the estimate needs to rebuild the prompts: model, prices, prompts, context."""

    model: str = "offline"
    price_table: PriceTable = field(default_factory=PriceTable)
    agent_name: str = "agent"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    categories: Sequence[IntentCategory] = ()
    knowledge_top_k: int = 3
    # Typical retrieved article length (characters) when no knowledge is given.
    context_chars: int = 600
    knowledge: Sequence[Mapping[str, Any]] = ()
    classify_with_llm: bool = True
    expected_completion: Mapping[str, int] = field(
        default_factory=lambda: {"classify": 16, "answer": 120, "plan": 80}
    )
    tool_costs: Mapping[str, float] = field(default_factory=dict)
    step_prompts: Mapping[str, str] = field(default_factory=dict)
    # Actual ÷ estimated tokens, learnt from the agent's runs (`calibrated_scale`).
    token_scale: float = 1.0

    @property
    def offline(self) -> bool:
        return self.model.startswith(("offline", "template"))


@dataclass(slots=True)
class StepEstimate:
    node: str
    action: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    completion_cap: int = 0
    usd: float = 0.0
    max_usd: float = 0.0
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "action": self.action,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "completion_cap": self.completion_cap,
            "usd": round(self.usd, 8),
            "max_usd": round(self.max_usd, 8),
        }


@dataclass(slots=True)
class PreflightEstimate:
    steps: list[StepEstimate]
    decision: str = "ok"  # ok | warn | refuse
    budget: Budget | None = None
    spent_usd: float = 0.0
    method: str = "chars/4 + 4 per message; costliest path"
    token_scale: float = 1.0

    @property
    def tokens(self) -> int:
        return sum(s.prompt_tokens + s.completion_tokens for s in self.steps)

    @property
    def raw_tokens(self) -> int:
        """The estimate before calibration: what `calibrated_scale` learns from."""
        return round(self.tokens / self.token_scale) if self.token_scale else self.tokens

    @property
    def usd(self) -> float:
        return sum(s.usd for s in self.steps)

    @property
    def max_usd(self) -> float:
        return sum(s.max_usd for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        budget = None
        if self.budget is not None:
            budget = {"soft_usd": self.budget.soft_usd, "hard_usd": self.budget.hard_usd}
        return {
            "decision": self.decision,
            "tokens": self.tokens,
            "usd": round(self.usd, 8),
            "max_usd": round(self.max_usd, 8),
            "spent_usd": self.spent_usd,
            "budget": budget,
            "method": self.method,
            "token_scale": self.token_scale,
            "steps": [s.to_dict() for s in self.steps],
        }


def _messages_for(
    action: Action, message: str, profile: CostProfile, planner: Any
) -> tuple[list[ChatMessage], int, int, str] | None:
    """(messages, expected completion, completion cap, kind) of an LLM step; None if none."""
    name = action.name
    if action.kind == "step" and name in profile.step_prompts:
        text = profile.step_prompts[name].replace("{message}", message)
        return [ChatMessage("user", text)], profile.expected_completion.get(name, 120), 512, name
    if action.kind == "step" and name in CLASSIFY_STEPS:
        if not (profile.classify_with_llm and profile.categories):
            return None
        return (
            _classifier_messages(profile.categories, message),
            profile.expected_completion.get("classify", 16),
            60,
            "classify",
        )
    if action.kind == "step" and name in ANSWER_STEPS:
        system = profile.system_prompt.replace("{agent_name}", profile.agent_name)
        context = _expected_context(profile)
        parts = [system, *(["Context:", *context] if context else [])]
        return (
            [ChatMessage("system", "\n".join(parts)), ChatMessage("user", message)],
            profile.expected_completion.get("answer", 120),
            DEFAULT_COMPLETION_TOKENS,
            "answer",
        )
    return None


class _NoFallback:
    oos_threshold = 0.5


def _classifier_messages(categories: Sequence[IntentCategory], message: str) -> list[ChatMessage]:
    """The exact messages the LLM intent classifier sends (built by the classifier itself)."""
    from agentflow.kernel.intents import LLMIntentClassifier

    classifier = LLMIntentClassifier(cast(Any, None), categories, fallback=cast(Any, _NoFallback()))
    return [
        ChatMessage("system", classifier.system_prompt),
        ChatMessage("user", classifier._user_prompt(message, ())),
    ]


def _expected_context(profile: CostProfile) -> list[str]:
    k = max(profile.knowledge_top_k, 0)
    if profile.knowledge:
        docs = list(profile.knowledge)[:k]
        return [
            f"[{i}] (knowledge: {d.get('title', '')}) {d.get('text', '')}"
            for i, d in enumerate(docs, 1)
        ]
    return [f"[{i}] (knowledge: ...) " + "x" * profile.context_chars for i in range(1, k + 1)]


def _estimate_step(
    node: str, action: Action, message: str, profile: CostProfile, planner: Any
) -> StepEstimate:
    estimate = StepEstimate(node, str(action))
    if action.kind == "tool":
        cost = float(profile.tool_costs.get(action.name, 0.0))
        estimate.usd = estimate.max_usd = cost
        return estimate
    found = _messages_for(action, message, profile, planner)
    if found is None or profile.offline:
        return estimate
    messages, expected, cap, _ = found
    scale = profile.token_scale
    prompt = round(estimate_usage(messages, cap).prompt_tokens * scale)
    expected = round(expected * scale)
    estimate.model = profile.model
    estimate.prompt_tokens = prompt
    estimate.completion_tokens = expected
    estimate.completion_cap = cap
    price = profile.price_table
    estimate.usd = price.cost(profile.model, TokenUsage(prompt, expected))
    estimate.max_usd = price.cost(profile.model, TokenUsage(prompt, cap))
    return estimate


def preflight(
    plan: Any,
    message: str,
    profile: CostProfile | None = None,
    *,
    budget: Budget | None = None,
    spent_usd: float = 0.0,
) -> PreflightEstimate:
    """Estimate ``plan`` for ``message``; compare with ``budget`` (soft → warn, hard → refuse)."""
    profile = profile or CostProfile()
    kind = getattr(plan, "kind", "")
    if kind == "fsm":
        steps = _fsm_steps(plan, message, profile)
    elif kind == "llm":
        steps = _llm_steps(plan, message, profile)
    else:
        steps = [
            _estimate_step(node, action, message, profile, plan) for node, action in plan.actions()
        ]
    result = PreflightEstimate(steps, budget=budget, token_scale=profile.token_scale)
    if profile.token_scale != 1.0:
        result.method += f"; scaled by {profile.token_scale:.3f}, learnt from the agent's runs"
    return decide(result, spent_usd)


def decide(estimate: PreflightEstimate, spent_usd: float) -> PreflightEstimate:
    """Compare ``spent_usd`` plus the estimate's ``max_usd`` with its budget; set its decision."""
    estimate.spent_usd = spent_usd
    estimate.decision = "ok"
    budget = estimate.budget
    if budget is not None:
        total = spent_usd + estimate.max_usd
        if budget.hard_usd is not None and total > budget.hard_usd:
            estimate.decision = "refuse"
        elif budget.soft_usd is not None and total > budget.soft_usd:
            estimate.decision = "warn"
    return estimate


def enforce(estimate: PreflightEstimate, scope: str = "plan") -> PreflightEstimate:
    """Raise `PreflightRefused` when the estimate passes the hard budget; else return it."""
    if estimate.decision == "refuse" and estimate.budget is not None:
        limit = estimate.budget.hard_usd or 0.0
        raise PreflightRefused(scope, limit, estimate.spent_usd, estimate.max_usd)
    return estimate


def _fsm_steps(plan: Any, message: str, profile: CostProfile) -> list[StepEstimate]:
    per_state = {
        name: _estimate_step(name, state.action, message, profile, plan)
        for name, state in plan.states.items()
    }
    finals = set(plan.final_states)
    best: tuple[float, list[str]] = (-1.0, [])
    explored = 0

    def walk(name: str, seen: list[str], cost: float) -> None:
        nonlocal best, explored
        explored += 1
        if explored > 20_000:
            return
        seen = [*seen, name]
        cost += per_state[name].max_usd + per_state[name].prompt_tokens * 1e-12
        if name in finals:
            if cost > best[0]:
                best = (cost, seen)
            return
        for t in plan.states[name].transitions():
            if t.target in plan.states and t.target not in seen:
                walk(t.target, seen, cost)

    walk(plan.initial, [], 0.0)
    path = best[1] or list(plan.states)
    return [per_state[name] for name in path]


def _llm_steps(plan: Any, message: str, profile: CostProfile) -> list[StepEstimate]:
    state = PlanState(message=message)
    planning = StepEstimate("plan", "llm:plan")
    if not profile.offline:
        messages = plan.prompt(state)
        scale = profile.token_scale
        prompt = round(estimate_usage(messages, plan.max_tokens).prompt_tokens * scale)
        expected = round(profile.expected_completion.get("plan", 80) * scale)
        planning = StepEstimate(
            "plan", "llm:plan", prompt, expected, plan.max_tokens,
            profile.price_table.cost(profile.model, TokenUsage(prompt, expected)),
            profile.price_table.cost(profile.model, TokenUsage(prompt, plan.max_tokens)),
            profile.model,
        )  # fmt: skip
    candidates = [
        _estimate_step(name, Action(kind, name), message, profile, plan)
        for name, kind in sorted(plan.actions.items())
    ]
    costliest = max(candidates, key=lambda s: (s.max_usd, s.prompt_tokens), default=None)
    steps = [planning]
    if costliest is not None:
        for index in range(plan.max_steps):
            step = StepEstimate(**{**costliest.to_dict(), "node": f"step_{index + 1}"})
            step.usd, step.max_usd = costliest.usd, costliest.max_usd
            steps.append(step)
    return steps


def calibrated_scale(
    pairs: Iterable[tuple[int, int]],
    *,
    minimum_runs: int = 20,
    bounds: tuple[float, float] = (0.25, 4.0),
) -> float:
    """Actual ÷ uncalibrated estimated tokens, the median over ``pairs`` of (estimate, actual).

    1.0 until ``minimum_runs`` runs spent tokens (a few runs are noise, not a tokenizer);
    clamped to ``bounds`` so that a few broken runs cannot make the estimate absurd.
    """
    ratios = [actual / estimated for estimated, actual in pairs if estimated > 0 and actual > 0]
    if len(ratios) < minimum_runs:
        return 1.0
    low, high = bounds
    return round(min(max(statistics.median(ratios), low), high), 4)


class PreflightLedger:
    """Estimate vs actual per run, and the relative error per agent (seed 002: p50 ≤ 5 %)."""

    def __init__(self) -> None:
        self._rows: dict[str, list[tuple[int, int]]] = {}

    def record(self, agent: str, estimated_tokens: int, actual_tokens: int) -> float:
        self._rows.setdefault(agent, []).append((estimated_tokens, actual_tokens))
        return _relative(estimated_tokens, actual_tokens)

    def report(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for agent, rows in sorted(self._rows.items()):
            errors = sorted(_relative(e, a) for e, a in rows)
            out[agent] = {
                "runs": len(errors),
                "p50_error": statistics.median(errors),
                "p95_error": errors[min(len(errors) - 1, int(0.95 * len(errors)))],
            }
        return out


def _relative(estimated: int, actual: int) -> float:
    if actual == 0:
        return 0.0 if estimated == 0 else 1.0
    return abs(estimated - actual) / actual
