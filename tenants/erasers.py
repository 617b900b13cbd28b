"""The registry of GDPR erasers: each app erases its own copies of an end user's data.

An app registers one :class:`Eraser` from its ``AppConfig.ready``; ``governance.erasure``
only orchestrates (the order below, one transaction, the tenant's scope, the audit event)
and never writes another app's tables. This module sits on the ground floor so every app
may import it without importing governance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

# What an emptied field says instead of the end user's id.
ERASED = "[erased]"


class Stage(IntEnum):
    """When an eraser runs; erasers of one stage run in the order of their names."""

    # Stop the user's unfinished work first: nothing may deliver an answer into a
    # conversation that is about to disappear.
    STOP = 1
    # Copies other apps hold, found through runs that still name the user.
    COPIES = 2
    # The conversations themselves, last: this renames the runs' user.
    OWNER = 3


@dataclass(frozen=True)
class ErasureSubject:
    """Whose data goes. Erasers run inside ``tenant_id``'s scope and one transaction."""

    actor: Any  # a governance.audit.Actor: who asked (cancellations are audited under it)
    tenant_id: int
    user_id: str


# subject -> {what: rows}; the keys are reported as they are (the erasure's API body).
EraseFunction = Callable[[ErasureSubject], dict[str, int]]


@dataclass(frozen=True)
class Eraser:
    name: str
    stage: Stage
    erase: EraseFunction


_erasers: dict[str, Eraser] = {}


def register_eraser(name: str, stage: Stage, erase: EraseFunction) -> None:
    """Register (or replace) the eraser called ``name``; call from ``AppConfig.ready``."""
    _erasers[name] = Eraser(name, stage, erase)


def unregister_eraser(name: str) -> None:
    _erasers.pop(name, None)


def erasers() -> list[Eraser]:
    """Every registered eraser in the order they must run."""
    return sorted(_erasers.values(), key=lambda eraser: (eraser.stage, eraser.name))
