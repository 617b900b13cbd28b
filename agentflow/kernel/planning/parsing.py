"""Helpers the FSM and behavior-tree loaders share: actions, timeouts, expressions, errors."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentflow.kernel.planning.expressions import (
    CompiledExpression,
    ExpressionError,
    compile_expression,
)
from agentflow.kernel.planning.model import Action
from agentflow.kernel.planning.source import MDict, PlanError, Pos, pos_of

__all__ = ["Errors", "Known", "parse_action", "parse_timeout"]


@dataclass(frozen=True, slots=True)
class Known:
    """The actions a plan may name; ``None`` means "not checked"."""

    steps: Collection[str] | None = None
    tools: Collection[str] | None = None
    agents: Collection[str] | None = None


@dataclass(slots=True)
class Errors:
    items: list[PlanError] = field(default_factory=list)

    def add(self, reason: str, pos: Pos | None = None, path: str = "") -> None:
        self.items.append(PlanError(reason, pos or Pos(), path))

    def __bool__(self) -> bool:
        return bool(self.items)

    def expression(
        self,
        source: Any,
        where: str,
        pos: Pos,
        path: str,
        *,
        boolean: bool = True,
    ) -> CompiledExpression | None:
        try:
            return compile_expression(source, boolean=boolean)
        except ExpressionError as exc:
            self.add(f"{where} `{_clip(exc.source)}`: {exc.reason}", pos, path)
            return None


def _clip(text: str, limit: int = 60) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_timeout(value: Any, errors: Errors, pos: Pos, path: str) -> float | None:
    """Seconds from ``5``, ``2.5``, ``"500ms"``, ``"2s"``, ``"10m"``, ``"1h"``."""
    if value is None:
        return None
    if isinstance(value, bool):
        errors.add(f"timeout `{value}` is not a duration", pos, path)
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            errors.add(f"timeout `{value}` is not a duration like 500ms, 2s or 10m", pos, path)
            return None
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        errors.add(f"timeout `{value}` must be positive", pos, path)
        return None
    return seconds


def _check_known(kind: str, name: str, known: Collection[str] | None) -> str | None:
    if known is None or name in known:
        return None
    listed = ", ".join(sorted(known)) or "none"
    return f"unknown {kind} `{name}` (known: {listed})"


def parse_action(
    raw: Any,
    *,
    default_step: str | None,
    errors: Errors,
    known: Known,
    pos: Pos,
    path: str,
    owner: str,
) -> Action:
    """An FSM state's ``action`` value or a BT action node's keys, as an `Action`.

    Forms: missing → the built-in step ``default_step``; ``"name"`` → that built-in step;
    ``null``/``"none"`` (explicit) → no action; ``{tool: id, arguments: {arg: expr}}``;
    ``{agent: blueprint}``; ``{step: name}``; ``{human: "<why>"}`` (pause for a person).
    """
    if raw is _MISSING:
        if default_step is None:
            errors.add(f"{owner}: no action (use step, tool or agent)", pos, path)
            return Action("none")
        raw = default_step
    if raw is None or raw == "none":
        return Action("none")
    if isinstance(raw, str):
        problem = _check_known("step", raw, known.steps)
        if problem:
            errors.add(f"{owner}: {problem}", pos, path)
        return Action("step", raw)
    if not isinstance(raw, Mapping):
        errors.add(f"{owner}: an action is a step name or a mapping with tool/agent", pos, path)
        return Action("none")
    if set(raw) == {"human"}:
        return Action("human", str(raw["human"] or "waiting for a human"))
    kinds = [k for k in ("tool", "agent", "step") if k in raw]
    if len(kinds) != 1:
        errors.add(f"{owner}: an action names exactly one of tool, agent, step or human", pos, path)
        return Action("none")
    kind = kinds[0]
    name = raw[kind]
    kind_pos = raw.value_at(kind) if isinstance(raw, MDict) else pos
    if not isinstance(name, str) or not name:
        errors.add(f"{owner}: `{kind}` must be a name", kind_pos, path)
        return Action("none")
    extra = set(raw) - {kind, "arguments", "description"}
    if extra:
        errors.add(f"{owner}: unknown action key(s) {', '.join(sorted(extra))}", pos, path)
    known_set = {"tool": known.tools, "agent": known.agents, "step": known.steps}[kind]
    problem = _check_known(kind, name, known_set)
    if problem:
        errors.add(f"{owner}: {problem}", kind_pos, path)
    if kind != "tool":
        if "arguments" in raw:
            errors.add(f"{owner}: only tool actions take arguments", pos_of(raw, "arguments"), path)
        return Action(kind, name)  # type: ignore[arg-type]
    arguments: list[tuple[str, CompiledExpression]] = []
    raw_args = raw.get("arguments") or {}
    if not isinstance(raw_args, Mapping):
        errors.add(f"{owner}: tool arguments must be a mapping of CEL expressions", pos, path)
        raw_args = {}
    for arg, source in raw_args.items():
        arg_pos = raw_args.value_at(arg) if isinstance(raw_args, MDict) else pos
        if not isinstance(source, str | int | float | bool) or source is None:
            errors.add(
                f"{owner}: argument `{arg}` must be a CEL expression (a string) or a literal",
                arg_pos,
                f"{path}.arguments.{arg}",
            )
            continue
        compiled = errors.expression(
            source if isinstance(source, str) else _literal(source),
            f"{owner}: argument `{arg}`",
            arg_pos,
            f"{path}.arguments.{arg}",
            boolean=False,
        )
        if compiled is not None:
            arguments.append((str(arg), compiled))
    return Action("tool", name, tuple(arguments))


def _literal(value: Any) -> str:
    """A YAML number or boolean given as a tool argument, as a CEL literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()
MISSING = _MISSING
