"""CEL planner expressions: checked at load against the state shape, guarded when evaluated."""

from __future__ import annotations

import pytest

from agentflow.kernel.planning.expressions import (
    MAX_LENGTH,
    ExpressionError,
    ExpressionEvalError,
    compile_expression,
)

STATE = {
    "message": "my card was charged twice",
    "intent": {"name": "BILLING", "confidence": 0.91},
    "response": {"content": "ok", "confidence": 0.55, "data_sources": ["kb-1"]},
    "tool": {"lookup_order": {"status": "shipped", "items": [1, 2, 3]}},
    "state": {"risk_score": 0.4, "flags": ["a", "b"], "big": list(range(1000))},
    "user": {"tier": "gold"},
}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("response.confidence < 0.7", True),
        ("intent.name == 'BILLING' && intent.confidence > 0.9", True),
        ("size(response.data_sources) == 0", False),
        ("tool.lookup_order.status == 'shipped'", True),
        ("state.flags.exists(f, f == 'b')", True),
        ("has(state.risk_score) && state.risk_score < 0.7", True),
        ("user.tier in ['gold', 'platinum']", True),
        ("message.contains('charged')", True),
        ("state['risk_score'] * 2.0 > 0.5", True),
        ("tool.lookup_order.items.all(i, i > 0)", True),
    ],
)
def test_conditions_evaluate_against_the_state(source: str, expected: bool) -> None:
    assert compile_expression(source, boolean=True).test(STATE) is expected


def test_non_boolean_expressions_return_plain_data() -> None:
    assert compile_expression("tool.lookup_order.items.map(i, i * 2)").evaluate(STATE) == [2, 4, 6]
    assert compile_expression("'order ' + tool.lookup_order.status").evaluate(STATE) == (
        "order shipped"
    )


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("__import__('os').system('id')", "unknown function `__import__()`"),
        ("message.__class__", "names starting with `_` are not accessible"),
        ("state.__class__.__mro__", "names starting with `_` are not accessible"),
        ("state['__class__'] == 1", "keys starting with `_` are not accessible"),
        ("intent.__dict__", "names starting with `_` are not accessible"),
        ("open('/etc/passwd')", "unknown function `open()`"),
        ("message.format([1])", "unknown method `format()`"),
        ("os.environ", "unknown name `os`"),
        ("risk_score < 0.7", "unknown name `risk_score`"),
        ("intent.bogus == 1", "no field `bogus`"),
        ("message.urgency == 'high'", "it has no field `urgency`"),
        ("intent.name > 0.5", "cannot compare a string with a number"),
        ("response.confidence == 'high'", "cannot compare a number with a string"),
        ("intent.confidence && true", "`&&` needs booleans"),
        ("!message", "`!` needs a boolean"),
        ("intent.name", "a condition must be a boolean"),
        ("google.protobuf.Struct{}", "not allowed"),
        ("response.confidence <", "syntax error"),
    ],
)
def test_escapes_and_type_errors_are_refused_at_load(source: str, reason: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source, boolean=True)
    assert reason in str(info.value)


def test_huge_list_literals_are_refused_at_load() -> None:
    huge = "[" + ",".join(["1"] * 300) + "].size() > 0"
    with pytest.raises(ExpressionError, match="list literal of 300 items"):
        compile_expression(huge, boolean=True)
    with pytest.raises(ExpressionError, match="map literal"):
        compile_expression("{" + ",".join(f"'k{i}': {i}" for i in range(100)) + "}.size() > 0")


def test_deep_nesting_and_long_sources_are_refused_at_load() -> None:
    with pytest.raises(ExpressionError, match="brackets nest deeper"):
        compile_expression("(" * 200 + "true" + ")" * 200)
    with pytest.raises(ExpressionError, match="nests too deeply"):
        compile_expression("!" * 900 + "true")
    with pytest.raises(ExpressionError, match="characters"):
        compile_expression("true && " * (MAX_LENGTH // 8 + 1) + "true")
    nested = "state.flags.exists(a, state.flags.exists(b, state.flags.exists(c, true)))"
    with pytest.raises(ExpressionError, match="macros nest at most"):
        compile_expression(nested)


def test_evaluation_has_a_step_cap() -> None:
    quadratic = compile_expression("state.big.exists(x, state.big.exists(y, x + y < 0))")
    with pytest.raises(ExpressionEvalError, match=r"steps|timed out"):
        quadratic.test(STATE)


def test_python_objects_in_the_state_are_only_strings_to_an_expression() -> None:
    class Secret:
        password = "hunter2"

        def __str__(self) -> str:
            return "<secret>"

    state = {**STATE, "state": {"obj": Secret()}}
    assert compile_expression("state.obj").evaluate(state) == "<secret>"
    with pytest.raises(ExpressionEvalError):
        compile_expression("state.obj.password == 'hunter2'").test(state)


def test_missing_keys_fail_at_evaluation_not_silently() -> None:
    with pytest.raises(ExpressionEvalError, match="missing"):
        compile_expression("state.missing > 1").test(STATE)
    assert compile_expression("has(state.missing)").test(STATE) is False


MIXED = {
    "message": "hello",
    "intent": {"name": "X", "confidence": 0.9},
    "response": {"content": "a", "confidence": 0.5, "data_sources": []},
    "tool": {"t": {"ok": True, "n": 1}},
    "state": {"a": 1, "b": 1.0, "s": "x", "l": [1, 2], "m": {"k": 1}, "t": True, "z": None},
    "user": {},
}
SUBSET = [
    "response.confidence < 0.7",
    "state.a == state.b",
    "state.a == 1",
    "state.b == 1",
    "state.s == 1",
    "state.t == true",
    "state.l == [1, 2]",
    "state.m == state.m",
    "state.x > 1 || true",
    "true || state.x > 1",
    "false && state.x",
    "state.x && false",
    "state.x && true",
    "state.a < 'x'",
    "state.a < 1.5",
    "'x' in state.l",
    "1 in state.l",
    "'k' in state.m",
    "size(state.l) == 2",
    "state.l.size() > 1",
    "has(state.a)",
    "has(state.zz)",
    "state['a'] == 1",
    "state.l[1] == 2",
    "state.l[5] == 1",
    "state.a > 0 ? 'y' : 'n'",
    "!state.t",
    "intent.name != 'Y'",
    "tool.t.n >= 1",
    "state.z == null",
    "state.s == null",
    "null == state.zz",
    "state.s.x == 1",
    "size(message) == 5",
]


@pytest.mark.parametrize("source", SUBSET)
def test_the_native_fast_path_agrees_with_celpy(source: str) -> None:
    compiled = compile_expression(source)
    assert compiled._fast is not None

    def outcome(evaluate):  # type: ignore[no-untyped-def]
        try:
            return ("ok", evaluate(MIXED))
        except ExpressionEvalError:
            return ("error", None)

    assert outcome(compiled.evaluate) == outcome(compiled.evaluate_with_celpy)


def test_outside_the_subset_celpy_evaluates() -> None:
    compiled = compile_expression("state.l.exists(x, x > 1) && message.startsWith('he')")
    assert compiled._fast is None
    assert compiled.test(MIXED) is True


def test_int_and_double_do_not_mix() -> None:
    with pytest.raises(ExpressionError, match=r"write 1\.0, not 1"):
        compile_expression("response.confidence < 1")


def test_regular_expressions_are_not_offered() -> None:
    with pytest.raises(ExpressionError, match="unknown method"):
        compile_expression("message.matches('(a+)+$')")
    with pytest.raises(ExpressionError, match="unknown function"):
        compile_expression("matches(message, '(a+)+$')")
