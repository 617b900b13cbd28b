"""The activity graph (SPEC 9): customers, tickets, resolutions, articles and agents as nodes,
typed edges between them, built from activity events by the stream's consumer.

Building is idempotent: nodes are upserted by ``(tenant, kind, key)`` and an edge is unique
per ``(event, kind, source, target)``, so processing an event again changes nothing.
The nodes of a batch of events are upserted in one statement in key order, so two
consumers touching the same customer and ticket lock them in the same order (no deadlock).

Queries: a customer's journey (every ticket they opened or followed up, who handled it
and how it was resolved, in time order) and the resolutions of a category ranked by how
many tickets they resolved.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Case, Count, IntegerField, Q, QuerySet, Value, When

from learning.models import ActivityEvent, ActivitySource, EdgeKind, GraphEdge, GraphNode, NodeKind
from learning.webhooks import payloads
from learning.webhooks.payloads import Facts, Ref

LABEL_LIMIT = 300


@dataclass
class Plan:
    """The nodes and edges one event contributes."""

    nodes: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    edges: list[tuple[str, tuple[str, str], tuple[str, str]]] = field(default_factory=list)
    new_ticket_edge: tuple[tuple[str, str], tuple[str, str]] | None = None

    def node(self, kind: str, ref: Ref, **properties: Any) -> tuple[str, str]:
        ident = (kind, ref.key[:300])
        current = self.nodes.setdefault(ident, {"label": "", "category": "", "properties": {}})
        current["label"] = ref.label[:LABEL_LIMIT] or current["label"]
        current["category"] = ref.category[:100] or current["category"]
        current["properties"].update({k: v for k, v in properties.items() if v is not None})
        return ident

    def edge(self, kind: str, source: tuple[str, str], target: tuple[str, str]) -> None:
        self.edges.append((kind, source, target))


def _plan_external(facts: Facts) -> Plan:
    plan = Plan()
    ticket = (
        plan.node(NodeKind.TICKET, facts.ticket, status=facts.status or None)
        if facts.ticket
        else None
    )
    if facts.customer and ticket:
        plan.new_ticket_edge = (plan.node(NodeKind.CUSTOMER, facts.customer), ticket)
    elif facts.customer:
        plan.node(NodeKind.CUSTOMER, facts.customer)
    if ticket and facts.resolved:
        category = facts.ticket.category if facts.ticket else ""
        label = facts.resolution or f"{facts.status or 'resolved'}"
        key = facts.resolution_key or f"{ticket[1]}:resolution"
        resolution = plan.node(NodeKind.RESOLUTION, Ref(key, label, category))
        plan.edge(EdgeKind.RESOLVED_BY, ticket, resolution)
        for article in facts.articles:
            plan.edge(EdgeKind.CITES, resolution, plan.node(NodeKind.ARTICLE, article))
    return plan


def _plan_run(kind: str, payload: dict[str, Any]) -> Plan:
    plan = Plan()
    run_id = str(payload.get("run_id") or "")
    intent = str(payload.get("intent") or "")[:100]
    customer_key = payload.get("customer_key") or f"api:user:{payload.get('user_id', '')}"
    ticket_key = payload.get("ticket_key") or f"thread:{payload.get('thread_id') or run_id}"
    ticket = plan.node(
        NodeKind.TICKET, Ref(str(ticket_key), str(payload.get("ticket_label") or ""), intent)
    )
    customer = plan.node(NodeKind.CUSTOMER, Ref(str(customer_key)))
    if not payload.get("activity_event_id"):
        # A run from the API is the customer's message; a rule's run answers a webhook
        # event whose own processing already linked the customer to the ticket.
        plan.new_ticket_edge = (customer, ticket)
    if payload.get("agent_id"):
        agent = plan.node(
            NodeKind.AGENT,
            Ref(f"agent:{payload['agent_id']}", str(payload.get("agent_name") or "")),
            blueprint=payload.get("blueprint"),
        )
        plan.edge(EdgeKind.HANDLED, agent, ticket)
    if kind == "run.completed":
        resolution = plan.node(
            NodeKind.RESOLUTION,
            Ref(f"run:{run_id}", str(payload.get("answer") or ""), intent),
            confidence=payload.get("confidence"),
            review=payload.get("review"),
        )
        plan.edge(EdgeKind.RESOLVED_BY, ticket, resolution)
        for source in payload.get("sources") or []:
            if isinstance(source, dict) and source.get("id"):
                article = Ref(
                    f"{source.get('kind') or 'knowledge'}:{source['id']}",
                    str(source.get("title") or ""),
                )
                plan.edge(EdgeKind.CITES, resolution, plan.node(NodeKind.ARTICLE, article))
    return plan


def _plan_marks(kind: str, payload: dict[str, Any]) -> Plan:
    """Reviews and golden paths annotate the run's resolution node."""
    plan = Plan()
    run_id = payload.get("run_id")
    if not run_id:
        return plan
    category = str(payload.get("intent") or payload.get("category") or "")[:100]
    if kind == "hitl.decided":
        plan.node(
            NodeKind.RESOLUTION, Ref(f"run:{run_id}", "", category), review=payload.get("decision")
        )
    else:
        plan.node(
            NodeKind.RESOLUTION,
            Ref(f"run:{run_id}", "", category),
            golden_path=payload.get("golden_path_id") or True,
        )
    return plan


