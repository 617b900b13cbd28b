"""PluginManager: loading by module path and by entry point, merging, and every error path."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentflow.kernel.plugins import (
    DEFAULT_GROUP,
    PLUGIN_SPEC_RE,
    AgentPlugin,
    PluginError,
    PluginManager,
)

FIXTURES = Path(__file__).parent / "plugin_fixtures"


@pytest.fixture(autouse=True)
def plugin_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Put the fixture plugins on sys.path and forget them afterwards."""
    monkeypatch.syspath_prepend(str(FIXTURES))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("af_test_plugins"):
            del sys.modules[name]


def make_distribution(root: Path, name: str, entry_points: dict[str, dict[str, str]]) -> None:
    """A minimal installed distribution: `<name>-1.0.dist-info` with `entry_points.txt`."""
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines.extend(f"{key} = {value}" for key, value in entries.items())
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------ loading


def test_create_plugin_convention_passes_options() -> None:
    manager = PluginManager()
    plugin = manager.load("af_test_plugins.billing", currency="EUR", timeout=5)
    assert type(plugin).__name__ == "BillingPlugin"
    assert plugin.currency == "EUR"  # type: ignore[attr-defined]
    assert isinstance(plugin, AgentPlugin)
    contributions = manager.collect()
    assert contributions.prompts["billing_answer"].endswith("amounts are in EUR.")
    assert contributions.tools == {"invoice_lookup": {"timeout": 5, "safety": "safe"}}


def test_module_level_plugin_object_convention() -> None:
    manager = PluginManager()
    plugin = manager.load("af_test_plugins.outage")
    assert type(plugin).__name__ == "OutagePlugin"
    assert manager.get("af_test_plugins.outage") is plugin


def test_plugin_class_convention_and_partial_plugin() -> None:
    manager = PluginManager()
    manager.load("af_test_plugins.classic")
    contributions = manager.collect()
    assert contributions.categories == ()
    assert contributions.handlers == ()
    assert contributions.tools == {}
    assert list(contributions.prompts) == ["status_page"]


def test_explicit_attribute_class_factory_and_object() -> None:
    manager = PluginManager()
    by_class = manager.load("af_test_plugins.billing:BillingPlugin", currency="GBP")
    by_factory = manager.load("af_test_plugins.billing:create_plugin", name="second")
    by_object = manager.load("af_test_plugins.outage:plugin")
    assert by_class.currency == "GBP"  # type: ignore[attr-defined]
    assert by_factory.currency == "USD"  # type: ignore[attr-defined]
    assert type(by_object).__name__ == "OutagePlugin"
    assert manager.names == [
        "af_test_plugins.billing:BillingPlugin",
        "second",
        "af_test_plugins.outage:plugin",
    ]
    assert len(manager) == 3
    assert "second" in manager
    assert list(manager) == [by_class, by_factory, by_object]


def test_any_callable_factory_but_callable_plugins_are_used_as_is() -> None:
    manager = PluginManager()
    partial = manager.load("af_test_plugins.billing:euro_plugin", timeout=9)
    assert (partial.currency, partial.timeout) == ("EUR", 9)  # type: ignore[attr-defined]
    plugin = manager.load("af_test_plugins.billing:callable_plugin")
    assert type(plugin).__name__ == "CallablePlugin"
    assert plugin.currency == "CHF"  # type: ignore[attr-defined]


def test_hooks_returning_none_count_as_empty() -> None:
    manager = PluginManager()
    manager.load("af_test_plugins.bad_objects:NoneEverywhere")
    contributions = manager.collect()
    assert (contributions.categories, contributions.prompts) == ((), {})


def test_loading_the_same_spec_twice_returns_the_same_plugin() -> None:
    manager = PluginManager()
    first = manager.load("af_test_plugins.outage")
    assert manager.load("af_test_plugins.outage") is first
    assert manager.load_all(["af_test_plugins.outage"]) == [first]


def test_a_name_cannot_be_reused_for_another_spec() -> None:
    manager = PluginManager()
    manager.load("af_test_plugins.outage", name="ops")
    with pytest.raises(PluginError, match=r"plugin 'ops': name already used"):
        manager.load("af_test_plugins.billing", name="ops")


def test_get_unknown_plugin() -> None:
    with pytest.raises(PluginError, match="'nope': not loaded"):
        PluginManager().get("nope")


# ------------------------------------------------------------------ merging


def test_collect_merges_everything_in_load_order() -> None:
    manager = PluginManager()
    manager.load_all(["af_test_plugins.billing", "af_test_plugins.outage"])
    # The classic plugin repeats outage's status_page prompt verbatim: allowed.
    manager.load("af_test_plugins.classic")
    contributions = manager.collect()
    assert [c.name for c in contributions.categories] == ["BILLING", "REFUND", "OUTAGE"]
    assert contributions.categories[0].threshold == 0.7
    assert [h.intent for h in contributions.handlers] == ["BILLING", "OUTAGE"]
    assert set(contributions.prompts) == {"billing_answer", "status_page"}
    assert contributions.origins["category:OUTAGE"] == "af_test_plugins.outage"
    assert contributions.origins["prompt:status_page"] == "af_test_plugins.outage"
    assert contributions.origins["tool:invoice_lookup"] == "af_test_plugins.billing"


