"""Planner conditions and tool arguments in CEL, checked at load time (SPEC 4.8).

An expression is parsed by `cel-python` (``celpy``) and then *checked* against the declared
state shape before a plan may run:

=============  =====================================================================
``message``    the user's message (string)
``intent``     ``{name: string, confidence: double}``
``response``   ``{content: string, confidence: double, data_sources: list}``
``tool``       map of tool outputs by tool name (``tool.lookup_order.status``)
``state``      map of everything the plan's steps wrote (``state.risk_score``)
``user``       map of what the platform knows about the user (``user.tier``)
=============  =====================================================================

The checker refuses, with a reason, anything a condition has no business doing: names other
than these six (and macro variables), fields the shape does not declare, members whose name
starts with an underscore (``message.__class__``), functions and methods outside a short
allow-list (``__import__('os')`` is an unknown function), protobuf message construction,
comparisons of a string with a number and other type errors the shape makes visible.

Resource guards: the source is capped at `MAX_LENGTH` characters and `MAX_NESTING` levels of
brackets, the parse tree at `MAX_TREE_DEPTH` levels, list and map literals at
`MAX_LITERAL_ITEMS` items, macros (``exists``, ``map``...) at `MAX_MACRO_NESTING` levels.
Evaluation counts its steps (`MAX_EVAL_STEPS`) and stops after `EVAL_TIMEOUT_S` seconds, and
it only ever sees plain data: the state is converted to CEL maps, lists and scalars first, so
no Python object, attribute or method is reachable from an expression.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import celpy
import celpy.celtypes as ct
import lark
from celpy.evaluation import Activation, CELEvalError, Evaluator

from agentflow.kernel.planning.checker import (
    MAX_LITERAL_ITEMS,
    STATE_NAMES,
    ExpressionError,
    check,
    describe_kind,
    short_source,
)
from agentflow.kernel.planning.fastpath import compile_fast

__all__ = [
    "EVAL_TIMEOUT_S",
    "MAX_EVAL_STEPS",
    "MAX_LENGTH",
    "MAX_LITERAL_ITEMS",
    "MAX_NESTING",
    "STATE_NAMES",
    "CompiledExpression",
    "ExpressionError",
    "ExpressionEvalError",
    "compile_expression",
    "to_cel",
]

MAX_LENGTH = 1000
MAX_NESTING = 16
MAX_TREE_DEPTH = 300
MAX_EVAL_STEPS = 20_000
EVAL_TIMEOUT_S = 0.05
# Values handed to an expression: deeper or bigger state is refused, not walked.
MAX_VALUE_DEPTH = 32
MAX_VALUE_ITEMS = 100_000


class ExpressionEvalError(RuntimeError):
    """An expression that failed while evaluating (missing key, step cap, timeout...)."""


# ------------------------------------------------------------------------- structure


def _nesting_depth(source: str) -> int:
    """Bracket depth outside string literals (a cheap pre-parse guard)."""
    depth = deepest = 0
    quote: str | None = None
    escaped = False
    for char in source:
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
            continue
        if char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest


def _tree_depth(tree: lark.Tree) -> int:
    deepest = 0
    stack: list[tuple[lark.Tree, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_TREE_DEPTH:
            return depth
        stack.extend((c, depth + 1) for c in node.children if isinstance(c, lark.Tree))
    return deepest


_ENVIRONMENT: celpy.Environment | None = None


def _environment() -> celpy.Environment:
    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        # celpy raises the interpreter's recursion limit as a side effect; our depth caps make
        # that unnecessary, so the process keeps its own limit.
        limit = sys.getrecursionlimit()
        try:
            _ENVIRONMENT = celpy.Environment(runner_class=_GuardedRunner)
        finally:
            sys.setrecursionlimit(limit)
    return _ENVIRONMENT


# ------------------------------------------------------------------------ evaluation


class _Budget:
    __slots__ = ("deadline", "steps")

    def __init__(self, timeout_s: float) -> None:
        self.steps = 0
        self.deadline = time.perf_counter() + timeout_s

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_EVAL_STEPS:
            raise ExpressionEvalError(f"evaluation passed {MAX_EVAL_STEPS} steps")
        if self.steps % 256 == 0 and time.perf_counter() > self.deadline:
            raise ExpressionEvalError("evaluation timed out")


class _GuardedEvaluator(Evaluator):
    def __init__(self, ast: lark.Tree, activation: Activation, budget: _Budget) -> None:
        super().__init__(ast, activation)
        self.budget = budget

    def sub_evaluator(self, ast: lark.Tree) -> Evaluator:
        return _GuardedEvaluator(ast, self.activation, self.budget)

    def _visit_tree(self, tree: lark.Tree) -> Any:
        self.budget.tick()
        return super()._visit_tree(tree)


class _GuardedRunner(celpy.InterpretedRunner):
    timeout_s = EVAL_TIMEOUT_S

    def evaluate(self, context: Any) -> ct.Value:
        evaluator = _GuardedEvaluator(self.ast, self.new_activation(), _Budget(self.timeout_s))
        return evaluator.evaluate(context)


def to_cel(value: Any, _depth: int = 0, _count: list[int] | None = None) -> Any:
    """Plain data only: mappings, sequences and scalars; anything else becomes its `str`."""
    count = _count if _count is not None else [0]
    count[0] += 1
    if count[0] > MAX_VALUE_ITEMS or _depth > MAX_VALUE_DEPTH:
        raise ExpressionEvalError("the state is too large or too deep to evaluate against")
    if value is None:
        return None
    if isinstance(value, bool):
        return ct.BoolType(value)
    if isinstance(value, int):
        return ct.IntType(value)
    if isinstance(value, float):
        return ct.DoubleType(value if math.isfinite(value) else 0.0)
    if isinstance(value, str):
        return ct.StringType(value)
    if isinstance(value, Mapping):
        return ct.MapType(
            {ct.StringType(str(k)): to_cel(v, _depth + 1, count) for k, v in value.items()}
        )
    if isinstance(value, list | tuple):
        return ct.ListType([to_cel(v, _depth + 1, count) for v in value])
    return ct.StringType(str(value))


def from_cel(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, ct.BoolType):
        return bool(value)
    if isinstance(value, ct.IntType | ct.UintType):
        return int(value)
    if isinstance(value, ct.DoubleType):
        return float(value)
    if isinstance(value, ct.StringType):
        return str(value)
    if isinstance(value, ct.MapType):
        return {str(k): from_cel(v) for k, v in value.items()}
    if isinstance(value, ct.ListType):
        return [from_cel(v) for v in value]
    return str(value)


@dataclass(frozen=True, slots=True)
class CompiledExpression:
    """A checked expression, ready to evaluate any number of times."""

    source: str
    result_kind: str
    _program: Any
    # The native evaluator of `fastpath` when the expression stays in its subset.
    _fast: Any = None

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """Evaluate against the six state sections; returns plain Python data."""
        if self._fast is not None:
            try:
                return self._fast(variables)
            except ValueError as exc:
                raise ExpressionEvalError(f"`{short_source(self.source)}`: {exc}") from None
        return self.evaluate_with_celpy(variables)

    def evaluate_with_celpy(self, variables: Mapping[str, Any]) -> Any:
        """The reference evaluation (always celpy), e.g. to check the native one against."""
        context = {name: to_cel(variables.get(name)) for name in STATE_NAMES}
        try:
            value = self._program.evaluate(context)
        except ExpressionEvalError:
            raise
        except (CELEvalError, TypeError, ValueError, KeyError, ZeroDivisionError) as exc:
            raise ExpressionEvalError(f"`{short_source(self.source)}`: {exc}") from exc
        if isinstance(value, CELEvalError):
            raise ExpressionEvalError(f"`{short_source(self.source)}`: {value}")
        return from_cel(value)

    def test(self, variables: Mapping[str, Any]) -> bool:
        """Evaluate a condition; anything but a boolean `true` is false-y only if boolean."""
        value = self.evaluate(variables)
        if not isinstance(value, bool):
            raise ExpressionEvalError(
                f"`{short_source(self.source)}` gave {value!r}, not a boolean"
            )
        return value


def compile_expression(source: Any, *, boolean: bool = False) -> CompiledExpression:
    """Parse and check ``source``; raise `ExpressionError` naming what is wrong.

    ``boolean`` requires the expression to be a condition (its type boolean or dynamic).
    """
    if isinstance(source, bool):  # YAML `true`/`false` as a condition
        source = "true" if source else "false"
    if not isinstance(source, str):
        raise ExpressionError(repr(source), "an expression must be a string")
    text = source.strip()
    if not text:
        raise ExpressionError(source, "the expression is empty")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(source, f"{len(text)} characters (at most {MAX_LENGTH})")
    if _nesting_depth(text) > MAX_NESTING:
        raise ExpressionError(source, f"brackets nest deeper than {MAX_NESTING} levels")
    env = _environment()
    try:
        tree = env.compile(text)
    except Exception as exc:  # celpy raises CELParseError and lark errors alike
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExpressionError(source, f"syntax error: {message}") from None
    if _tree_depth(tree) > MAX_TREE_DEPTH:
        raise ExpressionError(source, "the expression nests too deeply")
    kind = check(text, tree)
    if boolean and kind not in ("bool", "dyn"):
        raise ExpressionError(
            source, f"a condition must be a boolean, this is {describe_kind(kind)}"
        )
    return CompiledExpression(text, kind, env.program(tree), compile_fast(tree))
