"""``manage.py demo_traffic`` against the live app: real HTTP, a real worker, the seeded demo."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
from django.core.management import call_command

from agentflow.models import Run
from frontend import demo
from hitl.models import HITLRequest
from tenants.context import tenant_scope

pytestmark = pytest.mark.django_db(transaction=True)


def test_traffic_answers_escalates_follows_up_and_auto_reviews(
    live_url: str, celery_worker_app: object, settings: object, tmp_path: Path
) -> None:
    settings.AGENTFLOW_HOME = tmp_path  # type: ignore[attr-defined]
    seeded = demo.seed_demo(password="demo-pass-123")
    out = io.StringIO()
    call_command(
        "demo_traffic",
        "--url",
        live_url,
        "--count",
        "24",
        "--rate",
        "12",
        "--seed",
        "7",
        "--auto-review",
        "--review-delay",
        "0.2",
        stdout=out,
    )
    lines = out.getvalue().splitlines()
    summary = json.loads(lines[-1])["summary"]
    assert summary["messages"] == 24, out.getvalue()
    assert "errors" not in summary

    with tenant_scope(seeded.tenant.pk):
        runs = list(Run.objects.values_list("user_id", "session_id", "input", "status"))
        reviews = Counter(HITLRequest.objects.values_list("decision", flat=True))
    assert len(runs) == 24
    statuses = Counter(status for *_, status in runs)
    assert statuses["completed"] >= 8, statuses  # answered, and decided reviews completed
    assert len({user for user, *_ in runs}) >= 5, "several customers"
    sessions = Counter(session for _, session, *_ in runs)
    thanked = {session for _, session, text, _ in runs if text in demo_traffic_thanks()}
    assert thanked, "a thank-you follow-up"
    assert all(sessions[session] >= 2 for session in thanked), "follow-ups share the session"
    # Auto-review decided every escalation through the HITL API.
    assert sum(reviews.values()) >= 3, reviews
    assert reviews[""] == 0, reviews
    # Most traffic is answered; requests for a person are answered by the robot reviewer.
    assert "edit" in reviews, reviews
    with tenant_scope(seeded.tenant.pk):
        approved = HITLRequest.objects.filter(decision="approve")
        # Never a draft that is no answer (issue 13, item 9).
        assert all(item.context.get("non_answer") is None for item in approved)


def demo_traffic_thanks() -> tuple[str, ...]:
    from frontend.management.commands.demo_traffic import THANKS

    return THANKS
