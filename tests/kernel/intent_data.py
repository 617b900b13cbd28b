"""Two small intent categories the encoder tests share (wordllama's and MiniLM's)."""

from __future__ import annotations

from agentflow.kernel.intents import IntentCategory

SUPPORT = [
    IntentCategory(
        "BILLING",
        examples=["I was charged twice", "refund my invoice", "why is my bill so high"],
    ),
    IntentCategory(
        "LOGIN",
        examples=["I forgot my password", "I can't log in", "reset my password"],
    ),
]