def plan_for(event: ActivityEvent, facts: Facts | None = None) -> Plan:
    if event.source != ActivitySource.INTERNAL:
        return _plan_external(facts or payloads.facts(event.source, event.kind, event.payload))
    if event.kind in ("run.completed", "run.escalated"):
        return _plan_run(event.kind, event.payload)
    if event.kind in ("hitl.decided", "golden_path.created"):
        return _plan_marks(event.kind, event.payload)
    return Plan()


_UPSERT = """
INSERT INTO learning_graphnode
    (id, tenant_id, kind, key, label, category, properties, first_seen, last_seen)
VALUES {rows}
ON CONFLICT (tenant_id, kind, key) DO UPDATE SET
    label = CASE WHEN EXCLUDED.label <> '' THEN EXCLUDED.label ELSE learning_graphnode.label END,
    category = CASE WHEN EXCLUDED.category <> '' THEN EXCLUDED.category
                    ELSE learning_graphnode.category END,
    properties = learning_graphnode.properties || EXCLUDED.properties,
    first_seen = LEAST(learning_graphnode.first_seen, EXCLUDED.first_seen),
    last_seen = GREATEST(learning_graphnode.last_seen, EXCLUDED.last_seen)
RETURNING id, kind, key, (xmax = 0) AS inserted
"""


@dataclass
class _Node:
    """A node as the events of one batch leave it: what one upsert writes."""

    label: str
    category: str
    properties: dict[str, Any]
    first_seen: datetime
    last_seen: datetime


def _merge_nodes(planned: list[tuple[ActivityEvent, Plan]]) -> dict[tuple[str, str], _Node]:
    """The batch's nodes, each as applying its events one after another would leave it: the
    last non-empty label and category win, later properties overwrite earlier ones (the
    upsert's own rules), and first and last seen span the events' times."""
    merged: dict[tuple[str, str], _Node] = {}
    for event, plan in planned:
        at = event.occurred_at
        for ident, data in plan.nodes.items():
            node = merged.get(ident)
            if node is None:
                merged[ident] = _Node(
                    data["label"], data["category"], dict(data["properties"]), at, at
                )
                continue
            node.label = data["label"] or node.label
            node.category = data["category"] or node.category
            node.properties.update(data["properties"])
            node.first_seen = min(node.first_seen, at)
            node.last_seen = max(node.last_seen, at)
    return merged


def _upsert_nodes(
    tenant_id: int, nodes: dict[tuple[str, str], _Node]
) -> dict[tuple[str, str], tuple[uuid.UUID, bool]]:
    ordered = sorted(nodes.items())
    params: list[Any] = []
    for (kind, key), node in ordered:
        params += [
            uuid.uuid4(),
            tenant_id,
            kind,
            key,
            node.label,
            node.category,
            json.dumps(node.properties, default=str),
            node.first_seen,
            node.last_seen,
        ]
    rows = ", ".join(["(%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s)"] * len(ordered))
    with connection.cursor() as cursor:
        # Tenant id comes from the event row, never from the payload.
        cursor.execute(_UPSERT.format(rows=rows), params)
        return {(kind, key): (node_id, inserted) for node_id, kind, key, inserted in cursor}


def apply(event: ActivityEvent, facts: Facts | None = None) -> dict[str, int]:
    """Write the event's nodes and edges (inside the caller's transaction and tenant scope)."""
    return apply_events([(event, facts)])[0]


def apply_events(events: list[tuple[ActivityEvent, Facts | None]]) -> list[dict[str, int]]:
    """Write several events' nodes and edges as applying them in this order one at a time
    would, with one node upsert and one edge insert for all of them (inside the caller's
    transaction and tenant scope; the events are one tenant's). The counts of each event."""
    planned = [(event, plan_for(event, facts)) for event, facts in events]
    merged = _merge_nodes(planned)
    if not merged:
        return [{"nodes": 0, "edges": 0} for _ in planned]
    ids = _upsert_nodes(planned[0][0].tenant_id, merged)
    opened_before = _opened_before(planned, ids)
    opened_here: set[uuid.UUID] = set()  # tickets an earlier event of the batch opened
    touched: set[tuple[str, str]] = set()  # nodes an earlier event of the batch wrote
    counts: list[dict[str, int]] = []
    rows: list[GraphEdge] = []
    for event, plan in planned:
        edges = list(plan.edges)
        if plan.new_ticket_edge is not None:
            customer, ticket = plan.new_ticket_edge
            ticket_id, inserted = ids[ticket]
            # The event that created the ticket opened it; later ones on the same ticket
            # follow up. Asked of the edges (not only of the insert) so that applying again
            # agrees.
            created_here = inserted and ticket not in touched
            opened_by_another = ticket_id in opened_here or (
                not created_here and bool(opened_before.get(ticket_id, set()) - {event.pk})
            )
            kind = EdgeKind.FOLLOWED_UP if opened_by_another else EdgeKind.OPENED
            edges.append((kind, customer, ticket))
            opened_here.add(ticket_id)
        touched.update(plan.nodes)
        event_rows = [
            GraphEdge(
                source_id=ids[source][0],
                target_id=ids[target][0],
                kind=kind,
                occurred_at=event.occurred_at,
                event_id=event.pk,
            )
            for kind, source, target in edges
        ]
        rows += event_rows
        counts.append({"nodes": len(plan.nodes), "edges": len(event_rows)})
    GraphEdge.objects.bulk_create(rows, ignore_conflicts=True)
    return counts


