"""A plugin exposed as a module-level `plugin` object, sharing one prompt with billing."""

from __future__ import annotations

from af_test_plugins.common import Category, EchoHandler


class OutagePlugin:
    def get_intent_categories(self) -> tuple[Category, ...]:
        return (Category("OUTAGE", "Service down", ("The site is down",), 0.8),)

    def get_handlers(self) -> list[EchoHandler]:
        return [EchoHandler("OUTAGE")]

    def get_prompts(self) -> dict[str, str]:
        return {"status_page": "Point users at https://status.example.com."}


plugin = OutagePlugin()
