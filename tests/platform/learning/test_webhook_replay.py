"""Replays of signed deliveries under a new delivery id (issue 13, item 4).

Delivery ids (``X-Zendesk-Webhook-Invocation-Id``, ``X-Atlassian-Webhook-Identifier``,
``X-AgentFlow-Delivery``) are not signed: anyone who saw one delivery could send its body,
signature and timestamp again with a new id. What the signature covers is the dedup key
too, so such a copy is a duplicate: one event, one run. Slack's ``event_id`` is inside the
signed body and stays the dedup it was.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connections
from django.utils import timezone

from agentflow.models import Agent, Run
from learning import processing
from learning.models import ActivityEvent, WebhookDelivery, WebhookSignedContent
from tests.platform.api.conftest import Persona
from tests.platform.learning.conftest import make_sender, stored, stream_length, ticket_payload
from tests.platform.learning.test_deliveries import KINDS, _rule
from tests.platform.learning.test_signatures import assert_401, nothing_stored_or_enqueued

UNSIGNED_IDS = ("zendesk", "jira", "generic")


def _runs(persona: Persona) -> int:
    return Run.unscoped.filter(tenant=persona.tenant).count()


@pytest.mark.parametrize("provider", UNSIGNED_IDS)
def test_the_same_signed_content_under_a_new_delivery_id_is_a_duplicate(
    owner: Persona, agent: Agent, provider: str
) -> None:
    _rule(owner, agent, KINDS[provider])
    sender = make_sender(owner, provider)
    payload = ticket_payload(provider)
    at = int(time.time())
    first = sender.deliver(payload, at=at, delivery_id="inv-1")
    assert first.status_code == 202, first.content
    event_id = first.json()["event_id"]
    # The captured body, signature and timestamp, sent again under ids of the attacker's choice.
    for forged in ("inv-2", "inv-3"):
        replay = sender.deliver(payload, at=at, delivery_id=forged)
        assert replay.status_code == 200, replay.content
        assert replay.json() == {"event_id": event_id, "duplicate": True}
        assert sender.on_commit == [], "a replay scheduled work"
    assert stored(owner) == (1, 1)
    assert WebhookDelivery.unscoped.get(tenant=owner.tenant).attempts == 3
    assert stream_length(owner) == 1

    assert processing.drain(owner.tenant.pk) == 1
    assert _runs(owner) == 1

    # A genuinely new delivery (new content, new id) still goes through and starts its run.
    fresh = sender.deliver(ticket_payload(provider, ticket="2002"), delivery_id="inv-4")
    assert fresh.status_code == 202, fresh.content
    assert fresh.json()["event_id"] != event_id
    assert processing.drain(owner.tenant.pk) == 1
    assert stored(owner) == (2, 2)
    assert _runs(owner) == 2


def test_slack_replays_are_still_duplicates(owner: Persona, agent: Agent) -> None:
    """Regression: Slack's dedup (the signed ``event_id``) holds, re-signed or byte-identical."""
    _rule(owner, agent, KINDS["slack"])
    sender = make_sender(owner, "slack")
    payload = ticket_payload("slack")
    at = int(time.time())
    first = sender.deliver(payload, at=at)
    assert first.status_code == 202, first.content
    event_id = first.json()["event_id"]
    for copy_at, retry in ((at, None), (at - 5, 1)):
        copy = sender.deliver(payload, at=copy_at, retry=retry)
        assert copy.status_code == 200, copy.content
        assert copy.json() == {"event_id": event_id, "duplicate": True}
    assert stored(owner) == (1, 1)
    assert processing.drain(owner.tenant.pk) == 1
    assert _runs(owner) == 1
    fresh = sender.deliver(ticket_payload("slack", ticket="2002"), at=at)
    assert fresh.status_code == 202, fresh.content
    assert stored(owner) == (2, 2)


@pytest.mark.parametrize("provider", ["zendesk", "generic"])
def test_a_resigned_retry_replayed_under_a_new_id_is_a_duplicate(
    owner: Persona, provider: str
) -> None:
    """A provider's retry carries a fresh signature of its own: that content is remembered
    as well, so replaying the retry (not only the first copy) under a new id is caught."""
    sender = make_sender(owner, provider)
    payload = ticket_payload(provider)
    now = int(time.time())
    first = sender.deliver(payload, at=now - 60, delivery_id="inv-1")
    assert first.status_code == 202, first.content
    retry = sender.deliver(payload, at=now, delivery_id="inv-1", retry=1)
    assert retry.json() == {"event_id": first.json()["event_id"], "duplicate": True}
    replay = sender.deliver(payload, at=now, delivery_id="inv-9", retry=1)
    assert replay.status_code == 200, replay.content
    assert replay.json() == {"event_id": first.json()["event_id"], "duplicate": True}
    assert stored(owner) == (1, 1)
    assert WebhookSignedContent.unscoped.filter(tenant=owner.tenant).count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("provider", UNSIGNED_IDS)
