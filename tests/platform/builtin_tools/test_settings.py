"""``tool_settings`` validation: every error names its field (pydantic's location), URLs must
be under the operator's TOOL_ALLOWED_URLS, secrets only as allowed ${VAR} references; and
which tools an agent gets, with which contract."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agentflow.builtin_tools import BUILTIN_TOOL_IDS, BuiltinToolSettings
from tests.platform.builtin_tools.conftest import jira_settings, registry_for, zendesk_settings

OK_URL = "https://acme.zendesk.example"


def errors_of(tool_settings: dict[str, Any]) -> dict[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as caught:
        BuiltinToolSettings.model_validate(tool_settings)
    return {tuple(error["loc"]): error["msg"] for error in caught.value.errors()}


@pytest.fixture(autouse=True)
def _allowlist(operator_allows: Any) -> None:
    operator_allows(OK_URL, "https://shop.example/api", "https://status.example")


@pytest.mark.parametrize(
    ("tool_settings", "field", "says"),
    [
        ({"zendesk": {**zendesk_settings(OK_URL), "api_token": "raw-token"}},
         ("zendesk", "api_token"), "${VAR} reference"),
        ({"zendesk": {**zendesk_settings(OK_URL), "api_token": "${DATABASE_URL}"}},
         ("zendesk", "api_token"), "not a variable the operator allows"),
        ({"zendesk": zendesk_settings("https://evil.example")},
         ("zendesk", "base_url"), "not under an allowed URL prefix"),
        ({"zendesk": zendesk_settings("https://acme.zendesk.example.evil.io")},
         ("zendesk", "base_url"), "not under an allowed URL prefix"),
        ({"zendesk": zendesk_settings("https://me:pw@acme.zendesk.example")},
         ("zendesk", "base_url"), "credentials"),
        ({"zendesk": {**zendesk_settings(OK_URL), "email": "not-an-email"}},
         ("zendesk", "email"), "email address"),
        ({"zendesk": {**zendesk_settings(OK_URL), "subdomain": "x"}},
         ("zendesk", "subdomain"), "Extra inputs"),
        ({"jira": {**jira_settings(OK_URL), "project_key": "sup"}},
         ("jira", "project_key"), "pattern"),
        ({"jira": {key: v for key, v in jira_settings(OK_URL).items() if key != "email"}},
         ("jira", "email"), "Field required"),
        ({"http_request": {"allowed_hosts": ["ftp://status.example"]}},
         ("http_request", "allowed_hosts", 0), "http(s)"),
        ({"http_request": {"allowed_hosts": ["https://status.example", "https://x.example"]}},
         ("http_request", "allowed_hosts", 1), "not under an allowed URL prefix"),
        ({"http_request": {"allowed_hosts": []}},
         ("http_request", "allowed_hosts"), "at least 1"),
        ({"http_request": {"allowed_hosts": ["https://status.example"], "timeout": 600}},
         ("http_request", "timeout"), "less than or equal to 60"),
        ({"lookup_order": {"url_template": "https://shop.example/api/orders"}},
         ("lookup_order", "url_template"), "{order_id}"),
        ({"lookup_order": {"url_template": "https://shop.example/api/{order_id}/{x}"}},
         ("lookup_order", "url_template"), "no other placeholder"),
        ({"lookup_order": {"url_template": "https://other.example/orders/{order_id}"}},
         ("lookup_order", "url_template"), "not under an allowed URL prefix"),
        ({"lookup_order": {"url_template": "https://shop.example/api/orders/{order_id}",
                           "headers": {"Authorization": "Bearer sk_live_123"}}},
         ("lookup_order", "headers"), "${VAR} reference"),
        ({"lookup_order": {"url_template": "https://shop.example/api/orders/{order_id}",
                           "headers": {"X-Key": "${HOME}"}}},
         ("lookup_order", "headers"), "not a variable the operator allows"),
        ({"send_email": {"from_address": "support@acme.example", "allowed_domains": ["a b"]}},
         ("send_email", "allowed_domains", 0), "not a domain name"),
        ({"send_email": {"from_address": "nobody", "allowed_domains": ["acme.example"]}},
         ("send_email", "from_address"), "email address"),
        ({"slack": {}}, ("slack",), "Extra inputs"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_refused_naming_its_field(
    tool_settings: dict[str, Any], field: tuple[Any, ...], says: str
) -> None:
    errors = errors_of(tool_settings)
    assert field in errors, errors
    assert says in errors[field]


def test_no_operator_allowlist_makes_every_url_tool_unavailable(operator_allows: Any) -> None:
    operator_allows()  # TOOL_ALLOWED_URLS unset
    errors = errors_of({"zendesk": zendesk_settings(OK_URL)})
    assert "TOOL_ALLOWED_URLS" in errors[("zendesk", "base_url")]


def test_tools_without_settings_are_not_offered() -> None:
    bare = registry_for({})
    assert [tool.id for tool in bare.tools] == ["knowledge_search", "handoff_to_human"]


def test_every_tool_has_its_contract() -> None:
    registry = registry_for(
        {
            "http_request": {"allowed_hosts": ["https://status.example"]},
            "zendesk": zendesk_settings(OK_URL),
            "lookup_order": {"url_template": "https://shop.example/api/orders/{order_id}"},
            "send_email": {
                "from_address": "help@acme.example",
                "allowed_domains": ["acme.example"],
            },
        }
    )
    tools = {tool.id: tool for tool in registry.tools}
    assert list(tools) == list(BUILTIN_TOOL_IDS)
    safety = {tool_id: tool.safety_level for tool_id, tool in tools.items()}
    assert safety == {
        "http_request": "safe",
        "knowledge_search": "safe",
        "create_ticket": "requires_confirmation",
        "update_ticket": "requires_confirmation",
        "send_email": "requires_confirmation",
        "lookup_order": "safe",
        "handoff_to_human": "safe",
    }
    for tool in tools.values():
        assert tool.input_schema["additionalProperties"] is False
        assert tool.output_schema is not None
        assert tool.description
        assert tool.source == "builtin"
    assert tools["knowledge_search"].required_permissions == "read"
    assert tools["lookup_order"].required_permissions == "read"
    assert tools["send_email"].required_permissions == "execute"
    # With both systems configured, the ticket tools ask which one.
    both = registry_for({"zendesk": zendesk_settings(OK_URL), "jira": jira_settings(OK_URL)})
    create = both.get("create_ticket")
    assert create is not None
    assert create.input_schema["properties"]["system"] == {"enum": ["jira", "zendesk"]}


def test_http_request_with_post_needs_confirmation() -> None:
    registry = registry_for(
        {"http_request": {"allowed_hosts": ["https://status.example"], "allow_post": True}}
    )
    tool = registry.get("http_request")
    assert tool is not None
    assert tool.safety_level == "requires_confirmation"
    assert tool.required_permissions == "execute"
    assert tool.input_schema["properties"]["method"]["enum"] == ["GET", "POST"]
