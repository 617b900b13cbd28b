"""Plugins: packaged domain logic for an agent (SPEC 4.5).

A plugin contributes intent categories, handlers, prompts and tool configurations. It is
found by module path (`"package.module"` or `"package.module:factory_or_class"`) or by the
`agentflow.plugins` entry-point group of installed distributions. Every way a plugin can
be broken (import error, missing object, factory failure, wrong return types, clashing
names) is a `PluginError` that names the plugin and the reason, raised at load time rather
than in the middle of a conversation.
"""

from __future__ import annotations

import importlib
import inspect
import re
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_GROUP",
    "PLUGIN_SPEC_RE",
    "AgentPlugin",
    "PluginContributions",
    "PluginError",
    "PluginManager",
]

DEFAULT_GROUP = "agentflow.plugins"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
# "package.module" or "package.module:attr.path" (the entry-point object reference syntax).
PLUGIN_SPEC_RE = re.compile(rf"{_IDENT}(?:\.{_IDENT})*(?::{_IDENT}(?:\.{_IDENT})*)?")
_HOOKS = ("get_intent_categories", "get_handlers", "get_prompts", "get_tools_config")


@runtime_checkable
class AgentPlugin(Protocol):
    """What a plugin may provide. Every method is optional: a missing one counts as empty.

    Categories are `agentflow.kernel.intents.IntentCategory` objects (anything with a
    `name`), handlers are `agentflow.kernel.handlers.BaseHandler` instances (anything with a
    callable `handle`).
    """

    def get_intent_categories(self) -> Sequence[Any]: ...

    def get_handlers(self) -> Sequence[Any]: ...

    def get_prompts(self) -> Mapping[str, str]: ...

    def get_tools_config(self) -> Mapping[str, Mapping[str, Any]]: ...


class PluginError(Exception):
    """A plugin could not be loaded or its contributions are invalid."""

    def __init__(self, plugin: str, reason: str) -> None:
        super().__init__(f"plugin {plugin!r}: {reason}")
        self.plugin = plugin
        self.reason = reason


@dataclass(frozen=True)
class PluginContributions:
    """Everything the loaded plugins provide, merged in load order."""

    categories: tuple[Any, ...] = ()
    handlers: tuple[Any, ...] = ()
    prompts: dict[str, str] = field(default_factory=dict)
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Which plugin provided each category / prompt / tool, for diagnostics and audit.
    origins: dict[str, str] = field(default_factory=dict)


class PluginManager:
    """Loads plugins by module path or entry point and merges what they provide."""

    def __init__(self) -> None:
        self._plugins: dict[str, object] = {}
        self._specs: dict[str, str] = {}
        self.errors: list[PluginError] = []  # filled by discover(strict=False)

    # ------------------------------------------------------------------ loading

    def load(self, spec: str, *, name: str | None = None, **kwargs: Any) -> object:
        """Load `"package.module"` or `"package.module:attr"`; kwargs go to the factory/class.

        Without an attribute the module's `create_plugin(**kwargs)`, `plugin` object or
        `Plugin` class is used, in that order.
        """
        plugin_name = name or spec
        if not isinstance(spec, str) or not PLUGIN_SPEC_RE.fullmatch(spec):
            raise PluginError(
                plugin_name, f"{spec!r} is not 'package.module' or 'package.module:attr'"
            )
        if plugin_name in self._plugins:
            return self._already_loaded(plugin_name, spec)
        module_name, _, attr_path = spec.partition(":")
        module = _import(plugin_name, module_name)
        if attr_path:
            target: object = module
            for attr in attr_path.split("."):
                try:
                    target = getattr(target, attr)
                except AttributeError:
                    raise PluginError(
                        plugin_name, f"module {module_name!r} has no attribute {attr_path!r}"
                    ) from None
        else:
            target = module
        plugin = _instantiate(plugin_name, target, kwargs)
        return self._register(plugin_name, spec, plugin)

    def load_all(self, specs: Iterable[str]) -> list[object]:
        return [self.load(spec) for spec in specs]

    def discover(self, group: str = DEFAULT_GROUP, *, strict: bool = True) -> list[str]:
        """Load every plugin advertised in the entry-point `group`; return their names.

        With `strict=False` a broken plugin is skipped and its error kept in `self.errors`
        (a third-party package should not take the agent down); by default it raises.
        """
        loaded: list[str] = []
        for entry_point in sorted(entry_points(group=group), key=lambda ep: ep.name):
            try:
                self._load_entry_point(entry_point)
            except PluginError as exc:
                if strict:
                    raise
                self.errors.append(exc)
                continue
            loaded.append(entry_point.name)
        return loaded

    def _load_entry_point(self, entry_point: EntryPoint) -> None:
        name = entry_point.name
        spec = entry_point.value
        if name in self._plugins:
            self._already_loaded(name, spec)
            return
        dist = entry_point.dist.name if entry_point.dist is not None else "unknown distribution"
        try:
            target = entry_point.load()
        except Exception as exc:
            raise PluginError(
                name, f"entry point {spec!r} of {dist} failed to load: {_describe(exc)}"
            ) from exc
        self._register(name, spec, _instantiate(name, target, {}))

    def _already_loaded(self, name: str, spec: str) -> object:
        if self._specs[name] != spec:
            raise PluginError(
                name, f"name already used by {self._specs[name]!r}; cannot also load {spec!r}"
            )
        return self._plugins[name]

    def _register(self, name: str, spec: str, plugin: object) -> object:
        self._plugins[name] = plugin
        self._specs[name] = spec
        return plugin

    # ---------------------------------------------------------------- accessors

    @property
    def names(self) -> list[str]:
        return list(self._plugins)

    def get(self, name: str) -> object:
        try:
            return self._plugins[name]
        except KeyError:
            raise PluginError(name, "not loaded") from None

    def __iter__(self) -> Iterator[object]:
        return iter(self._plugins.values())

    def __len__(self) -> int:
        return len(self._plugins)

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    # ------------------------------------------------------------------ merging

    def collect(self) -> PluginContributions:
        """Merge all contributions; clashing category, prompt or tool names are errors."""
        categories: list[Any] = []
        handlers: list[Any] = []
        prompts: dict[str, str] = {}
        tools: dict[str, dict[str, Any]] = {}
        origins: dict[str, str] = {}
        category_owner: dict[str, str] = {}
        for name, plugin in self._plugins.items():
            for category in _sequence(name, plugin, "get_intent_categories"):
                category_name = getattr(category, "name", None)
                if not isinstance(category_name, str) or not category_name:
                    raise PluginError(name, f"intent category {category!r} has no string 'name'")
                if category_name in category_owner:
                    raise PluginError(
                        name,
                        f"intent category {category_name!r} is already provided by plugin "
                        f"{category_owner[category_name]!r}",
                    )
                category_owner[category_name] = name
                origins[f"category:{category_name}"] = name
                categories.append(category)
            for handler in _sequence(name, plugin, "get_handlers"):
                if not callable(getattr(handler, "handle", None)):
                    raise PluginError(name, f"handler {handler!r} has no callable 'handle'")
                handlers.append(handler)
            for key, prompt in _mapping(name, plugin, "get_prompts").items():
                if not isinstance(key, str) or not isinstance(prompt, str):
                    raise PluginError(name, f"prompt {key!r} must map a string to a string")
                _merge_one(name, "prompt", key, prompt, prompts, origins)
            for key, tool in _mapping(name, plugin, "get_tools_config").items():
                if not isinstance(key, str) or not isinstance(tool, Mapping):
                    raise PluginError(name, f"tool config {key!r} must map a name to a mapping")
                _merge_one(name, "tool", key, dict(tool), tools, origins)
        return PluginContributions(tuple(categories), tuple(handlers), prompts, tools, origins)


