"""qa_test_agent: regression tests for agents, as scenario files run against another agent.

A suite is YAML (or the same data as a mapping)::

    agent: support                 # the agent under test: id or name (else the config's)
    scenarios:
      - name: password reset
        turns:
          - user: How do I reset my password?
            expect: {intent: PASSWORD_RESET, contains: [Reset password], escalated: false}

Each scenario is one conversation with the target agent, under a user id of its own (so
scenarios never see each other's history); every turn's reply is compared with what the
turn expects and each mismatch becomes a diff entry ``{field, expected, actual, reason}``.
The outcome is data, ``{valid, passed, failed, scenarios: [...]}``: a failing suite is the
answer to the question asked, not something for a person to review, so the run never
escalates. An invalid suite is reported the same way, every error naming its line and field.

The agent under test is reached through a `TargetDirectory` port (the platform's port runs
its pipeline in-process, inside the tenant); this module parses, runs turns and compares.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Annotated, Any, ClassVar, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from agentflow.kernel.agents import AgentState
from agentflow.kernel.blueprints.base import StepAgent, finish
from agentflow.kernel.planning.model import StepOutcome
from agentflow.kernel.planning.source import MDict, MList, PlanValidationError, parse_source
from agentflow.kernel.results import AgentReply

__all__ = [
    "MAX_SUITE_CHARS",
    "Expect",
    "QATestAgent",
    "RunLimits",
    "Scenario",
    "Suite",
    "SuiteError",
    "SuiteIssue",
    "Target",
    "TargetDirectory",
    "TargetError",
    "Turn",
    "agent_line",
    "compare",
    "format_report",
    "invalid_report",
    "load_suite",
    "looks_like_id",
    "observed",
    "run_suite",
]

# Limits of one suite: a run's message is at most 20,000 characters, metadata or a CLI
# file may be larger; past these a suite is an error, not a long run.
MAX_SUITE_CHARS = 200_000
MAX_SCENARIOS = 200
MAX_TURNS_PER_SCENARIO = 50
_EXCERPT = 300  # characters of an answer quoted in a diff

_Text = Annotated[str, Field(min_length=1, max_length=500)]
_Name = Annotated[str, Field(min_length=1, max_length=200)]


class Expect(BaseModel):
    """What one reply must show; an absent key is not checked."""

    model_config = ConfigDict(extra="forbid")

    intent: _Name | None = Field(default=None, description="the intent the target classifies")
    contains: list[_Text] = Field(default_factory=list, max_length=20)
    not_contains: list[_Text] = Field(default_factory=list, max_length=20)
    escalated: StrictBool | None = Field(default=None, description="whether a person must step in")
    tool_call: _Name | None = Field(default=None, description="a tool the turn must call")


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=4_000)
    expect: Expect = Field(default_factory=lambda: Expect())


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: _Name
    turns: list[Turn] = Field(min_length=1, max_length=MAX_TURNS_PER_SCENARIO)


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: _Name | None = Field(default=None, description="id or name of the agent under test")
    scenarios: list[Scenario] = Field(min_length=1, max_length=MAX_SCENARIOS)


@dataclass(frozen=True, slots=True)
class SuiteIssue:
    """One problem of a suite: its field path, its 1-based line (0: unknown), why."""

    path: str
    reason: str
    line: int = 0

    def __str__(self) -> str:
        where = ", ".join(
            part for part in (f"line {self.line}" if self.line else "", self.path) if part
        )
        return f"{where}: {self.reason}" if where else self.reason

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line or None, "field": self.path, "reason": self.reason}


class SuiteError(ValueError):
    """A suite that cannot run; `issues` name each problem's line and field."""

    def __init__(self, issues: Sequence[SuiteIssue]) -> None:
        self.issues = list(issues)
        super().__init__("; ".join(str(issue) for issue in self.issues))


# ------------------------------------------------------------------------------ parsing


def _format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(data: Any, loc: Sequence[int | str]) -> int:
    """The line of the deepest key or item of `loc` the document has (0 for plain data)."""
    node, line = data, getattr(data, "pos", None)
    found = line.line if line else 0
    for part in loc:
        in_map = isinstance(node, MDict) and isinstance(part, str) and part in node
        in_list = isinstance(node, MList) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_map or in_list):
            break
        found, node = node.at(part).line or found, node[part]
    return found


