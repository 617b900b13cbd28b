"""Fake services on loopback, the operator's allowlists, and a registry of built-in tools."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agentflow.builtin_tools import BuiltinToolContext, BuiltinToolSettings, builtin_tools
from agentflow.kernel.tools import ToolCaller, ToolRegistry
from tests.platform.api.conftest import make_agent, make_persona, outsider, owner
from tests.platform.builtin_tools.fakes import FakeServer, Jira, Zendesk, shop_route, site_route

__all__ = ["make_agent", "make_persona", "outsider", "owner"]  # fixtures re-exported

ZENDESK_EMAIL = "bot@acme.example"
JIRA_EMAIL = "bot@acme.example"
SECRETS = {
    "ZENDESK_TOKEN": "zd-6wiIBWbGkBMo1mRDMuVwkw",
    "JIRA_TOKEN": "jira-ATATT3x",
    "SHOP_TOKEN": "shop-1",
}


@pytest.fixture
def zendesk() -> Iterator[Zendesk]:
    fake = Zendesk(ZENDESK_EMAIL, SECRETS["ZENDESK_TOKEN"])
    with fake.server.running():
        yield fake


@pytest.fixture
def jira() -> Iterator[Jira]:
    fake = Jira(JIRA_EMAIL, SECRETS["JIRA_TOKEN"], "SUP")
    with fake.server.running():
        yield fake


@pytest.fixture
def shop() -> Iterator[FakeServer]:
    with FakeServer(shop_route(SECRETS["SHOP_TOKEN"])).running() as server:
        yield server


@pytest.fixture
def site() -> Iterator[FakeServer]:
    with FakeServer(site_route).running() as server:
        yield server


@pytest.fixture
def operator_allows(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``allow(*urls)``: set TOOL_ALLOWED_URLS; the secrets' variables are allowed and set."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)

    def allow(*urls: str) -> None:
        settings.AGENTFLOW = {
            **settings.AGENTFLOW,
            "TOOL_ALLOWED_URLS": list(urls),
            "TOOL_SECRET_ENV_VARS": list(SECRETS),
        }

    allow()
    return allow


def registry_for(tool_settings: dict[str, Any], *, tenant_id: int = 1, agent_id: str = "a1"
                 ) -> ToolRegistry:  # fmt: skip
    options = BuiltinToolSettings.model_validate(tool_settings)
    return ToolRegistry(builtin_tools(BuiltinToolContext(tenant_id, agent_id, options)))


def granted(registry: ToolRegistry, level: str = "execute") -> ToolCaller:
    """A caller granted every tool of ``registry`` at ``level``."""
    return ToolCaller.of([tool.id for tool in registry.tools], level, tenant_id="t1")


def zendesk_settings(url: str) -> dict[str, Any]:
    return {"base_url": url, "email": ZENDESK_EMAIL, "api_token": "${ZENDESK_TOKEN}"}


def jira_settings(url: str) -> dict[str, Any]:
    return {
        "base_url": url,
        "email": JIRA_EMAIL,
        "api_token": "${JIRA_TOKEN}",
        "project_key": "SUP",
    }
