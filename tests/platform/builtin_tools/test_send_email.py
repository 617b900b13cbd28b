"""``send_email`` through Django's mail backend (locmem in tests, as Django's test runner sets
it): recipients limited to the allowed domains, approval needed, no header injection."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import mail

from agentflow.kernel.tools import ToolRegistry
from tests.platform.builtin_tools.conftest import granted, registry_for

MESSAGE = {
    "to": ["jane@acme.example"],
    "subject": "Your refund",
    "body": "Hello Jane,\nyour refund is on its way.",
}


@pytest.fixture
def mailer(settings: Any) -> ToolRegistry:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    mail.outbox = []
    return registry_for(
        {
            "send_email": {
                "from_address": "help@acme.example",
                "allowed_domains": ["acme.example", "Partner.Example"],
                "max_recipients": 3,
            }
        }
    )


async def send(registry: ToolRegistry, arguments: dict[str, Any]) -> Any:
    return await registry.invoke("send_email", arguments, caller=granted(registry), approved=True)


async def test_an_approved_email_is_sent_through_the_mail_backend(mailer: ToolRegistry) -> None:
    proposed = await mailer.invoke("send_email", MESSAGE, caller=granted(mailer))
    assert proposed.status == "needs_approval"
    assert mail.outbox == []
    outcome = await send(
        mailer, {**MESSAGE, "cc": ["ops@eu.partner.example"], "reply_to": "help@acme.example"}
    )
    assert outcome.ok, outcome
    assert outcome.output == {
        "sent": True,
        "to": ["jane@acme.example"],
        "cc": ["ops@eu.partner.example"],
    }
    [message] = mail.outbox
    assert message.from_email == "help@acme.example"
    assert message.to == ["jane@acme.example"]
    assert message.cc == ["ops@eu.partner.example"]
    assert message.subject == "Your refund"
    assert message.body == MESSAGE["body"]
    assert message.reply_to == ["help@acme.example"]


async def test_recipients_outside_the_allowed_domains_are_refused(mailer: ToolRegistry) -> None:
    for recipients, says in (
        (["jane@evil.example"], "not at an allowed domain"),
        (["jane@acme.example.evil.io"], "not at an allowed domain"),
        (["jane@notacme.example"], "not at an allowed domain"),
        (["a@acme.example", "b@acme.example", "c@acme.example", "d@acme.example"], "at most 3"),
        (["jane@@acme.example"], "not an email address"),
    ):
        outcome = await send(mailer, {**MESSAGE, "to": recipients})
        assert outcome.status == "error", recipients
        assert says in (outcome.error or "")
    elsewhere = await send(mailer, {**MESSAGE, "reply_to": "refunds@evil.example"})
    assert elsewhere.status == "error"
    assert "'refunds@evil.example' is not at an allowed domain" in (elsewhere.error or "")
    assert mail.outbox == []


async def test_email_arguments_are_checked(mailer: ToolRegistry) -> None:
    for arguments, field in (
        ({**MESSAGE, "subject": "Hi\r\nBcc: all@evil.example"}, "$.subject"),
        ({**MESSAGE, "to": []}, "$.to"),
        ({**MESSAGE, "to": ["Jane <jane@acme.example>"]}, "$.to[0]"),
        ({**MESSAGE, "from": "ceo@acme.example"}, "from"),
        ({key: v for key, v in MESSAGE.items() if key != "body"}, "$.body"),
    ):
        outcome = await send(mailer, arguments)
        assert outcome.status == "invalid_arguments", arguments
        assert field in (outcome.error or "")
    assert mail.outbox == []