def _validation_issues(error: ValidationError, data: Any) -> list[SuiteIssue]:
    issues = []
    for item in error.errors():
        loc = [part for part in item["loc"] if isinstance(part, int | str)]
        reason = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            reason = "unknown key"
        issues.append(SuiteIssue(_format_loc(loc) or "suite", reason, _line_of(data, loc)))
    return sorted(issues, key=lambda issue: (issue.line, issue.path))


_OPEN = (
    yaml.BlockMappingStartToken,
    yaml.BlockSequenceStartToken,
    yaml.FlowMappingStartToken,
    yaml.FlowSequenceStartToken,
)
_CLOSE = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)
MAX_DEPTH = 20  # a suite needs 7 levels; the YAML composer recurses per level


def _refuse_hostile(text: str) -> None:
    """Refuse what would blow up once parsed: aliases (a few lines expand to millions of
    items when walked) and nesting deep enough to exhaust the parser's recursion."""
    depth = 0
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, _OPEN):
                depth += 1
            elif isinstance(token, _CLOSE):
                depth -= 1
            if isinstance(token, yaml.AliasToken | yaml.AnchorToken):
                reason = "YAML anchors and aliases are not allowed"
            elif depth > MAX_DEPTH:
                reason = f"nested more than {MAX_DEPTH} levels deep"
            else:
                continue
            raise SuiteError([SuiteIssue("suite", reason, token.start_mark.line + 1)])
    except yaml.MarkedYAMLError:
        return  # the parser reports it, with its line


def _parse_text(text: str) -> Any:
    if len(text) > MAX_SUITE_CHARS:
        reason = f"the suite has {len(text):,} characters, more than {MAX_SUITE_CHARS:,}"
        raise SuiteError([SuiteIssue("suite", reason)])
    _refuse_hostile(text)
    try:
        return parse_source(text)
    except PlanValidationError as exc:
        raise SuiteError([SuiteIssue("suite", e.reason, e.pos.line) for e in exc.errors]) from None


def load_suite(source: str | Mapping[str, Any]) -> Suite:
    """A validated suite from YAML/JSON text or a mapping; `SuiteError` naming every issue."""
    data = _parse_text(source) if isinstance(source, str) else source
    if not isinstance(data, Mapping):
        reason = "a suite is a mapping with `scenarios` (and optionally `agent`)"
        raise SuiteError([SuiteIssue("suite", reason, _line_of(data, []))])
    try:
        suite = Suite.model_validate(dict(data))
    except ValidationError as exc:
        raise SuiteError(_validation_issues(exc, data)) from None
    seen: set[str] = set()
    for index, scenario in enumerate(suite.scenarios):
        if scenario.name in seen:  # reports would not say which one failed
            loc: list[int | str] = ["scenarios", index, "name"]
            reason = f"another scenario is named {scenario.name!r}"
            raise SuiteError([SuiteIssue(_format_loc(loc), reason, _line_of(data, loc))])
        seen.add(scenario.name)
    return suite


def agent_line(source: str | Mapping[str, Any]) -> int:
    """The line of the suite's ``agent:`` key (0 if none), for errors about the target."""
    if not isinstance(source, str) or len(source) > MAX_SUITE_CHARS:
        return 0
    try:
        return _line_of(parse_source(source), ["agent"])
    except PlanValidationError:
        return 0


# ---------------------------------------------------------------------------- comparing


def observed(reply: AgentReply) -> dict[str, Any]:
    """What a test compares in a reply: the answer as the user sees it, and how it was made."""
    # Tools the turn's planner called, then those the support pipeline gathered context from.
    tools = [
        step.action.removeprefix("tool:")
        for step in reply.plan_path
        if step.action.startswith("tool:")
    ]
    tools += [str(name) for name in reply.metadata.get("tool_calls") or () if name not in tools]
    return {
        "content": reply.content,
        "intent": reply.intent,
        "intent_confidence": round(reply.intent_confidence, 4),
        "confidence": round(reply.confidence, 4),
        "escalated": reply.escalated,
        "escalation_reason": reply.escalation_reason,
        # What it would have said had nobody had to look (`contains` reads `content`).
        "proposed_answer": reply.proposed_answer,
        "tool_calls": tools,
        "tokens": int(reply.usage.total_tokens),
        "cost_usd": round(reply.cost_usd, 8),
    }


