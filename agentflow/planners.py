"""Planners in agent configs (issue 16): their config model, validation and cost preflight.

A `support_agent` config may hold ``planner: {type: fsm | behavior_tree | llm, definition:
<YAML text or object>}``. It is loaded with the kernel's own loader (`load_plan`) against
the steps a support agent knows (`SUPPORT_STEPS`), so the platform refuses exactly what the
kernel would, with every error at once; a definition given as YAML text has each error
named by its line and column in that text. Platform agents have no tools or sub-agents yet:
a plan naming one is refused (its action is unknown).

A tenant writes this text and the server parses it, so YAML aliases (the "billion laughs"
expansion), deep nesting and huge definitions are refused before the kernel sees them.

`preflight_agent` estimates what one message would cost along the agent's plan (its own or
the default support FSM) without running anything. `run_preflight` is the same estimate made
before every run (the run's worker enforces it); `preflight_accuracy` sums up how close those
estimates came to what the runs spent.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    field_validator,
    model_serializer,
)

from agentflow.core.prices import agent_prices
from agentflow.kernel.config import ConfigIssue
from agentflow.kernel.costs import Budget, PriceTable
from agentflow.kernel.intents import IntentCategory
from agentflow.kernel.planning.parsing import Known
from agentflow.kernel.planning.preflight import (
    CostProfile,
    PreflightEstimate,
    calibrated_scale,
    preflight,
)
from agentflow.kernel.planning.replanning import ReplanPolicy
from agentflow.kernel.planning.source import (
    MDict,
    PlanError,
    PlanValidationError,
    Pos,
    parse_source,
)
from agentflow.kernel.planning.support import SUPPORT_PLANNER, SUPPORT_STEPS
from agentflow.kernel.planning.validation import load_plan

__all__ = [
    "DEFAULT_PLANNER",
    "MAX_DEFINITION_CHARS",
    "PLATFORM_KNOWN",
    "RUNNABLE_TYPES",
    "PlannerConfig",
    "has_budget",
    "kernel_plan_spec",
    "load_planner",
    "planner_issues",
    "preflight_accuracy",
    "preflight_agent",
    "preflight_record",
    "preflight_token_scale",
    "prices_runs",
    "run_preflight",
    "support_known",
]

DEFAULT_PLANNER: Mapping[str, Any] = SUPPORT_PLANNER
# What a platform agent's plan may name: the support agent's built-in steps and the tools
# its config grants (`granted_tools`), no sub-agents (none can run on the platform yet).
PLATFORM_KNOWN = Known(steps=SUPPORT_STEPS, tools=frozenset(), agents=frozenset())


def granted_tools(config: Mapping[str, Any]) -> frozenset[str]:
    """The tool ids an agent config grants (``tools``: ids or {id, safety_level})."""
    return frozenset(
        entry if isinstance(entry, str) else str(entry.get("id", ""))
        for entry in config.get("tools") or ()
    )


# What the platform's support pipeline can follow (the kernel's `AgentPipeline`); an LLM
# planner drives a library `PlannerAgent` and has no platform runner yet.
RUNNABLE_TYPES = frozenset({"fsm", "behavior_tree", "llm"})
MAX_DEFINITION_CHARS = 100_000
MAX_DEFINITION_DEPTH = 64  # as deep as a JSON body may nest
# A real plan has a few hundred; each CEL condition costs about a millisecond to compile.
MAX_DEFINITION_NODES = 5_000
VERDICTS = {"ok": "ok", "warn": "warn", "refuse": "refused"}

_FORMAT = (
    "FSM: {states: {<name>: {action?, on_success?, on_error?, conditional_transitions?: "
    "[{condition, target}], condition?, on_true?, on_false?, timeout?}}, initial_state, "
    "final_states}. Behavior tree: {root: <node>}, a node being sequence | selector | "
    "parallel (success_policy: all | any | <count>) | conditional_selector | condition "
    "(check) | action (step). LLM: {actions: [<step>], max_steps?, goal?, on_invalid?: "
    "fallback | human, fallback?: {type, definition}}. Conditions are CEL over message, "
    "intent, response, state and user. Steps: " + ", ".join(sorted(SUPPORT_STEPS)) + "."
)
_DEFINITION_SCHEMA = {
    "anyOf": [{"type": "string", "maxLength": MAX_DEFINITION_CHARS}, {"type": "object"}],
    "description": "The plan, as YAML text (errors name its lines) or as an object. " + _FORMAT,
}


class PlannerConfig(BaseModel):
    """``{type, definition}``: which planner chooses the agent's steps, and its plan."""

    model_config = ConfigDict(
        extra="forbid",
        title="planner",
        json_schema_extra={
            "description": "The agent's planner (docs/planners.md). Absent or null: the "
            "default planner, the support FSM classify -> context -> generate_response -> "
            "evaluate -> deliver | human_review (the blueprint's default_planner)."
        },
    )

    type: Literal["fsm", "behavior_tree", "llm"] = Field(description="The planner's kind.")
    definition: Annotated[Any, WithJsonSchema(_DEFINITION_SCHEMA)]
    replanning: dict[str, Any] | None = Field(
        default=None,
        description="Per trigger (failure, timeout, budget, quality, external), what to do "
        "when a step does not succeed: {strategy: retry | escalate | fallback | continue, "
        "max_attempts, backoff_s, factor, then} (docs/planners.md, Replanning). FSM and "
        "behavior-tree planners of the support pipeline; absent: the plan's on_error.",
    )

    @model_serializer(mode="wrap")
    def _without_absent_rules(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A planner is stored as it was given: no `replanning: null` added to it.
        data: dict[str, Any] = handler(self)
        if data.get("replanning") is None:
            data.pop("replanning", None)
        return data

    @field_validator("definition")
    @classmethod
    def _text_or_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            if len(value) > MAX_DEFINITION_CHARS:
                raise ValueError(f"longer than {MAX_DEFINITION_CHARS} characters")
            return value
        if isinstance(value, Mapping):
            return value
        raise ValueError(f"must be YAML text or an object, not {type(value).__name__}")


# --------------------------------------------------------------------------- validation


def planner_issues(
    planner: PlannerConfig | None,
    path: str = "planner",
    tools: Iterable[str] = (),
    *,
    known: Known | None = None,
    runnable: frozenset[str] = RUNNABLE_TYPES,
    runner: str = "the support pipeline",
    replans: bool = True,
) -> list[ConfigIssue]:
    """Every error of the planner's plan, each naming its line when it came from YAML.

    ``known``: the steps, tools and agents its actions may name (default: the support
    steps, and ``tools``, the config's grants, for its tool states); ``runnable``: the
    planner types ``runner`` follows; ``replans``: whether it follows replanning rules.
    """
    if planner is None:
        return []
    if planner.replanning is not None:
        problem = _replanning_problem(planner, replans, runner)
        if problem:
            return [ConfigIssue(f"{path}.replanning", problem)]
    try:
        load_planner(planner, tools, known=known)
    except PlanValidationError as exc:
        return [
            ConfigIssue(f"{path}.definition", str(error), line=error.pos.line or None)
            for error in exc.errors
        ]
    if planner.type not in runnable:
        # Checked like the others (its errors above name their lines), but refused rather
        # than stored and then silently not followed.
        reason = (
            f"a valid `{planner.type}` planner, but {runner} runs only "
            f"{' and '.join(sorted(runnable))} planners"
        )
        return [ConfigIssue(f"{path}.type", reason)]
    return []


def _replanning_problem(planner: PlannerConfig, replans: bool, runner: str) -> str | None:
    """Why the planner's replanning rules cannot be followed (None: they can)."""
    if not replans:
        return f"{runner} does not follow replanning rules (the support pipeline does)"
    if planner.type == "llm":
        return "an llm planner repairs and falls back on its own (its `fallback`)"
    try:
        ReplanPolicy.from_config(planner.replanning)
    except ValueError as exc:
        return str(exc)
    return None


def kernel_plan_spec(planner: PlannerConfig) -> Mapping[str, Any]:
    """The plan spec the kernel's `load_plan` reads, from a platform planner config."""
    definition = _definition_data(planner.definition)
    if planner.type == "llm":
        # The kernel reads an LLM planner's settings next to its type.
        if isinstance(definition, MDict):
            definition["type"] = "llm"
            return definition
        return {**definition, "type": "llm"}
    return {"type": planner.type, "definition": definition}


def support_known(tools: Iterable[str] = ()) -> Known:
    """What a support agent's plan may name: its built-in steps and its granted tools."""
    return Known(steps=SUPPORT_STEPS, tools=frozenset(tools), agents=frozenset())


def load_planner(
    planner: PlannerConfig, tools: Iterable[str] = (), *, known: Known | None = None
) -> Any:
    """The kernel plan of a planner config; `PlanValidationError` listing every error.

    ``tools``: the tool ids its tool states may call (the agent's grants); ``known``:
    what it may name instead of a support agent's steps and tools."""
    return load_plan(kernel_plan_spec(planner), known=known or support_known(tools))


def _definition_data(definition: Any) -> Mapping[str, Any]:
    """The definition as a mapping (YAML text parsed with its positions), or why not."""
    if isinstance(definition, str):
        problems = _hostile_yaml(definition)
        if problems:
            raise PlanValidationError(problems)
        data = parse_source(definition)
        if not isinstance(data, Mapping):
            where = getattr(data, "pos", Pos(1, 1))
            raise PlanValidationError([PlanError("the definition must be a mapping", where)])
        return data
    if _node_count(definition) > MAX_DEFINITION_NODES:
        reason = f"more than {MAX_DEFINITION_NODES} values in the definition"
        raise PlanValidationError([PlanError(reason)])
    return dict(definition)


def _hostile_yaml(text: str) -> list[PlanError]:
    """Aliases, nesting deeper than a JSON body's, or too many nodes: refused unparsed.

    PyYAML's event parser is iterative, so this walk is safe on any input; a syntax error
    is left to `parse_source`, which reports it with its line.
    """
    depth = nodes = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            mark = event.start_mark
            where = Pos(mark.line + 1, mark.column + 1) if mark is not None else Pos()
            if isinstance(event, yaml.AliasEvent):
                return [PlanError("YAML aliases (`*name`) are not allowed in a definition", where)]
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEFINITION_DEPTH:
                    reason = f"nested deeper than {MAX_DEFINITION_DEPTH} levels"
                    return [PlanError(reason, where)]
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            if isinstance(event, yaml.NodeEvent):
                nodes += 1
                if nodes > MAX_DEFINITION_NODES:
                    reason = f"more than {MAX_DEFINITION_NODES} values in the definition"
                    return [PlanError(reason, where)]
    except yaml.YAMLError:
        return []
    return []


def _node_count(value: Any) -> int:
    """Values in a JSON-shaped object, counted without recursion (stops past the limit)."""
    count, pending = 0, [value]
    while pending and count <= MAX_DEFINITION_NODES:
        item = pending.pop()
        count += 1
        if isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return count


# ---------------------------------------------------------------------------- preflight


def preflight_agent(
    agent_id: str,
    config: Mapping[str, Any],
    message: str,
    tool_costs: Mapping[str, float] | None = None,
    *,
    token_scale: float = 1.0,
    spent_usd: float = 0.0,
) -> dict[str, Any]:
    """The cost estimate of one message along the agent's plan; nothing runs.

    ``config`` is the agent's normalised support_agent config. The prompts are rebuilt as
    the kernel would send them (its name in prompts is the agent id, as in
    `pipelines.kernel_config`); knowledge is the typical retrieved length, and the
    budget is compared with ``spent_usd`` (the agent's spend today, `budgets.spent_today`)
    plus this message. ``token_scale``: the agent's calibration (`preflight_token_scale`).
    """
    given = config.get("planner")
    planner = PlannerConfig.model_validate(given or DEFAULT_PLANNER)
    plan = (
        load_planner(planner, granted_tools(config))
        if given
        else load_plan(DEFAULT_PLANNER, known=PLATFORM_KNOWN)
    )
    profile = _cost_profile(agent_id, config, tool_costs)
    profile.token_scale = token_scale
    estimate = preflight(plan, message, profile, budget=_budget(config), spent_usd=spent_usd)
    return {
        "agent_id": agent_id,
        "planner": {"type": planner.type, "source": "agent" if given else "default"},
        "verdict": VERDICTS[estimate.decision],
        **estimate.to_dict(),
    }


def _cost_profile(
    agent_id: str, config: Mapping[str, Any], tool_costs: Mapping[str, float] | None = None
) -> CostProfile:
    providers = config.get("llm", {}).get("providers") or []
    paid = [p for p in providers if p.get("kind") != "offline"]
    categories = [
        IntentCategory(c["name"], c.get("description") or "", list(c.get("examples") or []))
        for c in config.get("intent_categories") or []
    ]
    return CostProfile(
        model=str(paid[0].get("model") or "gpt-4o-mini") if paid else "offline",
        # Priced as its runs are: its own llm.prices, else LLM_MODEL_PRICES, else defaults.
        price_table=agent_prices(config) if paid else PriceTable(),
        agent_name=agent_id,
        categories=categories,
        knowledge_top_k=int(config.get("memory", {}).get("knowledge_top_k", 3)),
        classify_with_llm=bool(paid),
        tool_costs=dict(tool_costs or {}),
    )


def has_budget(config: Mapping[str, Any]) -> bool:
    """Whether the agent's config sets a soft or hard budget (per UTC day, `budgets`)."""
    return _budget(config) is not None


def _budget(config: Mapping[str, Any]) -> Budget | None:
    limits = config.get("budget") or {}
    soft, hard = limits.get("soft_usd"), limits.get("hard_usd")
    return None if soft is None and hard is None else Budget(soft, hard)


def run_preflight(
    plan: Any,
    agent_id: str,
    config: Mapping[str, Any],
    message: str,
    tool_costs: Mapping[str, float] | None = None,
    *,
    token_scale: float = 1.0,
) -> PreflightEstimate:
    """The estimate of one run's message along the plan its pipeline follows (already loaded).

    ``tool_costs``: the prices of the tools its plan may call. An offline agent without
    priced tools sends nothing priced: its estimate is empty, without rebuilding prompts
    (every offline run pays this call). ``token_scale``: see `preflight_token_scale`.
    """
    profile = _cost_profile(agent_id, config, tool_costs)
    if profile.offline and not profile.tool_costs:
        return PreflightEstimate([], budget=_budget(config))
    profile.token_scale = token_scale
    return preflight(plan, message, profile, budget=_budget(config))


def prices_runs(config: Mapping[str, Any]) -> bool:
    """Whether an agent's runs call a priced LLM (and so have a preflight worth calibrating)."""
    providers = config.get("llm", {}).get("providers") or []
    return any(p.get("kind") != "offline" for p in providers)


def preflight_record(estimate: PreflightEstimate) -> dict[str, Any]:
    """What a run's result keeps of its preflight (``metadata.preflight``)."""
    return {
        "estimated_tokens": estimate.tokens,
        "raw_estimated_tokens": estimate.raw_tokens,
        "token_scale": estimate.token_scale,
        "estimated_usd": round(estimate.usd, 8),
        "max_usd": round(estimate.max_usd, 8),
        "spent_today_usd": round(estimate.spent_usd, 8),
        "verdict": VERDICTS[estimate.decision],
    }


def preflight_token_scale(records: Iterable[Mapping[str, Any]]) -> float:
    """The agent's token scale learnt from its runs' ``metadata.preflight`` records.

    Learnt from the uncalibrated estimate (``raw_estimated_tokens``; older records have only
    ``estimated_tokens``, made before any calibration), so a scale never compounds itself.
    """
    return calibrated_scale(
        (
            int(r.get("raw_estimated_tokens") or r.get("estimated_tokens") or 0),
            int(r.get("actual_tokens") or 0),
        )
        for r in records
    )


def preflight_accuracy(records: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """p50/p95 relative error of estimated vs actual tokens over runs that spent tokens.

    ``records`` are runs' ``metadata.preflight``; a run whose LLM spent nothing (offline, or
    refused before any call) says nothing about the estimate and is left out. None when no
    run is left.
    """
    errors = sorted(
        abs(int(r["estimated_tokens"]) - int(r["actual_tokens"])) / int(r["actual_tokens"])
        for r in records
        if int(r.get("actual_tokens") or 0) > 0 and int(r.get("estimated_tokens") or 0) > 0
    )
    if not errors:
        return None
    return {
        "runs": len(errors),
        "p50_error": round(statistics.median(errors), 4),
        "p95_error": round(errors[min(len(errors) - 1, int(0.95 * len(errors)))], 4),
    }
