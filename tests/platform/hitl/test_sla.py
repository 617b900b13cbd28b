"""SLA deadlines, breaches, escalation policies, expiry and notifications, with a controlled
clock (``sla.sweep(now)``), Django's locmem mail outbox, a local HTTP server standing in for
Slack's incoming webhook and a real Celery worker sending the notifications."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connections

from agentflow import orchestration
from agentflow.core.conf import setting_dict
from agentflow.models import Message, Run
from agentflow.tasks import sla_sweep_task
from governance.audit import Actor
from hitl import sla
from hitl.models import EscalationPolicy, HITLEvent, HITLRequest, ReviewSettings
from hitl.services import set_availability
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, make_persona
from tests.platform.hitl.conftest import (
    ALWAYS_REVIEW,
    Member,
    escalated_run,
    eventually,
    review_of,
)

pytestmark = pytest.mark.django_db(transaction=True)
SECOND = timedelta(seconds=1)
ACTOR = Actor.system("tests")


def sweep(now: datetime, **hooks: Any) -> sla.SweepReport:
    """One SLA sweep: the run orchestration resumes the runs of requests that expire."""
    return sla.sweep(now, deliver=orchestration.deliver_expired_review, **hooks)


class SlackStandIn:
    """Records every POST; answers with the queued statuses, then 200."""

    def __init__(self) -> None:
        self.posts: list[tuple[int, dict[str, Any]]] = []
        self.statuses: list[int] = []
        self.url = ""
        self._lock = threading.Lock()

    def answer(self, body: dict[str, Any]) -> int:
        with self._lock:
            status = self.statuses.pop(0) if self.statuses else 200
            self.posts.append((status, body))
            return status

    def delivered(self) -> list[dict[str, Any]]:
        return [body for status, body in self.posts if status == 200]


@pytest.fixture
def slack(settings: Any) -> Iterator[SlackStandIn]:
    stand_in = SlackStandIn()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status = stand_in.answer(body)
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"error")

        def log_message(self, *args: Any) -> None:
            """Quiet: the test reads what arrived, not the server's access log."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/secret"
    settings.AGENTFLOW = {
        **settings.AGENTFLOW,
        "HITL_SLACK_WEBHOOK_URL": stand_in.url,
        "HITL_NOTIFY_RETRY_SECONDS": 0.05,
        "HITL_NOTIFY_MAX_RETRIES": 2,
    }
    yield stand_in
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def _available(*members: Member) -> None:
    for member in members:
        set_availability(
            actor=ACTOR, tenant_id=member.tenant.pk, user_id=member.user.pk, available=True
        )


def _history(request: HITLRequest) -> list[str]:
    return list(
        HITLEvent.unscoped.filter(request=request)
        .order_by("at", "id")
        .values_list("action", flat=True)
    )


def _settle(seconds: float = 0.5) -> None:
    """Give a worker time to send anything it (wrongly) still would."""
    time.sleep(seconds)


# --- deadlines -----------------------------------------------------------------------------


def test_deadline_comes_from_priority_and_tier_with_tenant_and_agent_overrides(
    owner: Persona, agent: Any
) -> None:
    table: dict[str, dict[str, int]] = setting_dict("HITL_SLA_MINUTES")
    critical = review_of(escalated_run(agent, priority="critical"))
    assert critical.priority == "critical"
    assert critical.sla_deadline - critical.created_at == timedelta(
        minutes=table["professional"]["critical"]
    )
    assert table["professional"]["critical"] == 15  # SPEC 6's example

    with tenant_scope(owner.tenant.pk):
        ReviewSettings.objects.create(sla_minutes={"low": 7})
    low = review_of(escalated_run(agent, priority="low"))
    assert low.sla_deadline - low.created_at == timedelta(minutes=7)
    with tenant_scope(owner.tenant.pk):
        ReviewSettings.objects.create(agent=agent, sla_minutes={"low": 3})
    lower = review_of(escalated_run(agent, priority="low"))
    assert lower.sla_deadline - lower.created_at == timedelta(minutes=3)

    free = make_persona("Initech", tier="free")
    from tests.platform.api.conftest import make_agent

    free_request = review_of(escalated_run(make_agent(free), priority="critical"))
    assert free_request.sla_deadline - free_request.created_at == timedelta(
        minutes=table["free"]["critical"]
    )