def _excerpt(text: str) -> str:
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 1] + "…"


def _has(content: str, needle: str, case_sensitive: bool) -> bool:
    return needle in content if case_sensitive else needle.casefold() in content.casefold()


def compare(
    expect: Expect, actual: Mapping[str, Any], *, case_sensitive: bool = False
) -> list[dict[str, Any]]:
    """One diff entry per expectation the reply breaks (empty: the turn passed)."""
    if actual.get("error"):
        return [
            {
                "field": "reply",
                "expected": "an answer",
                "actual": actual["error"],
                "reason": "the agent under test failed to answer",
            }
        ]
    diff: list[dict[str, Any]] = []
    content = str(actual.get("content") or "")
    got_intent = str(actual.get("intent") or "")
    if expect.intent is not None and not _same(expect.intent, got_intent, case_sensitive):
        diff.append(_entry("intent", expect.intent, got_intent, "another intent"))
    for needle in expect.contains:
        if not _has(content, needle, case_sensitive):
            diff.append(_entry("contains", needle, _excerpt(content), "missing from the answer"))
    for needle in expect.not_contains:
        if _has(content, needle, case_sensitive):
            diff.append(_entry("not_contains", needle, _excerpt(content), "found in the answer"))
    escalated = bool(actual.get("escalated"))
    if expect.escalated is not None and expect.escalated != escalated:
        why = "escalated to a person" if escalated else "answered without a person"
        diff.append(_entry("escalated", expect.escalated, escalated, why))
    tools = list(actual.get("tool_calls") or [])
    if expect.tool_call is not None and expect.tool_call not in tools:
        diff.append(_entry("tool_call", expect.tool_call, tools, "the tool was not called"))
    return diff


def _same(expected: str, got: str, case_sensitive: bool) -> bool:
    return expected == got if case_sensitive else expected.casefold() == got.casefold()


def _entry(field: str, expected: Any, actual: Any, reason: str) -> dict[str, Any]:
    return {"field": field, "expected": expected, "actual": actual, "reason": reason}


# ------------------------------------------------------------------------------ running


class TargetError(LookupError):
    """The agent under test cannot be used: unknown in this tenant, or not testable."""


class Target(Protocol):
    """The agent under test, as the suite talks to it."""

    id: str
    name: str

    async def reply(
        self, *, user_id: str, message: str, context: Mapping[str, Any]
    ) -> AgentReply: ...

    async def forget(self, user_id: str) -> None:
        """Erase a test conversation (session, memory), so it does not teach the agent."""


class TargetDirectory(Protocol):
    async def open(self, ref: str) -> Target:
        """The agent `ref` (id or name) of the caller's tenant; `TargetError` if none."""


@dataclass(frozen=True, slots=True)
class RunLimits:
    max_turns: int = 200
    turn_timeout_seconds: float = 30.0
    case_sensitive: bool = False
    keep_conversations: bool = False
    concurrency: int = 1  # scenarios in flight at once (each is its own conversation)


async def _turn(
    target: Target, turn: Turn, user_id: str, context: Mapping[str, Any], limits: RunLimits
) -> dict[str, Any]:
    try:
        reply = await asyncio.wait_for(
            target.reply(user_id=user_id, message=turn.user, context=context),
            limits.turn_timeout_seconds,
        )
        actual = observed(reply)
    except TimeoutError:
        actual = {"error": f"no answer within {limits.turn_timeout_seconds:g} s"}
    except Exception as exc:  # the target's failure is this turn's result, not the run's
        actual = {"error": f"{type(exc).__name__}: {_excerpt(str(exc))}"}
    diff = compare(turn.expect, actual, case_sensitive=limits.case_sensitive)
    return {
        "user": turn.user,
        "passed": not diff,
        "expected": turn.expect.model_dump(exclude_defaults=True),
        "actual": actual,
        "diff": diff,
    }


