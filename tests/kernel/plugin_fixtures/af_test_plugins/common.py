"""Shapes a plugin returns, duck-typed like the kernel's IntentCategory and BaseHandler."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Category:
    name: str
    description: str = ""
    examples: Sequence[str] = ()
    threshold: float | None = None


class EchoHandler:
    def __init__(self, intent: str) -> None:
        self.intent = intent

    def can_handle(self, intent: str, context: Any = None) -> bool:
        return intent == self.intent

    async def handle(self, *args: Any, **kwargs: Any) -> str:
        return f"handled {self.intent}"

    def get_priority(self) -> int:
        return 10
