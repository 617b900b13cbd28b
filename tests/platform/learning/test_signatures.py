"""Webhook signatures of every provider, computed independently of our code (SPEC 10, 14).

Slack's with ``slack_sdk.signature.SignatureVerifier`` (Slack's client library), Zendesk's,
Jira's and the generic scheme by their documented formulas in ``conftest.sign``. Valid at
``now-299 s`` → 2xx; ``now-301 s`` → 401; one changed byte → 401; another tenant's secret
→ 401; and every 401 stores nothing and enqueues nothing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.test import TestCase
from slack_sdk.signature import SignatureVerifier

from learning import activity
from tests.platform.api.conftest import Persona
from tests.platform.api.test_bad_input import assert_error, nothing_written
from tests.platform.learning.conftest import (
    PROVIDERS,
    Sender,
    make_sender,
    sign,
    stream_length,
    ticket_payload,
)

TIMESTAMPED = ("slack", "zendesk", "generic")


def _celery_queue_lengths() -> dict[str, int]:
    return {q: int(activity.client().llen(q)) for q in ("learning", "webhooks", "runs")}


@contextmanager
def nothing_stored_or_enqueued(*personas: Persona) -> Iterator[None]:
    """No row of the tenants changed, no commit hook scheduled, no stream entry, no task."""
    queues = _celery_queue_lengths()
    streams = [stream_length(p) for p in personas]
    with (
        nothing_written(*(p.tenant for p in personas)),
        TestCase.captureOnCommitCallbacks(execute=True) as callbacks,
    ):
        yield
    assert callbacks == [], "a refused delivery scheduled work for its commit"
    assert [stream_length(p) for p in personas] == streams, "a refused delivery was published"
    assert _celery_queue_lengths() == queues, "a refused delivery enqueued work"


def assert_401(response: Any) -> dict[str, Any]:
    body = assert_error(response, 401, "authentication_failed")
    assert body["detail"] == "Invalid or missing webhook signature."
    return body


@pytest.fixture(params=PROVIDERS)
def sender(request: pytest.FixtureRequest, owner: Persona) -> Sender:
    return make_sender(owner, request.param)


@pytest.mark.parametrize("provider", TIMESTAMPED)
def test_a_timestamp_299_s_old_is_accepted_301_s_is_refused(owner: Persona, provider: str) -> None:
    sender = make_sender(owner, provider)
    payload = ticket_payload(provider)
    now = time.time()
    accepted = sender.deliver(payload, at=math.ceil(now) - 299, delivery_id="fresh")
    assert accepted.status_code == 202, accepted.content
    stale_payload = ticket_payload(provider, ticket="2002")
    with nothing_stored_or_enqueued(owner):
        assert_401(sender.deliver(stale_payload, at=math.floor(now) - 301, delivery_id="stale"))
        # Clocks can be ahead too: the window applies both ways.
        assert_401(sender.deliver(stale_payload, at=math.ceil(now) + 302, delivery_id="future"))
    assert (
        sender.deliver(stale_payload, at=math.ceil(now) + 298, delivery_id="ahead").status_code
        == 202
    )


def test_our_slack_window_is_slacks_own(owner: Persona) -> None:
    """Slack's client library agrees with our decision on both sides of the window."""
    sender = make_sender(owner, "slack")
    verifier = SignatureVerifier(sender.secret)
    body = json.dumps(ticket_payload("slack")).encode()
    now = time.time()
    for at, valid in ((math.ceil(now) - 299, True), (math.floor(now) - 301, False)):
        headers = sign("slack", sender.secret, body, at=at)
        assert verifier.is_valid_request(body, headers) is valid
        response = sender.client.post(
            sender.path, body, content_type="application/json", headers=headers
        )
        assert (response.status_code == 202) is valid, response.content