def test_beat_sweeps_at_least_every_minute() -> None:
    entry: dict[str, Any] = django_settings.CELERY_BEAT_SCHEDULE["hitl.sla_sweep"]
    assert entry["task"] == "hitl.sla_sweep"
    assert float(entry["schedule"]) <= 60


# --- breach, escalation, notification ---------------------------------------------------------


def test_breach_escalates_up_the_chain_and_notifies_once(
    owner: Persona,
    agent: Any,
    reviewer: Member,
    operator: Member,
    slack: SlackStandIn,
    mailoutbox: list[Any],
    celery_worker_app: object,
) -> None:
    _available(reviewer)
    request = review_of(escalated_run(agent, priority="high"))
    assert request.assignee_id == reviewer.user.pk
    _available(operator)  # free to take what reviewers cannot
    deadline = request.sla_deadline

    early = sweep(deadline - SECOND)
    assert early.breached == 0
    request.refresh_from_db()
    assert request.breached_at is None

    report = sweep(deadline + SECOND)
    assert (report.breached, report.escalated) == (1, 1)
    request.refresh_from_db()
    assert request.breached_at == deadline + SECOND
    assert request.required_role == "operator"
    assert request.escalation_level == 1
    assert request.status == "assigned"
    assert request.assignee_id == operator.user.pk
    assert request.sla_deadline == deadline + SECOND + timedelta(hours=1)  # high: 60 min
    assert _history(request) == ["queued", "assigned", "breached", "escalated", "assigned"]

    # Sweeping again, and twice at once, finds nothing new to do.
    def again(_: int) -> sla.SweepReport:
        try:
            return sweep(deadline + 2 * SECOND)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=2) as pool:
        repeats = [*pool.map(again, range(2)), sweep(deadline + 3 * SECOND)]
    assert all(r.breached == 0 and r.escalated == 0 for r in repeats)

    eventually(lambda: len(mailoutbox) and slack.delivered(), what="both notifications")
    _settle()
    assert len(mailoutbox) == 1
    email = mailoutbox[0]
    assert email.subject == "[AgentFlow] Escalated to operator: high review request"
    assert sorted(email.to) == ["otto@example.com", "rita@example.com"]
    assert str(request.pk) in email.body
    assert len(slack.posts) == 1
    text = slack.posts[0][1]["text"]
    assert str(request.pk) in text
    assert "escalated" in text
    assert request.question not in text  # no customer text in the shared channel


def test_the_beat_task_sweeps_with_the_real_clock(
    owner: Persona, agent: Any, celery_worker_app: object
) -> None:
    request = review_of(escalated_run(agent))
    past = datetime.now(UTC) - SECOND
    HITLRequest.unscoped.filter(pk=request.pk).update(sla_deadline=past, next_check_at=past)

    sla_sweep_task.delay()

    eventually(
        lambda: HITLRequest.unscoped.filter(pk=request.pk, breached_at__isnull=False).exists(),
        what="the beat task's breach",
    )
    request.refresh_from_db()
    assert request.required_role == "operator"
    assert request.status == "escalated"  # nobody available to take it


