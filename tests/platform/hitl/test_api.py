"""The queue API: filters, sorting, envelope, detail, history, reviewers, SLA figures, manual
escalation, and who may do what (members by role, API keys by scope)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from agentflow.models import AgentSession, Message, Run
from governance.audit import Actor
from hitl.models import HITLRequest
from hitl.services import set_availability
from tenants import services as tenant_services
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, Persona
from tests.platform.hitl.conftest import (
    ALWAYS_REVIEW,
    QUEUE,
    Member,
    escalated_run,
    make_member,
    review_of,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content[:300]
    return [item["id"] for item in response.json()["results"]]


def _key(owner: Persona, *scopes: str) -> Persona:
    issued = tenant_services.issue_key(
        actor=ACTOR, tenant=owner.tenant, name="-".join(scopes), scopes=list(scopes)
    )
    return Persona(owner.tenant, issued.plaintext, Client(raise_request_exception=False))


def test_queue_filters_sorts_and_pages(owner: Persona, agent: Any, reviewer: Member) -> None:
    low = review_of(escalated_run(agent, priority="low"))
    critical = review_of(escalated_run(agent, priority="critical"))
    high = review_of(escalated_run(agent, ALWAYS_REVIEW, priority="high"))
    medium = review_of(escalated_run(agent, priority="medium"))
    assert reviewer.claim(high.pk).status_code == 200
    assert reviewer.respond(medium.pk, decision="approve").status_code == 200
    HITLRequest.unscoped.filter(pk=low.pk).update(breached_at=datetime.now(UTC))

    # Default: open requests, most urgent first.
    assert _ids(owner.get(QUEUE)) == [str(critical.pk), str(high.pk), str(low.pk)]
    assert _ids(owner.get(f"{QUEUE}?status=all")) == [
        str(critical.pk),
        str(high.pk),
        str(medium.pk),
        str(low.pk),
    ]
    assert _ids(owner.get(f"{QUEUE}?status=approved")) == [str(medium.pk)]
    assert _ids(owner.get(f"{QUEUE}?status=pending,assigned&priority=high,low")) == [
        str(high.pk),
        str(low.pk),
    ]
    assert _ids(reviewer.get(QUEUE, assignee="me")) == [str(high.pk)]
    assert _ids(owner.get(f"{QUEUE}?assignee={reviewer.user.pk}")) == [str(high.pk)]
    assert _ids(owner.get(f"{QUEUE}?assignee=none")) == [str(critical.pk), str(low.pk)]
    assert _ids(owner.get(f"{QUEUE}?breached=true")) == [str(low.pk)]
    assert _ids(owner.get(f"{QUEUE}?breached=false")) == [str(critical.pk), str(high.pk)]
    assert _ids(owner.get(f"{QUEUE}?kind=always_review")) == [str(high.pk)]
    assert _ids(owner.get(f"{QUEUE}?sort_by=created_at&sort_order=asc")) == [
        str(low.pk),
        str(critical.pk),
        str(high.pk),
    ]
    assert _ids(owner.get(f"{QUEUE}?sort_by=priority&sort_order=asc")) == [
        str(low.pk),
        str(high.pk),
        str(critical.pk),
    ]
    page = owner.get(f"{QUEUE}?limit=2&offset=1").json()
    assert page["total"] == 3
    assert (page["limit"], page["offset"], page["has_more"]) == (2, 1, False)
    assert [i["id"] for i in page["results"]] == [str(high.pk), str(low.pk)]


def test_detail_and_history(owner: Persona, agent: Any, reviewer: Member) -> None:
    request = review_of(escalated_run(agent))
    reviewer.claim(request.pk)
    reviewer.respond(request.pk, decision="edit", response="Here is how.")
    detail = owner.get(f"{QUEUE}/{request.pk}").json()
    assert detail["status"] == "edited"
    assert detail["decision"] == "edit"
    assert detail["response"] == "Here is how."
    assert detail["decided_by"] == {"id": reviewer.user.pk, "username": "rita"}
    assert detail["decided_at"].endswith("Z")
    history = owner.get(f"{QUEUE}/{request.pk}/history").json()
    assert history["total"] == 3
    assert [e["action"] for e in history["results"]] == ["queued", "claimed", "edited"]
    assert history["results"][2]["detail"] == {
        "decision": "edit",
        "reason": "",
        "response": "Here is how.",
    }
    assert history["results"][0]["actor"] == {"type": "system", "id": "agent"}


def test_reviewers_show_role_availability_and_load(
    owner: Persona, agent: Any, reviewer: Member, operator: Member
) -> None:
    make_member(owner.tenant, "vic", "viewer")
    set_availability(
        actor=Actor.system("t"),
        tenant_id=owner.tenant.pk,
        user_id=reviewer.user.pk,
        available=True,
        capacity=3,
    )
    escalated_run(agent)
    listed = owner.get("/api/v1/hitl/reviewers").json()
    assert listed["results"] == [
        {
            "id": operator.user.pk,
            "username": "otto",
            "role": "operator",
            "available": False,
            "capacity": 0,
            "open_assigned": 0,
        },
        {
            "id": reviewer.user.pk,
            "username": "rita",
            "role": "reviewer",
            "available": True,
            "capacity": 3,
            "open_assigned": 1,
        },
    ]


def test_stats_give_median_time_to_decision_and_breach_rate_per_day(
    owner: Persona, agent: Any, reviewer: Member
) -> None:
    requests = [review_of(escalated_run(agent)) for _ in range(4)]
    for request in requests[:3]:
        assert reviewer.respond(request.pk, decision="approve").status_code == 200
    now = datetime.now(UTC)
    today = now.replace(hour=12, minute=0, second=0, microsecond=0)
    if today > now:
        today -= timedelta(days=1)  # keep every timestamp in the past
    yesterday = today - timedelta(days=1)
    waits = (60, 180, 600)
    for request, seconds in zip(requests[:3], waits, strict=True):
        HITLRequest.unscoped.filter(pk=request.pk).update(
            created_at=today - timedelta(seconds=seconds), decided_at=today
        )
    HITLRequest.unscoped.filter(pk=requests[0].pk).update(breached_at=today)
    HITLRequest.unscoped.filter(pk=requests[3].pk).update(
        created_at=yesterday, breached_at=yesterday
    )

    body = owner.get("/api/v1/hitl/stats?days=3").json()

    days = {row["day"]: row for row in body["days"]}
    assert len(body["days"]) == 3
    assert days[today.date().isoformat()] == {
        "day": today.date().isoformat(),
        "queued": 3,
        "decided": 3,
        "median_seconds_to_decision": 180.0,
        "breached": 1,
        "breach_rate": round(1 / 3, 4),
    }
    assert days[yesterday.date().isoformat()]["breach_rate"] == 1.0
    assert days[yesterday.date().isoformat()]["median_seconds_to_decision"] is None
    assert body["median_seconds_to_decision"] == 180.0
    assert body["breach_rate"] == 0.5
    assert body["open"] == {"pending": 1, "assigned": 0, "escalated": 0, "breached": 1}


# --- manual escalation ------------------------------------------------------------------------


def _settled_run(owner: Persona, agent: Any) -> Run:
    from agentflow import services

    with tenant_scope(owner.tenant.pk):
        session = AgentSession.objects.create(agent=agent, user_id="c")
        run = Run.objects.create(
            agent=agent, session=session, user_id="c", input="How do I reset my password?"
        )
        services.execute_run(str(run.pk))
        run.refresh_from_db()
    assert run.status == "completed"
    return run


def test_a_settled_run_can_be_escalated_and_an_edit_follows_up(
    owner: Persona, agent: Any, reviewer: Member
) -> None:
    run = _settled_run(owner, agent)
    escalated = owner.post(
        f"/api/v1/hitl/escalate/{run.pk}", {"reason": "customer says it did not work"}
    )
    assert escalated.status_code == 201, escalated.json()
    item = escalated.json()
    assert escalated["Location"] == f"/api/v1/hitl/queue/{item['id']}"
    assert (item["kind"], item["priority"], item["status"]) == ("manual", "medium", "pending")
    assert item["escalation_reason"] == "customer says it did not work"
    assert "Reset password" in item["proposed_answer"]

    again = owner.post(f"/api/v1/hitl/escalate/{run.pk}", {"reason": "twice"})
    assert again.status_code == 409
    assert again.json()["error_type"] == "already_in_review"

    fixed = "Use the link in the e-mail within 30 minutes, or ask for a new one."
    assert reviewer.respond(item["id"], decision="edit", response=fixed).status_code == 200
    with tenant_scope(owner.tenant.pk):
        run.refresh_from_db()
        answers = list(
            Message.objects.filter(session=run.session, role="assistant")
            .order_by("created_at")
            .values_list("content", "run_id")
        )
    assert run.status == "completed"  # a settled run never goes backwards
    assert len(answers) == 2
    assert answers[1] == (fixed, None)  # a follow-up, not a second answer of the run


def test_escalate_priority_and_conflicts(owner: Persona, agent: Any) -> None:
    run = _settled_run(owner, agent)
    escalated = owner.post(
        f"/api/v1/hitl/escalate/{run.pk}", {"reason": "VIP", "priority": "normal"}
    )
    assert escalated.status_code == 201
    assert escalated.json()["priority"] == "medium"
    assert escalated["Deprecation"] == "true"

    pending = owner.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": "u", "message": "hi"},
        headers={"Prefer": "respond-async"},
    ).json()
    refused = owner.post(f"/api/v1/hitl/escalate/{pending['id']}", {"reason": "now"})
    assert refused.status_code == 409
    assert refused.json()["error_type"] == "run_not_settled"
    owner.delete(f"/api/v1/runs/{pending['id']}")
    cancelled = owner.post(f"/api/v1/hitl/escalate/{pending['id']}", {"reason": "now"})
    assert cancelled.json()["error_type"] == "run_cancelled"


def test_an_awaiting_run_without_a_request_is_queued_and_resumes(
    owner: Persona, agent: Any, reviewer: Member
) -> None:
    """Recovery path: a run left awaiting review with no open request (e.g. from before the
    review queue existed) is escalated by hand and resumes on the decision."""
    run = escalated_run(agent)
    HITLRequest.unscoped.filter(run=run).delete()
    escalated = owner.post(
        f"/api/v1/hitl/escalate/{run.pk}", {"reason": "stuck", "priority": "critical"}
    )
    assert escalated.status_code == 201
    assert escalated.json()["priority"] == "critical"
    assert reviewer.respond(escalated.json()["id"], decision="approve").status_code == 200
    with tenant_scope(owner.tenant.pk):
        run.refresh_from_db()
    assert run.status == "completed"


# --- who may do what ---------------------------------------------------------------------------


def test_api_keys_read_and_escalate_write_keys_decide_but_never_claim(
    owner: Persona, agent: Any
) -> None:
    reader, writer = _key(owner, "read"), _key(owner, "read", "write")
    request = review_of(escalated_run(agent))
    assert reader.get(QUEUE).status_code == 200
    assert reader.get(f"{QUEUE}/{request.pk}/history").status_code == 200
    assert reader.post(f"{QUEUE}/{request.pk}/respond", {"decision": "approve"}).status_code == 403
    assert (
        reader.post(f"/api/v1/hitl/escalate/{request.run_id}", {"reason": "x"}).status_code == 403
    )

    claimed = writer.post(f"{QUEUE}/{request.pk}/claim")
    assert claimed.status_code == 403
    assert "cannot hold" in claimed.json()["detail"]
    decided = writer.post(f"{QUEUE}/{request.pk}/respond", {"decision": "approve"})
    assert decided.status_code == 200, decided.json()
    assert decided.json()["decided_by"] is None
    history = writer.get(f"{QUEUE}/{request.pk}/history").json()["results"]
    assert history[-1]["actor"] == {"type": "api_key", "id": writer.key.split("_")[1]}


def test_a_write_key_cannot_decide_what_a_person_holds(
    owner: Persona, agent: Any, reviewer: Member
) -> None:
    writer = _key(owner, "read", "write")
    request = review_of(escalated_run(agent))
    assert reviewer.claim(request.pk).status_code == 200
    refused = writer.post(f"{QUEUE}/{request.pk}/respond", {"decision": "approve"})
    assert refused.status_code == 409
    assert refused.json()["error_type"] == "claimed_by_another"
    released = writer.post(f"{QUEUE}/{request.pk}/unclaim")  # but may release it
    assert released.status_code == 200
    assert released.json()["assignee"] is None


def test_viewers_read_but_never_review(owner: Persona, agent: Any) -> None:
    viewer = make_member(owner.tenant, "vic", "viewer")
    request = review_of(escalated_run(agent))
    assert viewer.get(QUEUE).status_code == 200
    for path, body in (("claim", {}), ("respond", {"decision": "approve"}), ("unclaim", {})):
        response = viewer.post(f"{QUEUE}/{request.pk}/{path}", body)
        assert response.status_code in (403, 409), (path, response.status_code)
    assert viewer.post(f"{QUEUE}/{request.pk}/claim").status_code == 403
    assert viewer.post(f"{QUEUE}/{request.pk}/respond", {"decision": "approve"}).status_code == 403
    request.refresh_from_db()
    assert request.status == "pending"


def test_platform_admins_review_as_owners(owner: Persona, agent: Any) -> None:
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.create_user("root", is_staff=True, is_superuser=True)
    client = Client(raise_request_exception=False)
    client.force_login(admin)
    request = review_of(escalated_run(agent))
    HITLRequest.unscoped.filter(pk=request.pk).update(required_role="owner", escalation_level=2)
    response = client.post(
        f"{QUEUE}/{request.pk}/respond",
        {"decision": "reject", "reason": "not for the bot"},
        content_type="application/json",
        headers={"X-Tenant": owner.tenant.slug},
    )
    assert response.status_code == 200, response.json()
    assert response.json()["decided_by"]["username"] == "root"


def test_approving_a_settled_runs_answer_adds_nothing_to_the_conversation(
    owner: Persona, agent: Any, reviewer: Member
) -> None:
    run = _settled_run(owner, agent)
    item = owner.post(f"/api/v1/hitl/escalate/{run.pk}", {"reason": "check it"}).json()
    assert reviewer.respond(item["id"], decision="approve").status_code == 200
    with tenant_scope(owner.tenant.pk):
        assert Message.objects.filter(session=run.session, role="assistant").count() == 1