def test_one_changed_byte_is_refused(owner: Persona, sender: Sender) -> None:
    body = json.dumps(ticket_payload(sender.provider)).encode()
    headers = sign(sender.provider, sender.secret, body)
    tampered = body.replace(b"charged twice", b"charged thrice", 1)
    flipped = bytearray(body)
    flipped[len(flipped) // 2] ^= 0x01  # exactly one byte, one bit
    with nothing_stored_or_enqueued(owner):
        for sent in (bytes(flipped), tampered):
            response = sender.client.post(
                sender.path, sent, content_type="application/json", headers=headers
            )
            assert_401(response)
    # Control: the untouched body is accepted, published and a drain is scheduled.
    ok = sender.deliver(body)
    assert ok.status_code == 202, ok.content
    assert len(sender.on_commit) == 1
    assert stream_length(owner) == 1


def test_another_tenants_secret_is_refused(owner: Persona, other: Persona, sender: Sender) -> None:
    """Each tenant's endpoint accepts only its own secret, in both directions."""
    theirs = make_sender(other, sender.provider)
    payload = ticket_payload(sender.provider)
    with nothing_stored_or_enqueued(owner, other):
        assert_401(sender.deliver(payload, secret=theirs.secret))
        assert_401(theirs.deliver(payload, secret=sender.secret))
        # Their (valid) signature replayed against our endpoint id.
        assert_401(theirs.deliver(payload, path=sender.path))
    assert theirs.deliver(payload).status_code == 202


def test_missing_or_malformed_signatures_are_refused(owner: Persona, sender: Sender) -> None:
    body = json.dumps(ticket_payload(sender.provider)).encode()
    headers = sign(sender.provider, sender.secret, body)
    signature_header = {
        "slack": "X-Slack-Signature",
        "zendesk": "X-Zendesk-Webhook-Signature",
        "jira": "X-Hub-Signature",
        "generic": "X-AgentFlow-Signature",
    }[sender.provider]
    variants = [
        {k: v for k, v in headers.items() if k != signature_header},
        {**headers, signature_header: ""},
        {**headers, signature_header: headers[signature_header].upper()},
        {**headers, signature_header: "sha256=" + "0" * 64},
        {**headers, signature_header: "v0=\u00e9\u00e9"},
    ]
    with nothing_stored_or_enqueued(owner):
        for variant in variants:
            response = sender.client.post(
                sender.path, body, content_type="application/json", headers=variant
            )
            assert_401(response)


def test_unknown_endpoints_look_like_bad_signatures(owner: Persona, sender: Sender) -> None:
    """No existence oracle: a missing endpoint id, an endpoint of another provider and a bad
    signature on a real endpoint get the same 401 (apart from the timestamp)."""
    payload = ticket_payload(sender.provider)
    other_provider = next(p for p in PROVIDERS if p != sender.provider)
    with nothing_stored_or_enqueued(owner):
        bad_signature = sender.deliver(payload, secret="x" * 32)
        missing = sender.deliver(
            payload, path=f"/api/v1/webhooks/{sender.provider}/{'0' * 8}-0000-4000-8000-{'0' * 12}"
        )
        wrong_provider = sender.deliver(
            payload, path=f"/api/v1/webhooks/{other_provider}/{sender.endpoint_id}"
        )
    bodies = []
    for response in (bad_signature, missing, wrong_provider):
        body = assert_401(response)
        bodies.append({k: v for k, v in body.items() if k not in ("timestamp", "correlation_id")})
    assert bodies[0] == bodies[1] == bodies[2]


def test_a_suspended_tenants_webhooks_are_refused(owner: Persona, sender: Sender) -> None:
    from tenants.models import TenantStatus

    owner.tenant.status = TenantStatus.SUSPENDED
    owner.tenant.save()
    with nothing_stored_or_enqueued(owner):
        assert_error(sender.deliver(ticket_payload(sender.provider)), 403, "tenant_inactive")


def test_jira_has_no_window_but_a_replay_is_a_duplicate(owner: Persona) -> None:
    """Jira signs no timestamp: an old delivery still verifies, and its identifier is the
    replay defence (the same identifier again is acknowledged, not stored again)."""
    sender = make_sender(owner, "jira")
    payload = ticket_payload("jira")
    first = sender.deliver(payload, at=time.time() - 3 * 86400, delivery_id="jira-1")
    assert first.status_code == 202
    replay = sender.deliver(payload, delivery_id="jira-1")
    assert replay.status_code == 200
    assert replay.json() == {"event_id": first.json()["event_id"], "duplicate": True}