def test_a_notify_only_policy_keeps_the_role_and_notifies_that_role(
    owner: Persona,
    agent: Any,
    reviewer: Member,
    slack: SlackStandIn,
    mailoutbox: list[Any],
    celery_worker_app: object,
) -> None:
    with tenant_scope(owner.tenant.pk):
        EscalationPolicy.objects.create(
            name="notify", chain=["reviewer", "operator"], on_breach="notify"
        )
    request = review_of(escalated_run(agent))
    assert sweep(request.sla_deadline + SECOND).breached == 1
    request.refresh_from_db()
    assert (request.required_role, request.status) == ("reviewer", "pending")
    assert request.next_check_at == request.expires_at
    eventually(lambda: len(mailoutbox) and slack.delivered(), what="notifications")
    _settle()
    assert [m.subject for m in mailoutbox] == ["[AgentFlow] SLA breached: medium review request"]
    assert mailoutbox[0].to == ["rita@example.com"]
    assert len(slack.posts) == 1


def test_a_rule_routes_at_queue_time_and_can_notify_then(
    owner: Persona,
    agent: Any,
    reviewer: Member,
    operator: Member,
    mailoutbox: list[Any],
    celery_worker_app: object,
) -> None:
    with tenant_scope(owner.tenant.pk):
        EscalationPolicy.objects.create(
            name="critical humans",
            position=1,
            priorities=["critical"],
            intents=["HUMAN_AGENT"],
            chain=["operator", "owner"],
            notify_on_queue=True,
            notify_slack=False,
        )
    routed = review_of(escalated_run(agent, ALWAYS_REVIEW, priority="critical"))
    ordinary = review_of(escalated_run(agent, ALWAYS_REVIEW, priority="high"))
    assert routed.required_role == "operator"
    assert ordinary.required_role == "reviewer"
    eventually(lambda: mailoutbox, what="the queued notification")
    _settle()
    assert [(m.subject, m.to) for m in mailoutbox] == [
        ("[AgentFlow] New critical review request", ["otto@example.com"])
    ]
    # A reviewer cannot take what the rule gave to operators.
    refused = reviewer.claim(routed.pk)
    assert refused.status_code == 403
    assert operator.claim(routed.pk).status_code == 200


# --- expiry ------------------------------------------------------------------------------------


def test_expired_requests_are_auto_rejected_with_the_handoff(
    owner: Persona, agent: Any, reviewer: Member, mailoutbox: list[Any]
) -> None:
    with tenant_scope(owner.tenant.pk):
        ReviewSettings.objects.create(handoff_message="Our team will email you.")
    run = escalated_run(agent)
    request = review_of(run)
    signalled: list[tuple[str, str]] = []

    def receiver(request: HITLRequest, resumed: bool) -> None:  # the orchestrator's hook
        signalled.append((request.decision, request.status))

    assert request.expires_at is not None
    expires = request.expires_at
    report = sweep(expires + SECOND, on_expired=receiver)

    assert report.expired == 1
    request.refresh_from_db()
    assert request.status == "expired"
    assert request.decision == "reject"
    assert request.decided_by is None
    assert signalled == [("reject", "expired")]
    with tenant_scope(owner.tenant.pk):
        run.refresh_from_db()
        answer = Message.objects.get(run=run, role="assistant").content
    assert run.status == "completed"
    assert answer == "Our team will email you."
    assert run.result is not None
    assert run.result["review"]["status"] == "expired"
    assert reviewer.respond(request.pk, decision="approve").json()["error_type"] == (
        "already_decided"
    )
    assert sweep(expires + 10 * SECOND).due == 0


def test_an_escalate_on_expiry_policy_hands_it_to_the_top_and_stops(
    owner: Persona, agent: Any, mailoutbox: list[Any]
) -> None:
    with tenant_scope(owner.tenant.pk):
        EscalationPolicy.objects.create(
            name="never drop",
            chain=["reviewer", "operator", "owner"],
            on_breach="notify",
            expire_after_minutes=30,
            on_expiry="escalate",
        )
    request = review_of(escalated_run(agent))
    deadline, expires = request.sla_deadline, request.expires_at
    assert expires == deadline + timedelta(minutes=30)

    assert sweep(deadline + SECOND).breached == 1
    assert sweep(expires + SECOND).escalated == 1
    request.refresh_from_db()
    assert (request.required_role, request.escalation_level) == ("owner", 2)
    assert request.status == "escalated"
    assert request.expires_at is None
    late = request.sla_deadline + SECOND
    assert sweep(late).breached == 1  # the owner's own window, notify only
    request.refresh_from_db()
    assert request.next_check_at is None
    assert sweep(late + timedelta(days=30)).due == 0
    assert request.status == "escalated"


