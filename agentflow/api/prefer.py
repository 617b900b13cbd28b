"""RFC 7240 ``Prefer`` header: ``respond-async`` and ``wait=N``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preference:
    respond_async: bool = False
    wait: float | None = None


def parse_prefer(header: str | None, *, max_wait: float) -> Preference:
    respond_async = False
    wait: float | None = None
    for token in (header or "").split(","):
        name, _, value = token.strip().partition("=")
        name = name.strip().lower()
        if name == "respond-async":
            respond_async = True
        elif name == "wait":
            try:
                wait = min(max(float(value.strip().strip('"')), 0.0), max_wait)
            except ValueError:
                continue  # an unparsable preference is ignored, as RFC 7240 says
    return Preference(respond_async=respond_async, wait=wait)
