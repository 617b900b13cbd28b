"""Plugins that collide with billing/outage: a category name and a prompt key."""

from __future__ import annotations

from af_test_plugins.common import Category


class SecondBilling:
    def get_intent_categories(self) -> list[Category]:
        return [Category("BILLING", "Someone else's billing")]


class OtherStatusPage:
    def get_prompts(self) -> dict[str, str]:
        return {"status_page": "A different status page text."}