def test_a_cancelled_run_closes_its_request_and_decisions_are_refused(
    owner: Persona, agent: Any, reviewer: Member
) -> None:
    run = escalated_run(agent)
    request = review_of(run)
    assert owner.delete(f"/api/v1/runs/{run.pk}").status_code == 200

    refused = reviewer.respond(request.pk, decision="approve")
    assert refused.status_code == 409
    assert refused.json()["error_type"] == "run_not_awaiting_review"
    request.refresh_from_db()
    assert request.status == "pending"  # rolled back with the refused decision

    assert sweep(datetime.now(UTC)).closed_cancelled == 1
    request.refresh_from_db()
    assert request.status == "expired"
    assert request.reason == "The run was cancelled."
    with tenant_scope(owner.tenant.pk):
        assert Run.objects.get(pk=run.pk).status == "cancelled"
        assert not Message.objects.filter(run=run, role="assistant").exists()


# --- notification delivery -----------------------------------------------------------------


def test_slack_errors_are_retried_with_backoff(
    owner: Persona, agent: Any, slack: SlackStandIn, celery_worker_app: object
) -> None:
    slack.statuses = [503, 500]
    request = review_of(escalated_run(agent))
    sweep(request.sla_deadline + SECOND)
    eventually(slack.delivered, what="the third attempt")
    _settle()
    assert [status for status, _ in slack.posts] == [503, 500, 200]


def test_slack_failures_are_logged_and_never_block_the_sweep(
    owner: Persona,
    agent: Any,
    operator: Member,
    slack: SlackStandIn,
    mailoutbox: list[Any],
    celery_worker_app: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    slack.statuses = [500] * 10
    request = review_of(escalated_run(agent))
    started = time.monotonic()
    report = sweep(request.sla_deadline + SECOND)
    assert time.monotonic() - started < 5
    assert report.breached == 1
    eventually(lambda: len(slack.posts) >= 3, what="three attempts")
    _settle()
    assert len(slack.posts) == 3  # the first try and HITL_NOTIFY_MAX_RETRIES=2 retries
    assert len(mailoutbox) == 1  # e-mail went out regardless
    failures = [r.msg for r in caplog.records if r.levelname == "ERROR"]
    assert any(
        isinstance(m, dict) and m["event"] == "hitl.notify_failed" and m["attempts"] == 3
        for m in failures
    ), failures


def test_slack_client_errors_are_not_retried(
    owner: Persona, agent: Any, slack: SlackStandIn, celery_worker_app: object
) -> None:
    slack.statuses = [404]
    request = review_of(escalated_run(agent))
    sweep(request.sla_deadline + SECOND)
    eventually(lambda: slack.posts, what="one attempt")
    _settle()
    assert [status for status, _ in slack.posts] == [404]


def test_without_a_webhook_only_email_is_sent(
    owner: Persona, agent: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hitl import tasks

    settings.AGENTFLOW = {**settings.AGENTFLOW, "HITL_SLACK_WEBHOOK_URL": None}
    sent: list[str] = []
    monkeypatch.setattr(tasks.notify_slack_task, "delay", lambda *a, **k: sent.append("slack"))
    monkeypatch.setattr(tasks.notify_email_task, "delay", lambda *a, **k: sent.append("email"))
    request = review_of(escalated_run(agent))
    assert sweep(request.sla_deadline + SECOND).breached == 1
    assert sent == ["email"]
