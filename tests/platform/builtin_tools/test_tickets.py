"""``create_ticket`` / ``update_ticket`` against local Zendesk and Jira fakes that check the
real APIs' method, path, basic auth and body shape, through a registry (approval needed)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from agentflow.kernel.tools import ToolRegistry
from tests.platform.builtin_tools.conftest import (
    JIRA_EMAIL,
    SECRETS,
    ZENDESK_EMAIL,
    granted,
    jira_settings,
    registry_for,
    zendesk_settings,
)
from tests.platform.builtin_tools.fakes import Jira, Zendesk, is_adf

NEW_TICKET = {
    "subject": "Refund for order A-1001",
    "description": "Customer was charged twice.\n\nPlease refund one charge.",
    "priority": "high",
    "tags": ["refund", "billing"],
}


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(user.encode()).decode()


async def approved(registry: ToolRegistry, tool_id: str, arguments: dict[str, Any]) -> Any:
    return await registry.invoke(tool_id, arguments, caller=granted(registry), approved=True)


@pytest.fixture
def on_zendesk(zendesk: Zendesk, operator_allows: Any) -> ToolRegistry:
    operator_allows(zendesk.server.url)
    return registry_for({"zendesk": zendesk_settings(zendesk.server.url)})


@pytest.fixture
def on_jira(jira: Jira, operator_allows: Any) -> ToolRegistry:
    operator_allows(jira.server.url)
    return registry_for({"jira": jira_settings(jira.server.url)})


async def test_zendesk_create_and_update(on_zendesk: ToolRegistry, zendesk: Zendesk) -> None:
    created = await approved(on_zendesk, "create_ticket", NEW_TICKET)
    assert created.ok, created
    assert created.output == {
        "system": "zendesk",
        "id": "35436",
        "url": f"{zendesk.server.url}/agent/tickets/35436",
        "status": "new",
    }
    sent = zendesk.seen[0]
    assert (sent.method, sent.path) == ("POST", "/api/v2/tickets.json")
    assert sent.headers["authorization"] == basic(
        f"{ZENDESK_EMAIL}/token:{SECRETS['ZENDESK_TOKEN']}"
    )
    assert sent.body == {
        "ticket": {
            "subject": NEW_TICKET["subject"],
            "comment": {"body": NEW_TICKET["description"]},
            "priority": "high",
            "tags": ["refund", "billing"],
        }
    }
    updated = await approved(
        on_zendesk,
        "update_ticket",
        {"ticket_id": "35436", "comment": "Refund issued.", "status": "solved", "public": True},
    )
    assert updated.ok, updated
    assert updated.output["status"] == "solved"
    put = zendesk.seen[1]
    assert (put.method, put.path) == ("PUT", "/api/v2/tickets/35436.json")
    assert put.body == {
        "ticket": {"comment": {"body": "Refund issued.", "public": True}, "status": "solved"}
    }
    assert zendesk.tickets[35436]["status"] == "solved"


async def test_zendesk_answers_become_outcomes(
    on_zendesk: ToolRegistry, zendesk: Zendesk, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = await approved(on_zendesk, "update_ticket", {"ticket_id": "999", "comment": "x"})
    assert missing.status == "error"
    assert "HTTP 404" in (missing.error or "")
    assert "RecordNotFound" in (missing.error or "")
    jira_key = await approved(on_zendesk, "update_ticket", {"ticket_id": "SUP-1", "comment": "x"})
    assert jira_key.status == "error"
    assert "not a Zendesk ticket id" in (jira_key.error or "")
    monkeypatch.setenv("ZENDESK_TOKEN", "revoked")
    refused = await approved(on_zendesk, "create_ticket", NEW_TICKET)
    assert refused.status == "error"
    assert "HTTP 401" in (refused.error or "")
    assert len(zendesk.seen) == 2
    assert zendesk.tickets == {}


async def test_ticket_calls_need_approval_and_valid_arguments(
    on_zendesk: ToolRegistry, zendesk: Zendesk
) -> None:
    proposed = await on_zendesk.invoke("create_ticket", NEW_TICKET, caller=granted(on_zendesk))
    assert proposed.status == "needs_approval"
    read_only = await on_zendesk.invoke(
        "create_ticket", NEW_TICKET, caller=granted(on_zendesk, "read"), approved=True
    )
    assert read_only.status == "denied"
    for arguments, field in (
        ({**NEW_TICKET, "subject": ""}, "$.subject"),
        ({key: v for key, v in NEW_TICKET.items() if key != "description"}, "$.description"),
        ({**NEW_TICKET, "priority": "asap"}, "$.priority"),
        ({**NEW_TICKET, "tags": ["has space"]}, "$.tags[0]"),
        ({**NEW_TICKET, "system": "jira"}, "system"),  # one system configured: no such argument
    ):
        outcome = await approved(on_zendesk, "create_ticket", arguments)
        assert outcome.status == "invalid_arguments", arguments
        assert field in (outcome.error or "")
    nothing = await approved(on_zendesk, "update_ticket", {"ticket_id": "35436"})
    assert nothing.status == "invalid_arguments"  # an update must change something
    assert zendesk.seen == []


async def test_jira_create_and_update(on_jira: ToolRegistry, jira: Jira) -> None:
    created = await approved(on_jira, "create_ticket", NEW_TICKET)
    assert created.ok, created
    assert created.output == {
        "system": "jira",
        "id": "10000",
        "key": "SUP-1",
        "url": f"{jira.server.url}/browse/SUP-1",
    }
    sent = jira.seen[0]
    assert (sent.method, sent.path) == ("POST", "/rest/api/3/issue")
    assert sent.headers["authorization"] == basic(f"{JIRA_EMAIL}:{SECRETS['JIRA_TOKEN']}")
    fields = sent.body["fields"]
    assert fields["project"] == {"key": "SUP"}
    assert fields["summary"] == NEW_TICKET["subject"]
    assert fields["issuetype"] == {"name": "Task"}
    assert fields["priority"] == {"name": "High"}
    assert fields["labels"] == ["refund", "billing"]
    assert is_adf(fields["description"])
    assert [p["content"][0]["text"] for p in fields["description"]["content"]] == [
        "Customer was charged twice.",
        "Please refund one charge.",
    ]
    updated = await approved(
        on_jira, "update_ticket", {"ticket_id": "SUP-1", "comment": "Refunded.", "priority": "low"}
    )
    assert updated.ok, updated
    put = jira.seen[1]
    assert (put.method, put.path) == ("PUT", "/rest/api/3/issue/SUP-1")
    assert put.body["fields"] == {"priority": {"name": "Low"}}
    assert is_adf(put.body["update"]["comment"][0]["add"]["body"])
    assert jira.issues["SUP-1"]["priority"] == {"name": "Low"}


async def test_jira_errors_are_outcomes(on_jira: ToolRegistry, jira: Jira) -> None:
    missing = await approved(on_jira, "update_ticket", {"ticket_id": "SUP-77", "comment": "x"})
    assert missing.status == "error"
    assert "HTTP 404" in (missing.error or "")
    assert "does not exist" in (missing.error or "")
    status = await approved(on_jira, "update_ticket", {"ticket_id": "SUP-1", "status": "solved"})
    assert status.status == "error"
    assert "transitions" in (status.error or "")
    assert len(jira.seen) == 1


async def test_both_systems_configured_the_call_says_which(
    zendesk: Zendesk, jira: Jira, operator_allows: Any
) -> None:
    operator_allows(zendesk.server.url, jira.server.url)
    registry = registry_for(
        {"zendesk": zendesk_settings(zendesk.server.url), "jira": jira_settings(jira.server.url)}
    )
    unsaid = await approved(registry, "create_ticket", NEW_TICKET)
    assert unsaid.status == "error"
    assert "jira or zendesk" in (unsaid.error or "")
    to_jira = await approved(registry, "create_ticket", {**NEW_TICKET, "system": "jira"})
    to_zendesk = await approved(registry, "create_ticket", {**NEW_TICKET, "system": "zendesk"})
    assert (to_jira.output["system"], to_zendesk.output["system"]) == ("jira", "zendesk")
    assert len(jira.issues) == 1
    assert len(zendesk.tickets) == 1


async def test_add_tags_keeps_the_zendesk_tickets_own_tags(
    on_zendesk: ToolRegistry, zendesk: Zendesk
) -> None:
    """``add_tags`` adds (Zendesk ``additional_tags``); ``tags`` would replace them."""
    await approved(on_zendesk, "create_ticket", NEW_TICKET)
    added = await approved(
        on_zendesk, "update_ticket", {"ticket_id": "35436", "add_tags": ["queue_billing"]}
    )
    assert added.ok, added
    assert zendesk.seen[-1].body == {"ticket": {"additional_tags": ["queue_billing"]}}
    assert zendesk.tickets[35436]["tags"] == ["refund", "billing", "queue_billing"]


async def test_add_tags_keeps_the_jira_issues_own_labels(on_jira: ToolRegistry, jira: Jira) -> None:
    """``add_tags`` adds labels (``update.labels[].add``); ``tags`` would replace them."""
    await approved(on_jira, "create_ticket", NEW_TICKET)
    labelled = await approved(
        on_jira, "update_ticket", {"ticket_id": "SUP-1", "add_tags": ["queue_billing"]}
    )
    assert labelled.ok, labelled
    assert jira.seen[-1].body == {"fields": {}, "update": {"labels": [{"add": "queue_billing"}]}}
    assert jira.issues["SUP-1"]["labels"] == ["refund", "billing", "queue_billing"]
    spaced = await approved(on_jira, "update_ticket", {"ticket_id": "SUP-1", "add_tags": ["a b"]})
    assert spaced.status == "invalid_arguments"
