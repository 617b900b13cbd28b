"""Accepting deliveries: dedup of provider retries, Slack's challenge, size and payload limits."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from django.db import connections

from agentflow.models import Agent, Run
from learning import processing, services
from learning.models import ActivityEvent, WebhookDelivery
from tests.platform.api.conftest import ACTOR, Persona
from tests.platform.api.test_bad_input import assert_error, nothing_written
from tests.platform.learning.conftest import (
    PROVIDERS,
    make_sender,
    stored,
    stream_length,
    ticket_payload,
)


def _rule(persona: Persona, agent: Agent, kind: str) -> None:
    services.create_rule(
        actor=ACTOR,
        tenant_id=persona.tenant.pk,
        name=f"{kind} to support",
        event_kind=kind,
        agent=agent,
    )


KINDS = {
    "slack": "slack.app_mention",
    "zendesk": "zendesk.ticket.created",
    "jira": "jira.issue_created",
    "generic": "generic.ticket.created",
}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_same_delivery_five_times_is_one_event_and_one_run(
    owner: Persona, agent: Agent, provider: str
) -> None:
    """The provider retries (same delivery id, increasing retry headers, fresh signatures):
    every attempt is acknowledged, one event is stored, and processing starts one run."""
    _rule(owner, agent, KINDS[provider])
    sender = make_sender(owner, provider)
    payload = ticket_payload(provider)
    answers = [
        sender.deliver(payload, delivery_id="inv-77", retry=None if attempt == 0 else attempt)
        for attempt in range(5)
    ]
    assert [a.status_code for a in answers] == [202, 200, 200, 200, 200]
    event_ids = {a.json()["event_id"] for a in answers}
    assert len(event_ids) == 1
    assert [a.json()["duplicate"] for a in answers] == [False, True, True, True, True]
    assert stored(owner) == (1, 1)
    delivery = WebhookDelivery.unscoped.get(tenant=owner.tenant)
    assert delivery.attempts == 5
    assert stream_length(owner) == 1  # published once, on the first commit

    assert processing.drain(owner.tenant.pk) == 1
    assert processing.drain(owner.tenant.pk) == 0
    # Processing the event again (a replay, a claimed duplicate) starts nothing more.
    assert processing.process_event(owner.tenant.pk, event_ids.pop()) == "duplicate"
    runs = Run.unscoped.filter(tenant=owner.tenant)
    assert runs.count() == 1
    event = ActivityEvent.unscoped.get(tenant=owner.tenant)
    assert event.processed_at is not None
    assert event.outcome["rules"][0]["run_id"] == str(runs.get().pk)


@pytest.mark.django_db(transaction=True)
def test_concurrent_copies_of_a_delivery_store_one_event(owner: Persona) -> None:
    """Five copies at the same moment (a provider's parallel retries): the unique
    constraint decides; all are acknowledged, one is stored."""
    sender = make_sender(owner, "generic")
    payload = ticket_payload("generic")
    barrier = threading.Barrier(5)
    statuses: list[int] = []

    def send() -> None:
        try:
            barrier.wait()
            statuses.append(sender.deliver(payload, delivery_id="same").status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=send) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 200, 200, 200, 202]
    assert stored(owner) == (1, 1)


def test_slack_url_verification_is_answered_and_not_stored(owner: Persona) -> None:
    sender = make_sender(owner, "slack")
    challenge = {
        "token": "legacy",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification",
    }
    with nothing_written(owner.tenant):
        response = sender.deliver(challenge)
    assert response.status_code == 200
    assert response.json() == {"challenge": challenge["challenge"]}
    assert stream_length(owner) == 0


def test_slack_slash_commands_arrive_as_forms(owner: Persona) -> None:
    sender = make_sender(owner, "slack")
    form = b"team_id=T1&user_id=U9&command=%2Fsupport&text=my+invoice+is+wrong&trigger_id=t-1"
    response = sender.deliver(form, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 202, response.content
    event = ActivityEvent.unscoped.get(pk=response.json()["event_id"])
    assert event.kind == "slack.command"
    assert event.payload["text"] == "my invoice is wrong"


def test_oversized_bodies_are_413_before_anything_is_stored(owner: Persona, settings: Any) -> None:
    settings.AGENTFLOW = {**settings.AGENTFLOW, "WEBHOOK_MAX_BODY_BYTES": 2000}
    sender = make_sender(owner, "generic")
    big = ticket_payload("generic", text="x" * 3000)
    with nothing_written(owner.tenant):
        assert_error(sender.deliver(big), 413, "payload_too_large")
    assert sender.deliver(ticket_payload("generic")).status_code == 202


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2, 3]", json.dumps({"text": "nul \u0000 inside"}).encode()],
    ids=["malformed", "not-an-object", "nul-character"],
)
def test_authentic_but_unusable_payloads_are_422(owner: Persona, body: bytes) -> None:
    sender = make_sender(owner, "generic")
    with nothing_written(owner.tenant):
        answer = assert_error(sender.deliver(body), 422, "validation_error")
    assert "body" in answer["errors"]
    assert stream_length(owner) == 0


def test_an_accepted_delivery_answers_before_processing(owner: Persona, agent: Agent) -> None:
    """The answer only stores and publishes: no graph, no run until a consumer drains."""
    _rule(owner, agent, "zendesk.ticket.*")
    sender = make_sender(owner, "zendesk")
    response = sender.deliver(ticket_payload("zendesk"))
    assert response.status_code == 202
    event = ActivityEvent.unscoped.get(pk=response.json()["event_id"])
    assert stream_length(owner) == 1  # published on commit
    assert event.processed_at is None
    assert not Run.unscoped.filter(tenant=owner.tenant).exists()
    assert event.kind == "zendesk.ticket.created"
