"""The activity stream (/activity/) and the activity graph (/graph/), read-only pages over
the same models and queries as ``/api/v1/activity`` and ``/api/v1/graph/...`` (``read``).

A member restricted to some agents does not see internal events of the others (events
without an agent, such as webhooks, stay visible, as in the API).
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KT
from django.http import Http404, HttpRequest, HttpResponse

from frontend import queries
from frontend.access import DashboardView
from frontend.forms_ops import ActivityFilterForm, CustomerSearchForm
from governance.services import visible_agents
from learning import graph
from learning.models import ActivityEvent, GraphNode, NodeKind

ACTIVITY_PAGE_SIZE = 50
CUSTOMER_MATCHES = 20
SIMILAR_LIMIT = 10


def _uuid_or_404(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as exc:  # not an id: as unknown as another tenant's
        raise Http404 from exc


def visible_events(user: Any, tenant_id: int) -> QuerySet[ActivityEvent]:
    """Events the user may see: all, or (restricted) those of no agent or of a visible one."""
    events = ActivityEvent.objects.all()
    visible = visible_agents(user, tenant_id)
    if visible is None:
        return events
    ids = [str(pk) for pk in visible.values_list("pk", flat=True)]
    return events.filter(Q(payload__agent_id__isnull=True) | Q(payload__agent_id__in=ids))


def filtered_events(events: QuerySet[ActivityEvent], data: dict[str, Any]) -> QuerySet[Any]:
    """``data`` (a valid filter form's) applied; the payload's summary fields, not the payload."""
    if kind := data.get("kind"):
        events = (
            events.filter(kind__startswith=kind[:-1])
            if kind.endswith("*")
            else events.filter(kind=kind)
        )
    if data.get("source"):
        events = events.filter(source=data["source"])
    if data.get("agent"):
        events = events.filter(payload__agent_id=data["agent"])
    if data.get("since"):
        events = events.filter(occurred_at__gte=data["since"])
    if data.get("until"):
        events = events.filter(occurred_at__lt=data["until"])
    return (
        events.defer("payload")
        .annotate(
            agent_name=KT("payload__agent_name"),
            run_id=KT("payload__run_id"),
            intent=KT("payload__intent"),
            text=KT("payload__text"),
        )
        .order_by("-occurred_at", "-pk")
    )


def status_of(event: ActivityEvent) -> str:
    if event.processed_at:
        return "processed"
    return f"failed: {event.last_error}" if event.last_error else "waiting"


class ActivityView(DashboardView):
    page = "activity"

    def get(self, request: HttpRequest) -> HttpResponse:
        assert self.access.tenant is not None  # DashboardView: tenant pages have one
        tenant_id = self.access.tenant.pk
        agents = queries.agents_by_id(user=request.user, tenant_id=tenant_id)
        choices = sorted(agents.items(), key=lambda item: item[1].lower())
        query = request.GET.copy()
        query.pop("page", None)
        form = ActivityFilterForm(query or None, agent_choices=choices)
        data: dict[str, Any] = {}
        if form.is_bound:
            form.is_valid()
            data = getattr(form, "cleaned_data", {})  # the valid filters only
        events = filtered_events(visible_events(request.user, tenant_id), data)
        page = Paginator(events, ACTIVITY_PAGE_SIZE).get_page(request.GET.get("page"))
        rows = [{"event": e, "status": status_of(e)} for e in page.object_list]
        return self.render_page(
            request,
            "frontend/activity.html",
            {
                "title": "Activity stream",
                "form": form,
                "rows": rows,
                "page_obj": page,
                "query": query.urlencode(),
            },
            status=400 if form.is_bound and form.errors else 200,
        )


class ActivityDetailView(DashboardView):
    page = "activity"

    def get(self, request: HttpRequest, event_id: Any) -> HttpResponse:
        assert self.access.tenant is not None
        events = visible_events(request.user, self.access.tenant.pk).select_related(
            "delivery", "delivery__endpoint"
        )
        event = events.filter(pk=event_id).first()
        if event is None:
            raise Http404
        run_id = (event.payload or {}).get("run_id")
        return self.render_page(
            request,
            "frontend/activity_detail.html",
            {
                "title": f"Event {event.kind}",
                "event": event,
                "status": status_of(event),
                "delivery": getattr(event, "delivery", None),
                "run_id": run_id if _is_uuid(run_id) else None,
            },
        )


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def customers_matching(text: str) -> list[GraphNode]:
    """Customers whose key or label holds ``text``, exact key matches first."""
    if not text:
        return []
    nodes = GraphNode.objects.filter(kind=NodeKind.CUSTOMER).filter(
        Q(key__icontains=text) | Q(label__icontains=text)
    )
    found = list(nodes.order_by("-last_seen", "pk")[:CUSTOMER_MATCHES])
    exact = [n for n in found if n.key.lower() == text.lower() or n.key.endswith(f":{text}")]
    return exact + [n for n in found if n not in exact]


def _node(raw: str, kind: str) -> GraphNode:
    node = GraphNode.objects.filter(pk=_uuid_or_404(raw), kind=kind).first()
    if node is None:
        raise Http404
    return node


def similar(ticket: GraphNode | None) -> list[dict[str, Any]]:
    """The resolutions of the ticket's category (most used first), with what they cite."""
    if ticket is None:
        return []
    found = list(graph.similar_resolutions(ticket.category, ticket)[:SIMILAR_LIMIT])
    articles = graph.cited_articles([n.pk for n in found])
    return [
        {
            "node": node,
            "tickets": node.tickets,  # type: ignore[attr-defined]  # the query's annotation
            "articles": articles.get(str(node.pk), []),
            "run_id": node.key.removeprefix("run:") if node.key.startswith("run:") else None,
        }
        for node in found
    ]


class GraphView(DashboardView):
    page = "graph"

    def get(self, request: HttpRequest) -> HttpResponse:
        form = CustomerSearchForm(request.GET or None)
        text = form.cleaned_data["q"] if form.is_bound and form.is_valid() else ""
        matches = customers_matching(text)
        customer: GraphNode | None = None
        if raw := request.GET.get("customer"):
            customer = _node(raw, NodeKind.CUSTOMER)
        elif len(matches) == 1 or (matches and matches[0].key.endswith(f":{text}")):
            customer = matches[0]
        steps = graph.journey(customer) if customer is not None else []
        ticket: GraphNode | None = None
        if raw := request.GET.get("ticket"):
            ticket = _node(raw, NodeKind.TICKET)
        elif steps:
            ticket = steps[-1].ticket  # the customer's latest ticket
        return self.render_page(
            request,
            "frontend/graph.html",
            {
                "title": "Customer journeys",
                "form": form,
                "text": text,
                "matches": matches,
                "customer": customer,
                "steps": steps,
                "ticket": ticket,
                "similar": similar(ticket),
            },
            status=400 if form.is_bound and form.errors else 200,
        )