async def _scenario(
    target: Target, scenario: Scenario, user_id: str, context: Mapping[str, Any], limits: RunLimits
) -> dict[str, Any]:
    turns = []
    try:
        for index, turn in enumerate(scenario.turns):
            result = await _turn(target, turn, user_id, context, limits)
            turns.append({"index": index, **result})
    finally:
        erased = limits.keep_conversations or await _forget(target, user_id)
    outcome = {
        "name": scenario.name,
        "passed": all(turn["passed"] for turn in turns),
        "user_id": user_id,
        "turns": turns,
    }
    if not erased:
        outcome["warning"] = "the test conversation could not be erased"
    return outcome


async def _forget(target: Target, user_id: str) -> bool:
    try:
        await target.forget(user_id)
    except Exception:  # the verdict stands; the report says what was left behind
        return False
    return True


async def run_suite(
    suite: Suite, target: Target, *, limits: RunLimits, run_key: str = ""
) -> dict[str, Any]:
    """Every scenario against `target`, in order; the report (see the module docstring)."""
    total_turns = sum(len(scenario.turns) for scenario in suite.scenarios)
    if total_turns > limits.max_turns:
        reason = f"the suite has {total_turns} turns, more than max_turns ({limits.max_turns})"
        raise SuiteError([SuiteIssue("scenarios", reason)])
    key = run_key or uuid.uuid4().hex[:12]
    origin = perf_counter()
    context = {"metadata": {"qa_test": {"run": key}}}
    gate = asyncio.Semaphore(max(1, limits.concurrency))

    async def one(index: int, scenario: Scenario) -> dict[str, Any]:
        async with gate:
            user_id = f"qa-test:{key}:{index}"
            return await _scenario(target, scenario, user_id, context, limits)

    # Reported in the suite's order whatever finishes first.
    scenarios = await asyncio.gather(*(one(i, s) for i, s in enumerate(suite.scenarios)))
    passed = sum(1 for scenario in scenarios if scenario["passed"])
    turns = [turn for scenario in scenarios for turn in scenario["turns"]]
    return {
        "valid": True,
        "target_agent": {"id": target.id, "name": target.name},
        "passed": passed,
        "failed": len(scenarios) - passed,
        "total": len(scenarios),
        "turns": {
            "passed": sum(1 for turn in turns if turn["passed"]),
            "failed": sum(1 for turn in turns if not turn["passed"]),
        },
        # What the agent under test spent answering (test turns are no runs of its own).
        "usage": {
            "tokens": sum(int(turn["actual"].get("tokens") or 0) for turn in turns),
            "cost_usd": round(sum(float(turn["actual"].get("cost_usd") or 0) for turn in turns), 8),
        },
        "duration_ms": round((perf_counter() - origin) * 1000, 1),
        "scenarios": scenarios,
    }


def invalid_report(issues: Sequence[SuiteIssue]) -> dict[str, Any]:
    return {
        "valid": False,
        "errors": [issue.to_dict() for issue in issues],
        "passed": 0,
        "failed": 0,
        "total": 0,
        "scenarios": [],
    }


def format_report(report: Mapping[str, Any]) -> str:
    """The report as text: a summary line, then one line per broken expectation."""
    if not report.get("valid"):
        errors = report.get("errors") or []
        lines = [f"invalid suite: {len(errors)} error(s)"]
        lines += [str(SuiteIssue(e["field"], e["reason"], e["line"] or 0)) for e in errors]
        return "\n".join(lines)
    target = report["target_agent"]
    lines = [
        f"{report['passed']} of {report['total']} scenario(s) passed against "
        f"{target['name']!r} ({report['turns']['failed']} failing turn(s))"
    ]
    for scenario in report["scenarios"]:
        lines.append(f"{'PASS' if scenario['passed'] else 'FAIL'} {scenario['name']}")
        for turn in scenario["turns"]:
            for entry in turn["diff"]:
                lines.append(
                    f"  turn {turn['index'] + 1} {entry['field']}: expected "
                    f"{entry['expected']!r}, got {entry['actual']!r} ({entry['reason']})"
                )
    return "\n".join(lines)


