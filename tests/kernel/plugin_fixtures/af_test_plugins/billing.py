"""A complete plugin found through the `create_plugin(**kwargs)` convention."""

from __future__ import annotations

import functools
from typing import Any

from af_test_plugins.common import Category, EchoHandler


class BillingPlugin:
    def __init__(self, currency: str = "USD", timeout: int = 30) -> None:
        self.currency = currency
        self.timeout = timeout

    def get_intent_categories(self) -> list[Category]:
        return [
            Category("BILLING", "Invoices and charges", ("Why was I charged twice?",), 0.7),
            Category("REFUND", "Refund requests", ("I want my money back",)),
        ]

    def get_handlers(self) -> list[EchoHandler]:
        return [EchoHandler("BILLING")]

    def get_prompts(self) -> dict[str, str]:
        return {"billing_answer": f"Answer billing questions; amounts are in {self.currency}."}

    def get_tools_config(self) -> dict[str, dict[str, Any]]:
        return {"invoice_lookup": {"timeout": self.timeout, "safety": "safe"}}


def create_plugin(**kwargs: Any) -> BillingPlugin:
    return BillingPlugin(**kwargs)


euro_plugin = functools.partial(BillingPlugin, currency="EUR")


class CallablePlugin(BillingPlugin):
    """A plugin object that happens to be callable is used as is, not called."""

    def __call__(self) -> str:
        return "not a factory"


callable_plugin = CallablePlugin(currency="CHF")
