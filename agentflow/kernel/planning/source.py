"""Plan documents with their YAML positions, and the errors that name them.

`parse_source` reads YAML (JSON is YAML) into plain dicts and lists that remember where each
key and item came from, so every validation error can say "line 14, column 9: ...". A plan
given as a dict has no positions; its errors name the path (``states.classify.on_success``)
instead. A definition embedded as a block string (``definition: |``) keeps the positions of
the outer file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = ["MDict", "MList", "PlanError", "PlanValidationError", "Pos", "parse_source"]


@dataclass(frozen=True, slots=True, order=True)
class Pos:
    """1-based line and column; (0, 0) when the plan came from a dict."""

    line: int = 0
    column: int = 0

    def __bool__(self) -> bool:
        return self.line > 0


@dataclass(frozen=True, slots=True)
class PlanError:
    """One problem in a plan: where it is, what it is."""

    reason: str
    pos: Pos = field(default_factory=Pos)
    path: str = ""

    def __str__(self) -> str:
        where = f"line {self.pos.line}, column {self.pos.column}" if self.pos else self.path
        return f"{where}: {self.reason}" if where else self.reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "line": self.pos.line or None,
            "column": self.pos.column or None,
            "path": self.path,
            "reason": self.reason,
            "message": str(self),
        }


class PlanValidationError(ValueError):
    """Every error of a plan at once, in document order."""

    def __init__(self, errors: list[PlanError], *, source_name: str = "") -> None:
        self.errors = sorted(errors, key=lambda e: (e.pos, e.path))
        self.source_name = source_name
        prefix = f"{source_name}: " if source_name else ""
        lines = "\n".join(f"  {e}" for e in self.errors)
        super().__init__(f"{prefix}{len(self.errors)} error(s) in the plan:\n{lines}")


class MDict(dict[str, Any]):
    """A mapping that knows where it, each key and each value started."""

    pos: Pos
    key_pos: dict[str, Pos]
    value_pos: dict[str, Pos]
    value_style: dict[str, str | None]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pos = Pos()
        self.key_pos = {}
        self.value_pos = {}
        self.value_style = {}

    def at(self, key: str) -> Pos:
        return self.key_pos.get(key, self.pos)

    def value_at(self, key: str) -> Pos:
        return self.value_pos.get(key, self.at(key))


class MList(list[Any]):
    pos: Pos
    item_pos: list[Pos]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.pos = Pos()
        self.item_pos = []

    def at(self, index: int) -> Pos:
        return self.item_pos[index] if index < len(self.item_pos) else self.pos


def pos_of(container: Any, key: str | int) -> Pos:
    if isinstance(container, MDict) and isinstance(key, str):
        return container.at(key)
    if isinstance(container, MList) and isinstance(key, int):
        return container.at(key)
    return getattr(container, "pos", Pos())


class _MarkedLoader(yaml.SafeLoader):
    duplicates: list[PlanError]


def _loader(line_offset: int, column_offset: int) -> type[_MarkedLoader]:
    def mark(node: yaml.Node) -> Pos:
        line = node.start_mark.line + 1 + line_offset
        column = node.start_mark.column + 1 + column_offset
        return Pos(line, column)

    class Loader(_MarkedLoader):
        pass

    def construct_map(loader: Loader, node: yaml.MappingNode) -> MDict:
        result = MDict()
        result.pos = mark(node)
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            key = str(key) if not isinstance(key, str) else key
            if key in result:
                loader.duplicates.append(
                    PlanError(f"duplicate key `{key}` (the later one would win)", mark(key_node))
                )
            result[key] = loader.construct_object(value_node, deep=True)
            result.key_pos[key] = mark(key_node)
            result.value_pos[key] = mark(value_node)
            result.value_style[key] = getattr(value_node, "style", None)
        return result

    def construct_seq(loader: Loader, node: yaml.SequenceNode) -> MList:
        result = MList(loader.construct_object(child, deep=True) for child in node.value)
        result.pos = mark(node)
        result.item_pos = [mark(child) for child in node.value]
        return result

    Loader.add_constructor("tag:yaml.org,2002:map", construct_map)
    Loader.add_constructor("tag:yaml.org,2002:seq", construct_seq)
    return Loader


def parse_source(text: str, *, line_offset: int = 0, column_offset: int = 0) -> Any:
    """YAML or JSON text to marked data; raise `PlanValidationError` on a syntax error."""
    loader_class = _loader(line_offset, column_offset)
    loader = loader_class(text)
    loader.duplicates = []
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        problem_mark = exc.problem_mark or exc.context_mark
        pos = Pos()
        if problem_mark is not None:
            pos = Pos(problem_mark.line + 1 + line_offset, problem_mark.column + 1 + column_offset)
        reason = f"not valid YAML: {exc.problem or exc.context}"
        raise PlanValidationError([PlanError(reason, pos)]) from None
    except yaml.YAMLError as exc:
        raise PlanValidationError([PlanError(f"not valid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise PlanValidationError(loader.duplicates)
    return data


def embedded_offsets(outer_text: str | None, container: Any, key: str) -> tuple[int, int]:
    """Line and column offsets of a block string (``definition: |``) inside its file."""
    if not isinstance(container, MDict) or key not in container.value_pos:
        return 0, 0
    start = container.value_pos[key]
    style = container.value_style.get(key)
    if style in ("|", ">") and outer_text is not None:
        lines = outer_text.splitlines()
        # the content starts on the line after the indicator; find its indentation
        for index in range(start.line, len(lines)):
            content = lines[index]
            if content.strip():
                indent = len(content) - len(content.lstrip(" "))
                return index, indent
        return start.line, 0
    return start.line - 1, 0