def _opened_before(
    planned: list[tuple[ActivityEvent, Plan]], ids: dict[tuple[str, str], tuple[uuid.UUID, bool]]
) -> dict[uuid.UUID, set[Any]]:
    """For the tickets the batch links a customer to, the events whose edges opened them
    before this batch (one query; a ticket the batch inserted has none)."""
    tickets = {
        ids[plan.new_ticket_edge[1]][0]
        for _, plan in planned
        if plan.new_ticket_edge is not None and not ids[plan.new_ticket_edge[1]][1]
    }
    opened: dict[uuid.UUID, set[Any]] = {}
    if tickets:
        edges = GraphEdge.objects.filter(target_id__in=tickets, kind=EdgeKind.OPENED)
        for target_id, event_id in edges.values_list("target_id", "event_id"):
            opened.setdefault(target_id, set()).add(event_id)
    return opened


# --- queries (inside the caller's tenant scope) -------------------------------------------


@dataclass(frozen=True)
class JourneyStep:
    """One edge of a customer's journey, seen from its ticket."""

    at: datetime
    step: str
    ticket: GraphNode
    node: GraphNode
    event_id: Any


def journey(customer: GraphNode) -> list[JourneyStep]:
    """Everything that happened around a customer's tickets, oldest first."""
    tickets = GraphEdge.objects.filter(
        source=customer, kind__in=(EdgeKind.OPENED, EdgeKind.FOLLOWED_UP)
    ).values_list("target_id", flat=True)
    edges = (
        GraphEdge.objects.filter(
            Q(source=customer)
            | Q(target_id__in=tickets, kind=EdgeKind.HANDLED)
            | Q(source_id__in=tickets, kind=EdgeKind.RESOLVED_BY)
        )
        .select_related("source", "target")
        .order_by("occurred_at", "id")
    )
    steps = []
    for edge in edges[:1000]:
        ticket = edge.source if edge.kind == EdgeKind.RESOLVED_BY else edge.target
        other = edge.target if edge.kind == EdgeKind.RESOLVED_BY else edge.source
        steps.append(JourneyStep(edge.occurred_at, edge.kind, ticket, other, edge.event_id))
    return steps


REVIEWED = ("approve", "edit")


def similar_resolutions(
    category: str = "", exclude_ticket: GraphNode | None = None
) -> QuerySet[GraphNode]:
    """Resolutions of ``category`` (all when empty): most tickets resolved first, then the
    reviewer-approved ones, then the most recent."""
    resolutions = GraphNode.objects.filter(kind=NodeKind.RESOLUTION)
    if category:
        resolutions = resolutions.filter(category__iexact=category)
    if exclude_ticket is not None:
        resolutions = resolutions.exclude(in_edges__source=exclude_ticket)
    return resolutions.annotate(
        tickets=Count(
            "in_edges__source", filter=Q(in_edges__kind=EdgeKind.RESOLVED_BY), distinct=True
        ),
        # A reviewer approved (or corrected) it: worth more than an unreviewed answer.
        reviewed=Case(
            When(properties__review__in=REVIEWED, then=Value(1)),
            default=Value(0),
            output_field=IntegerField(),
        ),
    ).order_by("-tickets", "-reviewed", "-last_seen", "id")


def cited_articles(resolution_ids: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """The articles each resolution cites (one query for a page of resolutions)."""
    found: dict[str, list[dict[str, Any]]] = {}
    edges = GraphEdge.objects.filter(source_id__in=resolution_ids, kind=EdgeKind.CITES)
    seen: set[tuple[Any, Any]] = set()
    for edge in edges.select_related("target").order_by("occurred_at", "id"):
        if (edge.source_id, edge.target_id) in seen:
            continue  # cited again by a later event: listed once
        seen.add((edge.source_id, edge.target_id))
        found.setdefault(str(edge.source_id), []).append(
            {"id": str(edge.target_id), "key": edge.target.key, "label": edge.target.label}
        )
    return found