def test_duplicate_category_names_are_an_error_naming_both_plugins() -> None:
    manager = PluginManager()
    manager.load("af_test_plugins.billing")
    manager.load("af_test_plugins.clash:SecondBilling")
    with pytest.raises(PluginError) as caught:
        manager.collect()
    message = str(caught.value)
    assert "af_test_plugins.clash:SecondBilling" in message
    assert "'BILLING' is already provided by plugin 'af_test_plugins.billing'" in message


def test_conflicting_prompts_are_an_error() -> None:
    manager = PluginManager()
    manager.load("af_test_plugins.outage")
    manager.load("af_test_plugins.clash:OtherStatusPage")
    with pytest.raises(PluginError, match=r"prompt 'status_page' conflicts with .*outage"):
        manager.collect()


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("af_test_plugins.nope", r"cannot import module 'af_test_plugins.nope': ModuleNotFound"),
        ("af_test_plugins.broken_import", r"af_test_plugins_missing_dependency"),
        ("af_test_plugins.no_plugin", r"defines none of create_plugin\(\), plugin or Plugin"),
        ("af_test_plugins.billing:Missing", r"has no attribute 'Missing'"),
        ("af_test_plugins.bad_objects:returns_none", r"expected a plugin object, got NoneType"),
        ("af_test_plugins.bad_objects:explodes", r"explodes\(\) raised RuntimeError: credentials"),
        ("af_test_plugins.bad_objects:not_a_plugin", r"object provides none of get_intent_"),
        ("af_test_plugins.bad_objects:a_string", r"expected a plugin object, got str"),
        ("not a spec", r"is not 'package.module' or 'package.module:attr'"),
        ("pkg.module:", r"is not 'package.module'"),
    ],
)
def test_load_errors_name_the_plugin_and_the_reason(spec: str, reason: str) -> None:
    with pytest.raises(PluginError, match=reason) as caught:
        PluginManager().load(spec)
    assert caught.value.plugin == spec
    assert str(caught.value).startswith(f"plugin {spec!r}: ")


def test_options_for_a_plain_object_are_refused() -> None:
    with pytest.raises(PluginError, match="options were given"):
        PluginManager().load("af_test_plugins.outage:plugin", region="eu")


@pytest.mark.parametrize(
    ("attr", "reason"),
    [
        ("HookRaises", r"get_intent_categories\(\) raised KeyError"),
        ("CategoriesNotAList", r"get_intent_categories\(\) must return a list, got str"),
        ("PromptsNotAMapping", r"get_prompts\(\) must return a mapping, got list"),
        ("PromptNotAString", r"prompt 'greeting' must map a string to a string"),
        ("ToolNotAMapping", r"tool config 'search' must map a name to a mapping"),
        ("NamelessCategory", r"has no string 'name'"),
        ("HandlerWithoutHandle", r"has no callable 'handle'"),
    ],
)
def test_bad_contributions_are_reported_at_collect(attr: str, reason: str) -> None:
    manager = PluginManager()
    manager.load(f"af_test_plugins.bad_objects:{attr}")
    with pytest.raises(PluginError, match=reason) as caught:
        manager.collect()
    assert caught.value.plugin == f"af_test_plugins.bad_objects:{attr}"


def test_spec_pattern_matches_entry_point_syntax() -> None:
    assert PLUGIN_SPEC_RE.fullmatch("a.b_c.d:Factory.create")
    assert PLUGIN_SPEC_RE.fullmatch("module")
    for bad in ("a..b", ":x", "a:b:c", "1abc", "a.b:", "a b"):
        assert not PLUGIN_SPEC_RE.fullmatch(bad)


# ---------------------------------------------------------- entry points


def test_discover_loads_entry_points_of_installed_distributions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = "agentflow.test_discover"
    make_distribution(
        tmp_path,
        "af_billing_plugin",
        {group: {"billing": "af_test_plugins.billing", "ops": "af_test_plugins.outage:plugin"}},
    )
    make_distribution(tmp_path, "af_other", {"unrelated.group": {"x": "af_test_plugins.nope"}})
    monkeypatch.syspath_prepend(str(tmp_path))
    manager = PluginManager()
    assert manager.discover(group) == ["billing", "ops"]
    assert [c.name for c in manager.collect().categories] == ["BILLING", "REFUND", "OUTAGE"]
    # Discovering again is idempotent.
    assert manager.discover(group) == ["billing", "ops"]
    assert len(manager) == 2


def test_discover_uses_the_agentflow_plugins_group_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution(
        tmp_path, "af_classic", {DEFAULT_GROUP: {"classic": "af_test_plugins.classic"}}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    manager = PluginManager()
    assert "classic" in manager.discover()
    assert "status_page" in manager.collect().prompts


def test_broken_entry_point_names_the_entry_point_and_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = "agentflow.test_broken"
    make_distribution(
        tmp_path,
        "af_broken",
        {group: {"broken": "af_test_plugins.broken_import", "fine": "af_test_plugins.outage"}},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"plugin 'broken': entry point .* of af_broken failed"):
        PluginManager().discover(group)

    lenient = PluginManager()
    assert lenient.discover(group, strict=False) == ["fine"]
    assert [error.plugin for error in lenient.errors] == ["broken"]


def test_entry_point_without_plugin_object_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = "agentflow.test_empty"
    make_distribution(tmp_path, "af_empty", {group: {"empty": "af_test_plugins.no_plugin"}})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"'empty': module 'af_test_plugins.no_plugin' defines"):
        PluginManager().discover(group)