def test_concurrent_replays_under_new_ids_store_one_event(owner: Persona, provider: str) -> None:
    """Five copies of one signed delivery at once, each with its own id: the unique index
    on the signed content decides, every copy is acknowledged, one is stored."""
    sender = make_sender(owner, provider)
    payload = ticket_payload(provider)
    at = int(time.time())
    barrier = threading.Barrier(5)
    answers: list[tuple[int, str]] = []

    def send(index: int) -> None:
        try:
            barrier.wait()
            response = sender.deliver(payload, at=at, delivery_id=f"forged-{index}")
            answers.append((response.status_code, response.json()["event_id"]))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(status for status, _ in answers) == [200, 200, 200, 200, 202]
    assert len({event_id for _, event_id in answers}) == 1
    assert stored(owner) == (1, 1)
    assert WebhookSignedContent.unscoped.filter(tenant=owner.tenant).count() == 1


def test_the_same_signed_content_in_another_tenant_is_its_own(
    owner: Persona, other: Persona
) -> None:
    """The digest is unique per tenant: two tenants that happen to share a secret never see
    each other's event ids in a duplicate answer."""
    shared = "s" * 32
    ours, theirs = make_sender(owner, "generic", shared), make_sender(other, "generic", shared)
    payload = ticket_payload("generic")
    at = int(time.time())
    mine = ours.deliver(payload, at=at, delivery_id="same")
    yours = theirs.deliver(payload, at=at, delivery_id="same")
    assert (mine.status_code, yours.status_code) == (202, 202)
    assert mine.json()["event_id"] != yours.json()["event_id"]
    assert stored(owner) == stored(other) == (1, 1)


def _jira_event(at: float, ticket: str = "1001") -> dict[str, Any]:
    return {"timestamp": int(at * 1000), **ticket_payload("jira", ticket=ticket)}


def test_jira_bodies_older_than_the_replay_retention_are_refused(
    owner: Persona, settings: Any
) -> None:
    """Jira signs no timestamp header, but its bodies carry ``timestamp`` (epoch ms): a body
    older than the digests are kept (or from the future) could not be recognised as a
    replay, so it is refused like a stale signature."""
    settings.AGENTFLOW = {**settings.AGENTFLOW, "WEBHOOK_REPLAY_RETENTION_SECONDS": 3600}
    sender = make_sender(owner, "jira")
    now = time.time()
    with nothing_stored_or_enqueued(owner):
        assert_401(sender.deliver(_jira_event(now - 3602), delivery_id="old"))
        assert_401(sender.deliver(_jira_event(now + 302), delivery_id="ahead"))
        for unreal in (b'{"timestamp": Infinity}', b'{"timestamp": 1' + b"0" * 400 + b"}"):
            assert_401(sender.deliver(unreal, delivery_id="unreal"))
    # A 30-minute-late retry (Jira's own retry horizon) is inside the retention.
    late = sender.deliver(_jira_event(now - 1800), delivery_id="late")
    assert late.status_code == 202, late.content
    assert sender.deliver(_jira_event(now - 1800), delivery_id="late-2").status_code == 200
    assert stored(owner) == (1, 1)


def test_digests_are_forgotten_after_the_retention_not_before(
    owner: Persona, settings: Any
) -> None:
    """Kept for the retention plus twice the timestamp tolerance; older ones are deleted by
    later deliveries (a bounded batch each), so the table holds about one retention."""
    settings.AGENTFLOW = {
        **settings.AGENTFLOW,
        "WEBHOOK_REPLAY_RETENTION_SECONDS": 3600,
        "WEBHOOK_TIMESTAMP_TOLERANCE_SECONDS": 300,
    }
    sender = make_sender(owner, "generic")
    for ticket in ("1", "2"):
        sent = sender.deliver(ticket_payload("generic", ticket=ticket), delivery_id=ticket)
        assert sent.status_code == 202
    rows = WebhookSignedContent.unscoped.filter(tenant=owner.tenant)
    old, recent = rows.order_by("id")
    rows.filter(pk=old.pk).update(seen_at=timezone.now() - timedelta(seconds=4201))
    rows.filter(pk=recent.pk).update(seen_at=timezone.now() - timedelta(seconds=4100))
    assert sender.deliver(ticket_payload("generic", ticket="3"), delivery_id="3").status_code == 202
    assert not rows.filter(pk=old.pk).exists()
    assert rows.filter(pk=recent.pk).exists()
    assert rows.count() == 2
    assert ActivityEvent.unscoped.filter(tenant=owner.tenant).count() == 3
