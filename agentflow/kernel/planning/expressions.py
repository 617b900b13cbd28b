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
from typing import Any, cast

import celpy
import celpy.celtypes as ct
import lark
from celpy.evaluation import Activation, CELEvalError, Evaluator

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
MAX_LITERAL_ITEMS = 64
MAX_MACRO_NESTING = 2
MAX_EVAL_STEPS = 20_000
EVAL_TIMEOUT_S = 0.05
# Values handed to an expression: deeper or bigger state is refused, not walked.
MAX_VALUE_DEPTH = 32
MAX_VALUE_ITEMS = 100_000


class ExpressionError(ValueError):
    """An expression refused at load time; ``reason`` is one sentence without the source."""

    def __init__(self, source: str, reason: str, column: int | None = None) -> None:
        super().__init__(f"expression `{_short(source)}`: {reason}")
        self.source = source
        self.reason = reason
        self.column = column


class ExpressionEvalError(RuntimeError):
    """An expression that failed while evaluating (missing key, step cap, timeout...)."""


def _short(source: str, limit: int = 80) -> str:
    flat = " ".join(source.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# ------------------------------------------------------------------------------ types


@dataclass(frozen=True, slots=True)
class _T:
    kind: str  # dyn bool int uint double string bytes null list map obj
    name: str = ""
    fields: tuple[tuple[str, _T], ...] = ()

    def field(self, key: str) -> _T | None:
        for name, kind in self.fields:
            if name == key:
                return kind
        return None

    def describe(self) -> str:
        if self.kind == "obj":
            return f"`{self.name}` (fields: {', '.join(n for n, _ in self.fields)})"
        return {"double": "a number", "int": "an integer", "uint": "an integer"}.get(
            self.kind, f"a {self.kind}"
        )


DYN, BOOL, INT, UINT, DOUBLE = _T("dyn"), _T("bool"), _T("int"), _T("uint"), _T("double")
STRING, BYTES, NULL, LIST, MAP = _T("string"), _T("bytes"), _T("null"), _T("list"), _T("map")
_NUMERIC = {"int", "uint", "double"}

STATE_SHAPE: Mapping[str, _T] = {
    "message": STRING,
    "intent": _T("obj", "intent", (("name", STRING), ("confidence", DOUBLE))),
    "response": _T(
        "obj",
        "response",
        (("content", STRING), ("confidence", DOUBLE), ("data_sources", LIST)),
    ),
    "tool": MAP,
    "state": MAP,
    "user": MAP,
}
STATE_NAMES = tuple(STATE_SHAPE)

_MACROS = {"exists", "all", "exists_one", "map", "filter"}
# method -> (receiver kinds, result type)
_METHODS: Mapping[str, tuple[frozenset[str], _T]] = {
    "size": (frozenset({"string", "list", "map", "bytes"}), INT),
    "contains": (frozenset({"string"}), BOOL),
    "startsWith": (frozenset({"string"}), BOOL),
    "endsWith": (frozenset({"string"}), BOOL),
    "exists": (frozenset({"list", "map"}), BOOL),
    "all": (frozenset({"list", "map"}), BOOL),
    "exists_one": (frozenset({"list", "map"}), BOOL),
    "map": (frozenset({"list", "map"}), LIST),
    "filter": (frozenset({"list", "map"}), LIST),
}
_FUNCTIONS: Mapping[str, _T] = {
    "size": INT,
    "int": INT,
    "uint": UINT,
    "double": DOUBLE,
    "string": STRING,
    "bool": BOOL,
    "has": BOOL,
}
# `matches()` (regular expressions) is left out on purpose: one call with a pathological
# pattern backtracks for minutes inside `re`, where no step cap or timeout can stop it.


def _compatible(a: _T, b: _T) -> bool:
    if "dyn" in (a.kind, b.kind) or "null" in (a.kind, b.kind):
        return True
    if a.kind in _NUMERIC and b.kind in _NUMERIC:
        # CEL has no implicit int/double conversion: `response.confidence < 1` is an error.
        return (a.kind == "double") == (b.kind == "double")
    if {a.kind, b.kind} <= {"map", "obj"}:
        return True
    return a.kind == b.kind


class _Checker:
    """Walks the parse tree once, inferring just enough types to catch obvious mistakes."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.scopes: list[set[str]] = []

    def fail(self, reason: str, node: lark.Tree | lark.Token | None = None) -> ExpressionError:
        column = None
        if isinstance(node, lark.Token):
            column = node.column
        elif isinstance(node, lark.Tree) and getattr(node.meta, "column", None) is not None:
            column = node.meta.column
        return ExpressionError(self.source, reason, column)

    def check(self, tree: lark.Tree) -> _T:
        method = getattr(self, "_" + str(tree.data), None)
        if method is None:
            raise self.fail(f"`{tree.data}` is not allowed in a planner expression", tree)
        return cast(_T, method(tree))

    def _trees(self, tree: lark.Tree) -> list[lark.Tree]:
        return [c for c in tree.children if isinstance(c, lark.Tree)]

    def _single(self, tree: lark.Tree) -> _T:
        return self.check(self._trees(tree)[0])

    _member = _primary = _single

    def _paren_expr(self, tree: lark.Tree) -> _T:
        return self._single(tree)

    def _expr(self, tree: lark.Tree) -> _T:
        parts = [c for c in tree.children if c is not None]
        if len(parts) == 1:
            return self.check(cast(lark.Tree, parts[0]))
        cond, then, other = (self.check(cast(lark.Tree, p)) for p in parts)
        if cond.kind not in ("bool", "dyn"):
            raise self.fail(f"the condition of `? :` must be a boolean, not {cond.describe()}")
        return then if then == other else DYN

    def _logic(self, tree: lark.Tree, op: str) -> _T:
        parts = [self.check(c) for c in self._trees(tree)]
        if len(parts) == 1:
            return parts[0]
        for part in parts:
            if part.kind not in ("bool", "dyn"):
                raise self.fail(f"`{op}` needs booleans, not {part.describe()}", tree)
        return BOOL

    def _conditionalor(self, tree: lark.Tree) -> _T:
        return self._logic(tree, "||")

    def _conditionaland(self, tree: lark.Tree) -> _T:
        return self._logic(tree, "&&")

    def _binary(self, tree: lark.Tree) -> tuple[str, _T, _T] | _T:
        trees = self._trees(tree)
        if len(trees) == 1:
            return self.check(trees[0])
        op_tree, right_tree = trees
        left = self.check(self._trees(op_tree)[0])
        return str(op_tree.data), left, self.check(right_tree)

    def _relation(self, tree: lark.Tree) -> _T:
        found = self._binary(tree)
        if isinstance(found, _T):
            return found
        op, left, right = found
        symbol = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
        name = op.removeprefix("relation_")
        if name == "in":
            if right.kind not in ("list", "map", "dyn"):
                raise self.fail(f"`in` needs a list or a map on its right, not {right.describe()}")
            return BOOL
        if not _compatible(left, right):
            hint = ""
            if left.kind in _NUMERIC and right.kind in _NUMERIC:
                hint = " (CEL does not mix int and double: write 1.0, not 1)"
            raise self.fail(
                f"cannot compare {left.describe()} with {right.describe()} "
                f"using `{symbol[name]}`{hint}",
                tree,
            )
        if name in ("lt", "le", "gt", "ge"):
            for side in (left, right):
                if side.kind in ("bool", "null", "map", "obj", "list"):
                    raise self.fail(f"`{symbol[name]}` cannot order {side.describe()}", tree)
        return BOOL

    def _arith(self, tree: lark.Tree, allowed: dict[str, set[str]]) -> _T:
        found = self._binary(tree)
        if isinstance(found, _T):
            return found
        op, left, right = found
        kinds = allowed[op]
        for side in (left, right):
            if side.kind != "dyn" and side.kind not in kinds:
                raise self.fail(f"`{op.split('_')[1]}` cannot apply to {side.describe()}", tree)
        if not _compatible(left, right):
            raise self.fail(f"cannot combine {left.describe()} with {right.describe()}", tree)
        known = left if left.kind != "dyn" else right
        if known.kind in _NUMERIC and (left.kind == "double" or right.kind == "double"):
            return DOUBLE
        return known

    def _addition(self, tree: lark.Tree) -> _T:
        numeric = _NUMERIC | {"string", "list"}
        return self._arith(tree, {"addition_add": numeric, "addition_sub": set(_NUMERIC)})

    def _multiplication(self, tree: lark.Tree) -> _T:
        kinds = set(_NUMERIC)
        ops = ("multiplication_mul", "multiplication_div", "multiplication_mod")
        return self._arith(tree, dict.fromkeys(ops, kinds))

    def _unary(self, tree: lark.Tree) -> _T:
        trees = self._trees(tree)
        if len(trees) == 1:
            return self.check(trees[0])
        op, operand_tree = trees
        operand = self.check(operand_tree)
        if op.data == "unary_not" and operand.kind not in ("bool", "dyn"):
            raise self.fail(f"`!` needs a boolean, not {operand.describe()}", tree)
        if op.data == "unary_neg" and operand.kind not in _NUMERIC | {"dyn"}:
            raise self.fail(f"`-` needs a number, not {operand.describe()}", tree)
        return operand

    def _member_dot(self, tree: lark.Tree) -> _T:
        target_tree, name = tree.children
        target = self.check(cast(lark.Tree, target_tree))
        return self._field(target, str(name), cast(lark.Token, name), _render(target_tree))

    def _field(self, target: _T, name: str, token: lark.Token | None, where: str) -> _T:
        if name.startswith("_"):
            raise self.fail(f"`{where}.{name}`: names starting with `_` are not accessible", token)
        if target.kind == "obj":
            found = target.field(name)
            if found is None:
                raise self.fail(f"`{where}` is {target.describe()}: no field `{name}`", token)
            return found
        if target.kind in ("map", "dyn"):
            return DYN
        raise self.fail(f"`{where}` is {target.describe()}: it has no field `{name}`", token)

    def _member_index(self, tree: lark.Tree) -> _T:
        target_tree, index_tree = self._trees(tree)
        target = self.check(target_tree)
        index = self.check(index_tree)
        if target.kind not in ("list", "map", "dyn", "obj"):
            raise self.fail(f"`{_render(target_tree)}` is {target.describe()}: cannot index it")
        if target.kind == "list" and index.kind not in ("int", "uint", "dyn"):
            raise self.fail(f"a list index must be an integer, not {index.describe()}")
        if index_tree is not None and _string_literal(index_tree).startswith("_"):
            raise self.fail("keys starting with `_` are not accessible", tree)
        if target.kind == "obj":
            key = _string_literal(index_tree)
            if key:
                return self._field(target, key, None, _render(target_tree))
        return DYN

    def _member_dot_arg(self, tree: lark.Tree) -> _T:
        target_tree, name_token = tree.children[0], tree.children[1]
        args = _args(tree.children[2] if len(tree.children) > 2 else None)
        name = str(name_token)
        target = self.check(cast(lark.Tree, target_tree))
        if name not in _METHODS:
            raise self.fail(f"unknown method `{name}()`", cast(lark.Token, name_token))
        kinds, result = _METHODS[name]
        if target.kind not in kinds | {"dyn"}:
            raise self.fail(f"`{name}()` cannot apply to {target.describe()}", name_token)
        if name in _MACROS:
            return self._macro(name, args, result)
        for arg in args:
            self.check(arg)
        return result

    def _macro(self, name: str, args: list[lark.Tree], result: _T) -> _T:
        if len(args) not in (2, 3):
            raise self.fail(f"`{name}()` takes a variable and an expression")
        var = _ident_name(args[0])
        if var is None:
            raise self.fail(f"the first argument of `{name}()` must be a variable name")
        if var in STATE_SHAPE or var.startswith("_"):
            raise self.fail(f"`{var}` cannot be used as a macro variable")
        if len(self.scopes) >= MAX_MACRO_NESTING:
            raise self.fail(f"macros nest at most {MAX_MACRO_NESTING} levels deep")
        self.scopes.append({var})
        try:
            for arg in args[1:]:
                self.check(arg)
        finally:
            self.scopes.pop()
        return result

    def _ident(self, tree: lark.Tree) -> _T:
        name = str(tree.children[0])
        if any(name in scope for scope in self.scopes):
            return DYN
        if name in STATE_SHAPE:
            return STATE_SHAPE[name]
        raise self.fail(
            f"unknown name `{name}` (an expression sees only {', '.join(STATE_NAMES)})",
            cast(lark.Token, tree.children[0]),
        )

    def _ident_arg(self, tree: lark.Tree) -> _T:
        name = str(tree.children[0])
        args = _args(tree.children[1] if len(tree.children) > 1 else None)
        if name not in _FUNCTIONS:
            raise self.fail(f"unknown function `{name}()`", cast(lark.Token, tree.children[0]))
        if name == "has":
            if len(args) != 1 or _inner(args[0]).data != "member_dot":
                raise self.fail("`has()` takes one field selection, e.g. has(state.score)")
            inner = _inner(args[0])
            target = self.check(cast(lark.Tree, inner.children[0]))
            if target.kind == "obj":
                self._field(target, str(inner.children[1]), None, _render(inner.children[0]))
            return BOOL
        for arg in args:
            self.check(arg)
        return _FUNCTIONS[name]

    def _list_lit(self, tree: lark.Tree) -> _T:
        items = _args(tree.children[0] if tree.children else None)
        if len(items) > MAX_LITERAL_ITEMS:
            raise self.fail(f"a list literal of {len(items)} items (at most {MAX_LITERAL_ITEMS})")
        for item in items:
            self.check(item)
        return LIST

    def _map_lit(self, tree: lark.Tree) -> _T:
        inits = tree.children[0] if tree.children else None
        items = [c for c in inits.children if isinstance(c, lark.Tree)] if inits else []
        if len(items) > 2 * MAX_LITERAL_ITEMS:
            count = len(items) // 2
            raise self.fail(f"a map literal of {count} items (at most {MAX_LITERAL_ITEMS})")
        for item in items:
            self.check(item)
        return MAP

    def _literal(self, tree: lark.Tree) -> _T:
        token = cast(lark.Token, tree.children[0])
        return {
            "INT_LIT": INT,
            "UINT_LIT": UINT,
            "FLOAT_LIT": DOUBLE,
            "STRING_LIT": STRING,
            "MLSTRING_LIT": STRING,
            "BYTES_LIT": BYTES,
            "BOOL_LIT": BOOL,
            "NULL_LIT": NULL,
        }.get(token.type, DYN)


def _args(exprlist: Any) -> list[lark.Tree]:
    if not isinstance(exprlist, lark.Tree):
        return []
    return [c for c in exprlist.children if isinstance(c, lark.Tree)]


_WRAPPERS = {
    "expr",
    "conditionalor",
    "conditionaland",
    "relation",
    "addition",
    "multiplication",
    "unary",
    "member",
    "primary",
}


def _inner(tree: lark.Tree) -> lark.Tree:
    """Strip the one-child wrapper levels the grammar puts around every expression."""
    while tree.data in _WRAPPERS:
        kids = [c for c in tree.children if isinstance(c, lark.Tree)]
        if len(kids) != 1 or len([c for c in tree.children if c is not None]) != 1:
            break
        tree = kids[0]
    return tree


def _ident_name(tree: lark.Tree) -> str | None:
    inner = _inner(tree)
    return str(inner.children[0]) if inner.data == "ident" else None


def _string_literal(tree: lark.Tree) -> str:
    inner = _inner(tree)
    if inner.data == "literal":
        token = cast(lark.Token, inner.children[0])
        if token.type == "STRING_LIT":
            return str(token)[1:-1]
    return ""


def _render(node: Any) -> str:
    """A short source-like rendering of a member chain for messages (`intent`, `tool.x`)."""
    if isinstance(node, lark.Token):
        return str(node)
    if not isinstance(node, lark.Tree):
        return "?"
    inner = _inner(node)
    if inner.data == "ident":
        return str(inner.children[0])
    if inner.data == "member_dot":
        return f"{_render(inner.children[0])}.{inner.children[1]}"
    return "(...)"


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
                raise ExpressionEvalError(f"`{_short(self.source)}`: {exc}") from None
        return self.evaluate_with_celpy(variables)

    def evaluate_with_celpy(self, variables: Mapping[str, Any]) -> Any:
        """The reference evaluation (always celpy), e.g. to check the native one against."""
        context = {name: to_cel(variables.get(name)) for name in STATE_NAMES}
        try:
            value = self._program.evaluate(context)
        except ExpressionEvalError:
            raise
        except (CELEvalError, TypeError, ValueError, KeyError, ZeroDivisionError) as exc:
            raise ExpressionEvalError(f"`{_short(self.source)}`: {exc}") from exc
        if isinstance(value, CELEvalError):
            raise ExpressionEvalError(f"`{_short(self.source)}`: {value}")
        return from_cel(value)

    def test(self, variables: Mapping[str, Any]) -> bool:
        """Evaluate a condition; anything but a boolean `true` is false-y only if boolean."""
        value = self.evaluate(variables)
        if not isinstance(value, bool):
            raise ExpressionEvalError(f"`{_short(self.source)}` gave {value!r}, not a boolean")
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
    kind = _Checker(text).check(tree)
    if boolean and kind.kind not in ("bool", "dyn"):
        raise ExpressionError(source, f"a condition must be a boolean, this is {kind.describe()}")
    from agentflow.kernel.planning.fastpath import compile_fast

    return CompiledExpression(text, kind.kind, env.program(tree), compile_fast(tree))
