"""JSON parsing with a bound on nesting depth (issue 13, item 7).

``json.loads`` recurses once per nesting level, and so does everything that walks the result
(validation, NUL checks, JSONB encoding). A body nested a few thousand levels deep made those
raise ``RecursionError``: a 500. The depth is measured first, in linear time and without
recursion, and a body nested deeper than ``MAX_JSON_DEPTH`` is refused as malformed.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.utils import json

DEFAULT_MAX_JSON_DEPTH = 64
# A JSON string literal (escapes included): brackets inside strings do not nest.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class TooDeeplyNested(ValueError):
    """The JSON text nests arrays and objects deeper than the limit."""


def max_json_depth() -> int:
    return int(getattr(settings, "MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH))


def nesting_depth(text: str) -> int:
    """How deep ``text``'s arrays and objects nest, ignoring brackets inside strings."""
    if text.count("[") + text.count("{") == 0:
        return 0
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def check_depth(text: str, limit: int | None = None) -> None:
    """Raise ``TooDeeplyNested`` when ``text`` nests deeper than ``limit`` (the setting)."""
    limit = max_json_depth() if limit is None else limit
    # Fewer opening brackets than the limit cannot nest deeper: skip the scan.
    if text.count("[") + text.count("{") <= limit:
        return
    if nesting_depth(text) > limit:
        raise TooDeeplyNested(f"JSON nested deeper than {limit} levels.")


def loads_bounded(text: str | bytes, **kwargs: Any) -> Any:
    """``json.loads`` for untrusted text: ``TooDeeplyNested`` (a ValueError) past the limit."""
    decoded = text.decode("utf-8") if isinstance(text, bytes) else text
    check_depth(decoded)
    return json.loads(decoded, **kwargs)


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser, refusing bodies nested deeper than ``MAX_JSON_DEPTH`` with a 400."""

    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        parse_constant = json.strict_constant if self.strict else None
        try:
            text = codecs.getreader(encoding)(stream).read()
            return loads_bounded(text, parse_constant=parse_constant)
        except ValueError as exc:  # includes UnicodeDecodeError and TooDeeplyNested
            raise ParseError(f"JSON parse error - {exc}") from None