_UUID = re.compile(r"^[0-9a-fA-F-]{32,36}$")


def looks_like_id(ref: str) -> bool:
    """Whether `ref` is an agent id (a UUID) rather than a name."""
    if not _UUID.match(ref):
        return False
    try:
        uuid.UUID(ref)
    except ValueError:
        return False
    return True


# -------------------------------------------------------------------------------- agent


class QATestAgent(StepAgent):
    """Parses the suite (the message, or ``metadata.scenarios``), runs it, reports."""

    default_planner: ClassVar[Mapping[str, Any]] = {
        "type": "fsm",
        "definition": {
            "states": {
                "parse": {"on_success": "resolve_target", "on_error": "report_invalid"},
                "resolve_target": {"on_success": "run_scenarios", "on_error": "report_invalid"},
                "run_scenarios": {"on_success": "report", "on_error": "report_invalid"},
            },
            "initial_state": "parse",
            "final_states": ["report", "report_invalid"],
        },
    }

    def __init__(
        self, config: Mapping[str, Any] | None = None, *, targets: TargetDirectory, **kwargs: Any
    ) -> None:
        super().__init__(config, **kwargs)
        self.targets = targets
        self.limits = RunLimits(
            max_turns=int(self.config.get("max_turns", 200)),
            turn_timeout_seconds=float(self.config.get("turn_timeout_seconds", 30.0)),
            case_sensitive=bool(self.config.get("case_sensitive", False)),
            keep_conversations=bool(self.config.get("keep_conversations", False)),
            concurrency=int(self.config.get("concurrency", 1)),
        )

    def _source(self, state: AgentState) -> str | Mapping[str, Any]:
        metadata = state.context.get("metadata") or {}
        given = metadata.get("scenarios") if isinstance(metadata, Mapping) else None
        return given if isinstance(given, str | Mapping) else state.message

    def _fail(self, state: AgentState, issues: Sequence[SuiteIssue]) -> StepOutcome:
        state.context["qa_test.issues"] = list(issues)
        return StepOutcome.failed("; ".join(str(issue) for issue in issues))

    async def step_parse(self, state: AgentState) -> Any:
        try:
            suite = load_suite(self._source(state))
        except SuiteError as exc:
            return self._fail(state, exc.issues)
        state.context["qa_test.suite"] = suite
        return {"scenarios": len(suite.scenarios)}

    async def step_resolve_target(self, state: AgentState) -> Any:
        suite: Suite = state.context["qa_test.suite"]
        ref = suite.agent or self.config.get("target_agent")
        field = "agent" if suite.agent else "config.target_agent"
        line = agent_line(self._source(state)) if suite.agent else 0
        if not ref:
            reason = "name the agent to test: `agent:` in the suite or target_agent in the config"
            return self._fail(state, [SuiteIssue("agent", reason)])
        try:
            target = await self.targets.open(str(ref))
        except TargetError as exc:
            return self._fail(state, [SuiteIssue(field, str(exc), line)])
        state.context["qa_test.target"] = target
        return {"target_agent": target.id}

    async def step_run_scenarios(self, state: AgentState) -> Any:
        run_key = str(state.context.get("run_id") or "")
        try:
            report = await run_suite(
                state.context["qa_test.suite"],
                state.context["qa_test.target"],
                limits=self.limits,
                run_key=run_key,
            )
        except SuiteError as exc:
            return self._fail(state, exc.issues)
        state.context["qa_test.report"] = report
        usage = report["usage"]
        return StepOutcome.ok(
            {"passed": report["passed"], "failed": report["failed"]},
            tokens=usage["tokens"],
            cost_usd=usage["cost_usd"],
        )

    async def step_report(self, state: AgentState) -> Any:
        report = state.context["qa_test.report"]
        verdict = "QA_PASSED" if report["failed"] == 0 else "QA_FAILED"
        finish(state, content=format_report(report), output=report, intent=verdict)
        return {"verdict": verdict}

    async def step_report_invalid(self, state: AgentState) -> Any:
        report = invalid_report(state.context.get("qa_test.issues") or [])
        finish(state, content=format_report(report), output=report, intent="QA_INVALID")
        return {"verdict": "QA_INVALID"}
