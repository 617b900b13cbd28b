"""The activity graph on a synthetic history: journeys, similar resolutions, idempotence, API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from learning import graph, processing, services
from learning.models import ActivityEvent, EdgeKind, GraphEdge, GraphNode
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona
from tests.platform.api.test_bad_input import assert_error, assert_field_errors

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _event(persona: Persona, minutes: int, kind: str, payload: dict[str, Any], source: str) -> str:
    event = services.record_event(
        persona.tenant.pk, kind, payload, source, occurred_at=_at(minutes)
    )
    assert processing.process_event(persona.tenant.pk, str(event.pk)) == "processed"
    return str(event.pk)


def _ticket(
    persona: Persona, minutes: int, customer: str, ticket: str, category: str, **extra: Any
) -> str:
    payload = {
        "type": "ticket.created",
        "customer": {"id": customer, "email": f"{customer}@example.com"},
        "ticket": {"id": ticket, "subject": f"{category} problem {ticket}", "category": category},
        "text": "help",
        **extra,
    }
    return _event(persona, minutes, "generic.ticket.created", payload, "generic")


def _solved(
    persona: Persona, minutes: int, ticket: str, category: str, fix: str, articles: list[str]
) -> str:
    payload = {
        "type": "ticket.solved",
        "ticket": {"id": ticket, "category": category, "status": "solved"},
        "resolution": {
            "id": fix,
            "summary": f"applied {fix}",
            "articles": [{"id": a, "title": f"Article {a}"} for a in articles],
        },
    }
    return _event(persona, minutes, "generic.ticket.solved", payload, "generic")


def _run_completed(
    persona: Persona, minutes: int, run: str, customer: str, ticket: str, **extra: Any
) -> str:
    payload = {
        "run_id": run,
        "agent_id": "a1",
        "agent_name": "support",
        "blueprint": "support_agent",
        "user_id": customer,
        "intent": "billing",
        "answer": "Refunds take 5 business days.",
        "sources": [{"kind": "knowledge", "id": "doc-refunds", "title": "Refunds"}],
        "customer_key": f"generic:user:{customer}",
        "ticket_key": f"generic:ticket:{ticket}",
        "activity_event_id": "started-by-a-rule",
        **extra,
    }
    return _event(persona, minutes, "run.completed", payload, "internal")


@pytest.fixture
def history(owner: Persona) -> dict[str, str]:
    """Dana opens a billing ticket, the agent answers it, she follows up, a human solves it
    with a known fix; later she opens a login ticket. Others' billing tickets use the same
    fix or another one; one answer was approved by a reviewer."""
    ids = {
        "dana-1": _ticket(owner, 0, "dana", "t1", "billing"),
        "run-1": _run_completed(owner, 2, "r1", "dana", "t1"),
        "dana-1-again": _ticket(owner, 30, "dana", "t1", "billing"),
        "solved-1": _solved(owner, 40, "t1", "billing", "fix-refund", ["kb-7"]),
        "dana-2": _ticket(owner, 60 * 24, "dana", "t2", "login"),
    }
    _ticket(owner, 5, "eve", "t3", "billing")
    _solved(owner, 50, "t3", "billing", "fix-refund", ["kb-7"])
    _ticket(owner, 6, "finn", "t4", "billing")
    _solved(owner, 55, "t4", "billing", "fix-card", ["kb-9"])
    _ticket(owner, 7, "gus", "t5", "billing")
    _run_completed(owner, 8, "r2", "gus", "t5")
    decided = services.record_event(
        owner.tenant.pk,
        "hitl.decided",
        {"run_id": "r2", "decision": "approve", "intent": "billing"},
    )
    processing.process_event(owner.tenant.pk, str(decided.pk))
    return ids


def _node(persona: Persona, kind: str, key: str) -> GraphNode:
    return GraphNode.unscoped.get(tenant=persona.tenant, kind=kind, key=key)


def test_a_customers_journey_is_ordered(owner: Persona, history: dict[str, str]) -> None:
    dana = _node(owner, "customer", "generic:user:dana")
    journey = owner.get(f"/api/v1/graph/nodes/{dana.pk}/journey").json()
    steps = [
        (s["step"], s["ticket"]["key"].removeprefix("generic:ticket:"), s["node"]["key"])
        for s in journey["steps"]
    ]
    assert steps == [
        ("opened", "t1", "generic:user:dana"),
        ("handled", "t1", "agent:a1"),
        ("resolved_by", "t1", "run:r1"),
        ("followed_up", "t1", "generic:user:dana"),
        ("resolved_by", "t1", "generic:resolution:fix-refund"),
        ("opened", "t2", "generic:user:dana"),
    ]
    times = [s["at"] for s in journey["steps"]]
    assert times == sorted(times)
    assert journey["steps"][0]["event_id"] == history["dana-1"]
    # No contact data in the graph: the e-mail given alongside the id is not stored.
    assert "@example.com" not in str(GraphNode.unscoped.filter(tenant=owner.tenant).values())


def test_similar_resolutions_in_a_category(owner: Persona, history: dict[str, str]) -> None:
    page = owner.get("/api/v1/graph/similar-resolutions?category=billing").json()
    keys = [r["key"] for r in page["results"]]
    # The fix two tickets used first, then the reviewer-approved answer, then by recency.
    assert keys[0] == "generic:resolution:fix-refund"
    assert page["results"][0]["tickets"] == 2
    assert page["results"][0]["articles"] == [
        {
            "id": str(_node(owner, "article", "generic:article:kb-7").pk),
            "key": "generic:article:kb-7",
            "label": "Article kb-7",
        }
    ]
    assert keys[1] == "run:r2"
    assert set(keys[2:]) == {"generic:resolution:fix-card", "run:r1"}
    assert page["total"] == 4
    login = owner.get("/api/v1/graph/similar-resolutions?category=LOGIN").json()
    assert login["total"] == 0  # t2 (login) is open: nothing resolved it yet
    every = owner.get("/api/v1/graph/similar-resolutions").json()
    assert every["total"] == 4


def test_similar_resolutions_for_a_ticket_leave_out_its_own(
    owner: Persona, history: dict[str, str]
) -> None:
    t4 = _node(owner, "ticket", "generic:ticket:t4")
    page = owner.get(f"/api/v1/graph/similar-resolutions?ticket={t4.pk}").json()
    keys = [r["key"] for r in page["results"]]
    assert "generic:resolution:fix-card" not in keys
    assert keys[0] == "generic:resolution:fix-refund"
    assert_field_errors(owner.get("/api/v1/graph/similar-resolutions?ticket=nope"), "ticket")


def test_processing_an_event_again_changes_nothing(owner: Persona, history: dict[str, str]) -> None:
    before = (GraphNode.unscoped.count(), GraphEdge.unscoped.count())
    with tenant_scope(owner.tenant.pk):
        for event in ActivityEvent.objects.all():
            graph.apply(event)  # what a duplicate delivery would do without the processed mark
    assert (GraphNode.unscoped.count(), GraphEdge.unscoped.count()) == before


def test_nodes_are_listed_filtered_and_shown_with_edges(
    owner: Persona, history: dict[str, str]
) -> None:
    customers = owner.get("/api/v1/graph/nodes?kind=customer&sort_by=label").json()
    assert customers["total"] == 4
    found = owner.get("/api/v1/graph/nodes?key=generic:ticket:t1").json()["results"]
    assert len(found) == 1
    detail = owner.get(f"/api/v1/graph/nodes/{found[0]['id']}").json()
    kinds = sorted((e["kind"], e["direction"]) for e in detail["edges"])
    assert kinds == [
        ("followed_up", "in"),
        ("handled", "in"),
        ("opened", "in"),
        ("resolved_by", "out"),
        ("resolved_by", "out"),
    ]
    assert detail["category"] == "billing"
    assert_field_errors(owner.get("/api/v1/graph/nodes?kind=planet"), "kind")


def test_journeys_are_of_customers_only(owner: Persona, history: dict[str, str]) -> None:
    ticket = _node(owner, "ticket", "generic:ticket:t1")
    assert_field_errors(owner.get(f"/api/v1/graph/nodes/{ticket.pk}/journey"), "node_id")


def test_another_tenants_graph_is_invisible(
    owner: Persona, outsider: Persona, history: dict[str, str]
) -> None:
    dana = _node(owner, "customer", "generic:user:dana")
    assert_error(outsider.get(f"/api/v1/graph/nodes/{dana.pk}/journey"), 404, "not_found")
    assert outsider.get("/api/v1/graph/nodes").json()["total"] == 0
    assert outsider.get("/api/v1/graph/similar-resolutions").json()["total"] == 0


def test_runs_from_the_api_appear_with_their_agent(owner: Persona) -> None:
    _run_completed(
        owner,
        0,
        "r9",
        "zed",
        "t9",
        customer_key="api:user:zed",
        ticket_key="thread:x",
        activity_event_id=None,
    )
    zed = _node(owner, "customer", "api:user:zed")
    edges = GraphEdge.unscoped.filter(source=zed)
    assert [e.kind for e in edges] == [EdgeKind.OPENED]
    resolution = _node(owner, "resolution", "run:r9")
    assert resolution.category == "billing"
    assert resolution.label == "Refunds take 5 business days."


def test_erasing_an_end_user_erases_their_graph_and_events(
    owner: Persona, history: dict[str, str]
) -> None:
    """Governance's erasure reaches the stream and the graph (the learning eraser)."""
    response = owner.post("/api/v1/governance/erasures", {"user_id": "generic:user:dana"})
    assert response.status_code == 200, response.content
    erased = response.json()["erased"]
    assert erased["learning.graph_nodes"] == 3  # dana and her two tickets
    assert erased["learning.activity_events"] == 5  # every event that built them
    keys = set(GraphNode.unscoped.filter(tenant=owner.tenant).values_list("key", flat=True))
    assert {"generic:user:dana", "generic:ticket:t1", "generic:ticket:t2"}.isdisjoint(keys)
    assert "generic:user:eve" in keys  # others untouched
    for event_id in history.values():
        assert ActivityEvent.unscoped.get(pk=event_id).payload == {"erased": True}
    assert _node(owner, "resolution", "run:r1").label == ""
    assert _node(owner, "resolution", "run:r2").label == "Refunds take 5 business days."
