"""Every way the object behind a spec can be wrong."""

from __future__ import annotations

from typing import Any

from af_test_plugins.common import Category


def returns_none() -> None:
    return None


def explodes(**kwargs: Any) -> object:
    raise RuntimeError("credentials missing")


not_a_plugin = object()
a_string = "plugin"


class HookRaises:
    def get_intent_categories(self) -> list[Category]:
        raise KeyError("categories.yaml")


class CategoriesNotAList:
    def get_intent_categories(self) -> str:
        return "BILLING"


class PromptsNotAMapping:
    def get_prompts(self) -> list[str]:
        return ["hello"]


class PromptNotAString:
    def get_prompts(self) -> dict[str, Any]:
        return {"greeting": 42}


class ToolNotAMapping:
    def get_tools_config(self) -> dict[str, Any]:
        return {"search": "fast"}


class NamelessCategory:
    def get_intent_categories(self) -> list[object]:
        return [object()]


class HandlerWithoutHandle:
    def get_handlers(self) -> list[object]:
        return [object()]


class NoneEverywhere:
    """Hooks that return None count as empty."""

    def get_intent_categories(self) -> None:
        return None

    def get_prompts(self) -> None:
        return None
