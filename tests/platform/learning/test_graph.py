"""The activity graph on a synthetic history: journeys, similar resolutions, idempotence, API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

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


# --- a batch of events in one transaction ---------------------------------------------------


def _danas_ticket(change: str, **ticket: str) -> tuple[str, dict[str, Any], str]:
    """A generic webhook's event about Dana's ticket t1."""
    payload = {
        "type": f"ticket.{change}",
        "customer": {"id": "dana"},
        "ticket": {"id": "t1", **ticket},
    }
    return f"generic.ticket.{change}", payload, "generic"


# A history whose order matters: a ticket opened, answered by a rule's run, followed up and
# relabelled, a run from the API opening a thread and another following it up, a review
# and a golden path marking a run's resolution, a customer seen again.
HISTORY: list[tuple[str, dict[str, Any], str]] = [
    _danas_ticket("created", subject="refund", category="billing"),
    ("run.completed", {"run_id": "r1", "agent_id": "a1", "customer_key": "generic:user:dana",
                       "ticket_key": "generic:ticket:t1", "activity_event_id": "e1",
                       "intent": "billing", "answer": "Refunds take 5 days.",
                       "sources": [{"id": "kb-1", "title": "Refunds"}]}, "internal"),
    _danas_ticket("updated", subject="refund, again", status="open"),
    ("run.escalated", {"run_id": "r2", "agent_id": "a1", "agent_name": "support",
                       "user_id": "zed", "thread_id": "th-1", "intent": "login"}, "internal"),
    ("run.completed", {"run_id": "r3", "agent_id": "a1", "user_id": "zed", "thread_id": "th-1",
                       "intent": "login", "answer": "Reset it here.",
                       "confidence": 0.9}, "internal"),
    ("hitl.decided", {"run_id": "r3", "decision": "approve", "intent": "login"}, "internal"),
    ("golden_path.created", {"run_id": "r3", "golden_path_id": "g1"}, "internal"),
    ("run.completed", {"run_id": "r4", "agent_id": "a2", "agent_name": "sales",
                       "user_id": "zed", "thread_id": "th-2", "answer": "Yes."}, "internal"),
]  # fmt: skip


def _record_history(persona: Persona) -> list[str]:
    return [
        str(services.record_event(persona.tenant.pk, kind, payload, source, occurred_at=_at(n)).pk)
        for n, (kind, payload, source) in enumerate(HISTORY)
    ]


def _graph_of(persona: Persona) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    nodes = GraphNode.unscoped.filter(tenant=persona.tenant).order_by("kind", "key")
    edges = GraphEdge.unscoped.filter(tenant=persona.tenant).select_related("source", "target")
    return (
        [
            (n.kind, n.key, n.label, n.category, n.properties, n.first_seen, n.last_seen)
            for n in nodes
        ],
        sorted((e.kind, e.source.key, e.target.key, e.occurred_at) for e in edges),
    )


def test_a_batch_builds_the_graph_that_one_event_at_a_time_does(
    owner: Persona, outsider: Persona
) -> None:
    one_by_one = _record_history(owner)
    for event_id in one_by_one:
        assert processing.process_event(owner.tenant.pk, event_id) == "processed"
    together = _record_history(outsider)
    entries = [(f"{n}-0", event_id) for n, event_id in enumerate(together)]
    assert processing.process_events(outsider.tenant.pk, entries) == ["processed"] * len(HISTORY)
    assert _graph_of(outsider) == _graph_of(owner)
    nodes, edges = _graph_of(owner)
    assert ("followed_up", "generic:user:dana", "generic:ticket:t1", _at(2)) in edges
    assert ("followed_up", "api:user:zed", "thread:th-1", _at(4)) in edges
    assert ("opened", "api:user:zed", "thread:th-2", _at(7)) in edges
    by_key = {(kind, key): rest for kind, key, *rest in nodes}
    assert by_key[("ticket", "generic:ticket:t1")][0] == "refund, again"  # the later label
    assert by_key[("resolution", "run:r3")][2] == {
        "confidence": 0.9, "review": "approve", "golden_path": "g1"
    }  # fmt: skip
    event = ActivityEvent.unscoped.get(pk=together[1])
    assert event.stream_id == "1-0"
    assert event.outcome == ActivityEvent.unscoped.get(pk=one_by_one[1]).outcome


def test_a_batch_processes_each_event_once(owner: Persona) -> None:
    first, second = _record_history(owner)[:2]
    assert processing.process_event(owner.tenant.pk, first) == "processed"
    entries = [("1-0", first), ("2-0", second), ("3-0", second), ("4-0", str(uuid.uuid4()))]
    outcomes = processing.process_events(owner.tenant.pk, entries)
    assert outcomes == ["duplicate", "processed", "duplicate", "missing"]
    assert ActivityEvent.unscoped.get(pk=second).stream_id == "2-0"
    assert GraphEdge.unscoped.filter(tenant=owner.tenant, kind="opened").count() == 1


def test_a_batch_of_run_events_costs_the_statements_of_one(owner: Persona) -> None:
    """A run's event is consumed in a share of one transaction, not in one of its own."""

    def statements(runs: int) -> int:
        ids = [
            str(services.record_event(owner.tenant.pk, "run.completed", {
                "run_id": f"r{runs}-{n}", "agent_id": "a1", "user_id": f"u{n}",
                "answer": "ok", "sources": [{"id": "kb-1", "title": "Refunds"}],
            }).pk)
            for n in range(runs)
        ]  # fmt: skip
        with CaptureQueriesContext(connection) as queries:
            processing.process_events(owner.tenant.pk, [(f"{i}-0", e) for i, e in enumerate(ids)])
        return len(queries)

    assert statements(30) == statements(2)
    assert GraphNode.unscoped.filter(tenant=owner.tenant, kind="resolution").count() == 32
