"""The load-time checker of planner expressions: names, fields, types and allowed calls.

It walks celpy's parse tree once, inferring just enough types (against `STATE_SHAPE`) to
refuse unknown names, undeclared fields, members starting with `_`, functions and methods
outside the allow-list, and comparisons or arithmetic across incompatible types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import lark

__all__ = [
    "MAX_LITERAL_ITEMS",
    "MAX_MACRO_NESTING",
    "STATE_NAMES",
    "STATE_SHAPE",
    "ExpressionError",
    "check",
    "describe_kind",
    "short_source",
]

MAX_LITERAL_ITEMS = 64
MAX_MACRO_NESTING = 2


class ExpressionError(ValueError):
    """An expression refused at load time; ``reason`` is one sentence without the source."""

    def __init__(self, source: str, reason: str, column: int | None = None) -> None:
        super().__init__(f"expression `{short_source(source)}`: {reason}")
        self.source = source
        self.reason = reason
        self.column = column


def short_source(source: str, limit: int = 80) -> str:
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


def check(source: str, tree: lark.Tree) -> str:
    """The inferred kind of a parsed expression (``bool``, ``dyn``...); raise `ExpressionError`."""
    return _Checker(source).check(tree).kind


def describe_kind(kind: str) -> str:
    return _T(kind).describe()
