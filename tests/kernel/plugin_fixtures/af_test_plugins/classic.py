"""A partial plugin in the seed's `Plugin` class convention: prompts only."""

from __future__ import annotations


class Plugin:
    def get_prompts(self) -> dict[str, str]:
        return {"status_page": "Point users at https://status.example.com."}
