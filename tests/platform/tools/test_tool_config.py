"""An agent config's tools and MCP servers: what the operator allows, or a 422 naming the field."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from agentflow.models import Agent
from tenants.context import tenant_scope
from tests.platform.api.conftest import SUPPORT_CONFIG, Persona
from tests.platform.tools.conftest import MCP_SERVER

pytestmark = pytest.mark.django_db

STDIO = {"name": "demo", "transport": "stdio", "command": [sys.executable, MCP_SERVER]}
HTTP = {"name": "web", "transport": "http", "url": "http://127.0.0.1:9/mcp"}


def create(persona: Persona, **config: Any) -> Any:
    return persona.post(
        "/api/v1/agents",
        {"name": "a", "blueprint": "support_agent", "config": {**SUPPORT_CONFIG, **config}},
    )


def test_a_valid_config_is_stored_as_written(owner: Persona) -> None:
    response = create(
        owner,
        tools=["lookup_order", {"id": "demo.add", "safety_level": "safe"}],
        mcp_servers=[
            {**STDIO, "env": {"LOG_LEVEL": "debug", "API_TOKEN": "${DEMO_MCP_TOKEN}"}},
            {**HTTP, "headers": {"Authorization": "${DEMO_MCP_TOKEN}"}},
        ],
        tool_role="reviewer",
    )
    assert response.status_code == 201, response.content
    config = response.json()["config"]
    assert config["tools"] == ["lookup_order", {"id": "demo.add", "safety_level": "safe"}]
    assert config["mcp_servers"][0]["env"]["API_TOKEN"] == "${DEMO_MCP_TOKEN}"
    assert config["tool_role"] == "reviewer"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"mcp_servers": [{**STDIO, "transport": "ftp"}]}, "mcp_servers[0].transport"),
        (
            {"mcp_servers": [{**STDIO, "command": ["/bin/sh", "-c", "id"]}]},
            "mcp_servers[0].command",
        ),
        ({"mcp_servers": [{**STDIO, "command": []}]}, "mcp_servers[0].command"),
        ({"mcp_servers": [{**HTTP, "url": "http://169.254.169.254/mcp"}]}, "mcp_servers[0].url"),
        ({"mcp_servers": [{**HTTP, "url": "file:///etc/passwd"}]}, "mcp_servers[0].url"),
        ({"mcp_servers": [{"name": "web", "transport": "http"}]}, "mcp_servers[0].url"),
        ({"mcp_servers": [STDIO, {**HTTP, "name": "demo"}]}, "mcp_servers[1].name"),
        ({"mcp_servers": [{**STDIO, "name": "no spaces"}]}, "mcp_servers[0].name"),
        ({"mcp_servers": [{**STDIO, "url": "http://127.0.0.1:9/"}]}, "mcp_servers[0].url"),
        ({"mcp_servers": [{**HTTP, "command": ["x"]}]}, "mcp_servers[0].command"),
        ({"mcp_servers": [{**STDIO, "shell": True}]}, "mcp_servers[0].shell"),
        # Secrets: never literal, only a variable the operator allows.
        (
            {"mcp_servers": [{**HTTP, "headers": {"Authorization": "Bearer abc"}}]},
            "mcp_servers[0].headers.Authorization",
        ),
        (
            {"mcp_servers": [{**STDIO, "env": {"HOME": "${SECRET_KEY}"}}]},
            "mcp_servers[0].env.HOME",
        ),
        (
            {"mcp_servers": [{**STDIO, "env": {"X": "prefix-${DEMO_MCP_TOKEN}"}}]},
            "mcp_servers[0].env.X",
        ),
        ({"tools": ["a", "a"]}, "tools[1]"),
        ({"tools": ["has space"]}, "tools[0]"),
        ({"tools": [{"id": "a", "safety_level": "yolo"}]}, "tools[0]"),
        ({"tools": [{"id": "a", "level": "admin"}]}, "tools[0]"),
        ({"tool_role": "platform_admin"}, "tool_role"),
    ],
)
def test_bad_configs_are_422_with_the_field(
    owner: Persona, config: dict[str, Any], field: str
) -> None:
    response = create(owner, **config)
    assert response.status_code == 422, response.content
    errors = response.json()["errors"]
    assert any(key == field or key.startswith(f"{field}.") for key in errors), errors
    with tenant_scope(owner.tenant.pk):
        assert not Agent.objects.exists()


def test_nothing_is_allowed_until_the_operator_allows_it(owner: Persona, settings: Any) -> None:
    settings.AGENTFLOW = {
        **settings.AGENTFLOW,
        "MCP_ALLOWED_COMMANDS": [],
        "MCP_ALLOWED_URLS": [],
        "MCP_SECRET_ENV_VARS": [],
    }
    response = create(owner, mcp_servers=[STDIO, {**HTTP, "name": "web"}])
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert "MCP_ALLOWED_COMMANDS is empty" in errors["mcp_servers[0].command"][0]
    assert "MCP_ALLOWED_URLS is empty" in errors["mcp_servers[1].url"][0]


def test_patch_with_a_bad_server_changes_nothing(owner: Persona) -> None:
    agent = create(owner, tools=["lookup_order"]).json()
    response = owner.patch(
        f"/api/v1/agents/{agent['agent_id'] if 'agent_id' in agent else agent['id']}",
        {"config": {**SUPPORT_CONFIG, "mcp_servers": [{**STDIO, "command": ["/bin/sh"]}]}},
    )
    assert response.status_code == 422
    assert "mcp_servers[0].command" in response.json()["errors"]
    with tenant_scope(owner.tenant.pk):
        stored = Agent.objects.get()
        assert stored.version == 1
        assert stored.config["mcp_servers"] == []
