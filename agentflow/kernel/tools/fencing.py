"""Tool outputs are untrusted data, never instructions (SPEC 4.11).

Text output is fenced the way webhook text is (`guardrails.wrap_untrusted`: a header saying
it is data and not instructions, begin/end markers carrying a digest of the content, role
labels, control tokens and injection phrases neutralised). Before that, anything inside
that looks like one of our own fence markers is neutralised, so an output cannot fake the
end of its fence or the start of a trusted section even to a reader that ignores digests.

Structured output (objects and lists that passed the output schema) keeps its shape and its
values, because planners compare them (``output.status == "shipped"``); its strings are
neutralised but not wrapped. `fence_for_prompt` wraps any output when it goes into a prompt.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agentflow.kernel.guardrails import _neutralise, wrap_untrusted

__all__ = ["fence_for_prompt", "fence_output", "neutralise_markers"]

MAX_TEXT_CHARS = 20_000
_MAX_DEPTH = 32

_MARKER_RE = re.compile(
    r"(?i)<{2,}\s*/?\s*(?:begin|end)\s+untrusted\b[^>\n]*>*"  # <<<END UNTRUSTED abc>>>
    r"|\[\s*untrusted\s+data\b"  # [UNTRUSTED DATA from ...
)
_FENCED_RE = re.compile(
    r"\[UNTRUSTED DATA from [^\]\n]*\]\n<<<BEGIN UNTRUSTED ([0-9a-f]{12})>>>\n(.*)\n"
    r"<<<END UNTRUSTED \1>>>",
    re.DOTALL,
)


def neutralise_markers(text: str) -> str:
    return _MARKER_RE.sub(lambda m: "[fence marker removed]", text)


def fence_output(output: Any, source: str, *, max_chars: int = MAX_TEXT_CHARS) -> Any:
    """Fence text output; neutralise the strings of structured output (values kept)."""
    if isinstance(output, str):
        return wrap_untrusted(neutralise_markers(output), source, max_chars=max_chars)
    return _clean(output, 0)


def _clean(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, str):
        return _neutralise(neutralise_markers(value))
    if isinstance(value, dict):
        return {
            _clean(key, depth + 1) if isinstance(key, str) else key: _clean(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_clean(item, depth + 1) for item in value]
    return value


def fence_for_prompt(output: Any, source: str, *, max_chars: int = MAX_TEXT_CHARS) -> str:
    """The output as fenced text for an LLM prompt (already-fenced text is kept as is)."""
    if isinstance(output, str):
        fenced = _FENCED_RE.fullmatch(output)
        if fenced and not _MARKER_RE.search(fenced.group(2)):
            return output  # already fenced by `fence_output`
        return wrap_untrusted(neutralise_markers(output), source, max_chars=max_chars)
    text = json.dumps(output, default=str, ensure_ascii=False)
    return wrap_untrusted(neutralise_markers(text), source, max_chars=max_chars)
