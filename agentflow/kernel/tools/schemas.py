"""JSON Schema for tool arguments and outputs (jsonschema, Draft 2020-12).

Schemas are checked when a tool is registered, so a broken schema is a load-time error and
not a call that every argument fails. Validation errors name the field path
(``$.order.id``) so a planner, an operator or a 422 can say what was wrong.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

import jsonschema
import pydantic
from jsonschema import Draft202012Validator

__all__ = ["check_schema", "compile_schema", "schema_error", "schemas_from_signature"]

_MAX_ERRORS = 3


def check_schema(schema: Mapping[str, Any], what: str) -> None:
    """Raise ValueError when ``schema`` is not a valid JSON Schema."""
    if not isinstance(schema, Mapping):
        raise ValueError(f"{what}: a JSON Schema must be an object")
    try:
        Draft202012Validator.check_schema(dict(schema))
    except jsonschema.SchemaError as exc:
        path = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        raise ValueError(f"{what} is not a valid JSON Schema at {path}: {exc.message}") from None


def compile_schema(schema: Mapping[str, Any]) -> Draft202012Validator:
    """A validator for ``schema`` (compiled once, when the tool is registered)."""
    return Draft202012Validator(dict(schema), format_checker=Draft202012Validator.FORMAT_CHECKER)


def _path(error: jsonschema.ValidationError) -> str:
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    # A missing required property is reported on its parent: name the property itself.
    if error.validator == "required" and isinstance(error.instance, Mapping):
        missing = [
            name
            for name in (error.validator_value or [])
            if isinstance(name, str) and name not in error.instance
        ]
        if missing:
            path += f".{missing[0]}"
    return path


def schema_error(instance: Any, validator: Draft202012Validator, what: str) -> str | None:
    """None when ``instance`` is valid, else ``"<what> $.field: message"`` (first errors)."""
    if validator.is_valid(instance):
        return None
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(e.absolute_path), str(e)))
    if not errors:
        return None
    shown = "; ".join(f"{_path(e)}: {e.message[:200]}" for e in errors[:_MAX_ERRORS])
    more = f" (+{len(errors) - _MAX_ERRORS} more)" if len(errors) > _MAX_ERRORS else ""
    return f"{what} {shown}{more}"


_NO_SCHEMA = (inspect.Signature.empty, typing.Any)


def schemas_from_signature(
    fn: Callable[..., Any],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(input schema, output schema or None) from a function's type hints, via pydantic.

    Every parameter becomes a property (required unless it has a default); ``*args`` and
    ``**kwargs`` are not allowed (a tool's arguments are a closed object). The output schema
    comes from the return annotation, None when it is missing or ``Any``.
    """
    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ValueError(f"{fn.__qualname__}: a tool cannot take *args or **kwargs")
        if param.kind is param.POSITIONAL_ONLY:
            raise ValueError(f"{fn.__qualname__}: a tool's parameters must accept keywords")
        annotation = hints.get(name, Any)
        default = ... if param.default is param.empty else param.default
        fields[name] = (annotation, default)
    model = pydantic.create_model(
        f"{fn.__name__}_arguments", __config__=pydantic.ConfigDict(extra="forbid"), **fields
    )
    input_schema = model.model_json_schema()
    input_schema.pop("title", None)
    returned = hints.get("return", inspect.Signature.empty)
    output_schema = None
    if returned not in _NO_SCHEMA and returned is not type(None):
        output_schema = pydantic.TypeAdapter(returned).json_schema()
        output_schema.pop("title", None)
    return input_schema, output_schema