def _merge_one(
    plugin: str, kind: str, key: str, value: Any, into: dict[str, Any], origins: dict[str, str]
) -> None:
    # The same value from two plugins (a shared base prompt) is fine; different ones clash.
    if key in into and into[key] != value:
        raise PluginError(
            plugin,
            f"{kind} {key!r} conflicts with the one from plugin {origins[f'{kind}:{key}']!r}",
        )
    into.setdefault(key, value)
    origins.setdefault(f"{kind}:{key}", plugin)


def _import(plugin: str, module_name: str) -> types.ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(
            plugin, f"cannot import module {module_name!r}: {_describe(exc)}"
        ) from exc


def _instantiate(plugin: str, target: object, kwargs: Mapping[str, Any]) -> object:
    """Turn what a spec or entry point points at into a plugin object."""
    if isinstance(target, types.ModuleType):
        for convention in ("create_plugin", "plugin", "Plugin"):
            if hasattr(target, convention):
                return _instantiate(plugin, getattr(target, convention), kwargs)
        raise PluginError(
            plugin,
            f"module {target.__name__!r} defines none of create_plugin(), plugin or Plugin",
        )
    # A class, or any callable that is not itself a plugin (function, partial, ...), is a
    # factory; a class must be checked first since its hooks are there, unbound.
    is_plugin_object = not inspect.isclass(target) and _provides_hooks(target)
    if callable(target) and not is_plugin_object:
        factory: Callable[..., object] = target
        try:
            result = factory(**kwargs)
        except Exception as exc:
            what = getattr(target, "__qualname__", repr(target))
            raise PluginError(plugin, f"{what}() raised {_describe(exc)}") from exc
        return _checked(plugin, result)
    if kwargs:
        raise PluginError(plugin, "options were given but the plugin is an object, not a factory")
    return _checked(plugin, target)


def _checked(plugin: str, candidate: object) -> object:
    if candidate is None or isinstance(candidate, str | int | float | bool | types.ModuleType):
        raise PluginError(plugin, f"expected a plugin object, got {type(candidate).__name__}")
    if not _provides_hooks(candidate):
        raise PluginError(
            plugin,
            f"{type(candidate).__name__} provides none of {', '.join(_HOOKS)}",
        )
    return candidate


def _provides_hooks(candidate: object) -> bool:
    return any(callable(getattr(candidate, hook, None)) for hook in _HOOKS)


def _call_hook(plugin: str, obj: object, hook: str) -> Any:
    method = getattr(obj, hook, None)
    if method is None:
        return None
    try:
        return method()
    except Exception as exc:
        raise PluginError(plugin, f"{hook}() raised {_describe(exc)}") from exc


def _sequence(plugin: str, obj: object, hook: str) -> Sequence[Any]:
    value = _call_hook(plugin, obj, hook)
    if value is None:
        return ()
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
        raise PluginError(plugin, f"{hook}() must return a list, got {type(value).__name__}")
    return list(value)


def _mapping(plugin: str, obj: object, hook: str) -> Mapping[Any, Any]:
    value = _call_hook(plugin, obj, hook)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PluginError(plugin, f"{hook}() must return a mapping, got {type(value).__name__}")
    return value


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
