"""Activity stream, event rules and the activity graph over HTTP: thin views over services.

* ``GET /api/v1/activity`` (list envelope; payloads in the detail), ``GET .../{event_id}``;
* ``/api/v1/activity/rules`` (list, create) and ``.../{rule_id}`` (read, update, delete);
* ``/api/v1/graph/nodes`` (list, filters), ``.../{node_id}`` (with its edges),
  ``.../{node_id}/journey`` (a customer's journey), ``/api/v1/graph/similar-resolutions``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import django_filters
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from agentflow.core.api.exceptions import conflict, unprocessable
from agentflow.core.api.filters import (
    ListEndpoint,
    ZonedDateTimeFilter,
    choice_filter,
    flag_filter,
    prefix_filter,
    text_filter,
)
from agentflow.core.api.schema import IDEMPOTENCY_PARAMETER, errors
from agentflow.core.api.serializers import (
    AsIsBooleanField,
    AsIsCharField,
    AsIsChoiceField,
    AsIsDictField,
    AsIsIntegerField,
    AsIsListField,
    PriorityField,
    StrictSerializer,
    ZDateTimeField,
)
from agentflow.models import Agent
from learning import graph, services
from learning.models import (
    ActivityEvent,
    ActivitySource,
    EventRule,
    GraphEdge,
    GraphNode,
    NodeKind,
)
from learning.rules import reply_url_allowed
from tenants.authentication import actor_for
from tenants.idempotency import idempotent
from tenants.views_base import TenantScopedAPIView


def _z(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def _or_404(queryset: Any, pk: Any) -> Any:
    found = queryset.filter(pk=pk).first()
    if found is None:
        raise Http404
    return found


# --- activity ---------------------------------------------------------------------------------


class EventSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    source = AsIsChoiceField(choices=ActivitySource.values)  # type: ignore[assignment]
    kind = AsIsCharField()
    occurred_at = ZDateTimeField()
    processed_at = ZDateTimeField(allow_null=True)
    attempts = AsIsIntegerField()
    outcome = AsIsDictField()
    correlation_id = AsIsCharField()


class DeliveryInfoSerializer(serializers.Serializer):
    endpoint_id = serializers.UUIDField()
    delivery_id = AsIsCharField()
    attempts = AsIsIntegerField()


class EventDetailSerializer(EventSerializer):
    """An event with its payload; select ``delivery`` with it (webhook events have one)."""

    payload = AsIsDictField()
    stream_id = AsIsCharField()
    last_error = AsIsCharField()
    delivery = serializers.SerializerMethodField()

    @extend_schema_field(DeliveryInfoSerializer(allow_null=True))
    def get_delivery(self, event: ActivityEvent) -> dict[str, Any] | None:
        delivery = getattr(event, "delivery", None)
        return None if delivery is None else dict(DeliveryInfoSerializer(delivery).data)


def _kind_pattern(value: str) -> None:
    if "*" in value.removesuffix("*"):
        raise ValidationError("A kind, or a prefix ending in *.")


SINCE_MESSAGE = "An ISO 8601 time with a zone."


class ActivityFilter(django_filters.FilterSet):
    kind = prefix_filter(
        "kind",
        max_length=None,
        validators=[_kind_pattern],
        help_text="A kind, or a prefix ending in *: zendesk.*",
    )
    source = choice_filter(ActivitySource.values)
    processed = flag_filter("processed_at", is_null=True)
    since = ZonedDateTimeFilter(
        field_name="occurred_at",
        lookup_expr="gte",
        help_text="occurred_at >= since",
        error_messages=dict.fromkeys(("invalid", "naive", "range"), SINCE_MESSAGE),
    )

    class Meta:
        model = ActivityEvent
        fields: list[str] = []


class ActivityListView(ListEndpoint, TenantScopedAPIView):
    filterset_class = ActivityFilter
    ordering_fields = ("occurred_at", "created_at", "kind")
    ordering = "occurred_at"

    @extend_schema(
        operation_id="activity_list",
        responses={200: EventSerializer(many=True), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        return self.list_response(request, ActivityEvent.objects.all(), EventSerializer)


class ActivityDetailView(TenantScopedAPIView):
    @extend_schema(
        operation_id="activity_retrieve",
        responses={200: EventDetailSerializer, **errors(401, 403, 404)},
    )
    def get(self, request: Request, event_id: str) -> Response:
        event = _or_404(ActivityEvent.objects.select_related("delivery"), event_id)
        return Response(EventDetailSerializer(event).data)


# --- rules --------------------------------------------------------------------------------------


class RuleSerializer(serializers.Serializer):
    """An event rule; reads its agent's name (select ``agent`` with the rule)."""

    id = serializers.UUIDField()
    name = AsIsCharField()
    event_kind = AsIsCharField()
    conditions = AsIsDictField()
    agent_id = serializers.UUIDField()
    agent_name = AsIsCharField(source="agent.name")
    priority = AsIsChoiceField(choices=["low", "medium", "high", "critical"])
    reply_url = AsIsCharField()
    enabled = AsIsBooleanField()
    created_at = ZDateTimeField()
    updated_at = ZDateTimeField()


class _RuleInput(StrictSerializer):
    name = serializers.CharField(min_length=1, max_length=200)
    event_kind = serializers.RegexField(
        r"^[a-z0-9_.*?\[\]-]{1,100}$",
        help_text="The event kind, or a pattern: zendesk.ticket.*",
    )
    conditions = serializers.DictField(
        required=False,
        help_text="Facts that must be equal: status, priority, category, resolved, "
        "mentions_bot, tags (one of them), has_text.",
    )
    agent_id = serializers.UUIDField(required=False)
    agent_name = serializers.CharField(required=False, max_length=200)
    priority = PriorityField(required=False)
    reply_url = serializers.CharField(required=False, allow_blank=True, max_length=500)
    enabled = serializers.BooleanField(required=False)

    def validate_conditions(self, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > 20:
            raise serializers.ValidationError("At most 20 conditions.")
        for name, wanted in value.items():
            if not isinstance(wanted, str | bool | int | float) or isinstance(wanted, list):
                raise serializers.ValidationError(f"{name}: a string, number or boolean.")
        return value

    def validate_reply_url(self, value: str) -> str:
        if value and not reply_url_allowed(value):
            raise serializers.ValidationError(
                "Not under an allowed reply URL prefix (WEBHOOK_REPLY_ALLOWED_URLS)."
            )
        return value


class RuleCreateSerializer(_RuleInput):
    """A new rule: name and event_kind are required (the update makes them optional)."""


class RuleUpdateSerializer(_RuleInput):
    name = serializers.CharField(min_length=1, max_length=200, required=False)
    event_kind = serializers.RegexField(r"^[a-z0-9_.*?\[\]-]{1,100}$", required=False)


def _rule_fields(data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    fields = dict(data)
    agent_id, agent_name = fields.pop("agent_id", None), fields.pop("agent_name", None)
    if agent_id is not None and agent_name is not None:
        raise unprocessable("Name the agent once.", {"agent_id": ["Send agent_id or agent_name."]})
    if agent_id is not None or agent_name is not None:
        lookup = {"pk": agent_id} if agent_id is not None else {"name": agent_name}
        agent = Agent.objects.filter(**lookup).first()
        if agent is None:  # a foreign agent is as unknown as a missing one
            field = "agent_id" if agent_id is not None else "agent_name"
            raise unprocessable("Unknown agent.", {field: ["No such agent in this tenant."]})
        fields["agent"] = agent
    elif creating:
        raise unprocessable("Which agent?", {"agent_id": ["Send agent_id or agent_name."]})
    return fields


class RuleListView(ListEndpoint, TenantScopedAPIView):
    ordering_fields = ("created_at", "name", "event_kind")
    ordering = "created_at"

    @extend_schema(
        operation_id="activity_rules_list",
        responses={200: RuleSerializer(many=True), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        rules = EventRule.objects.select_related("agent")
        return self.list_response(request, rules, RuleSerializer)

    @extend_schema(
        operation_id="activity_rules_create",
        request=RuleCreateSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: RuleSerializer, **errors(401, 403, 409, 422)},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = RuleCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = _rule_fields(data.validated_data, creating=True)
        try:
            rule = services.create_rule(
                actor=actor_for(request), tenant_id=self.tenant.pk, **fields
            )
        except services.DuplicateRuleName:
            raise conflict(
                f"A rule named {fields['name']!r} already exists.", "duplicate"
            ) from None
        return Response(
            RuleSerializer(rule).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/activity/rules/{rule.pk}"},
        )


class RuleDetailView(TenantScopedAPIView):
    @extend_schema(
        operation_id="activity_rules_retrieve",
        responses={200: RuleSerializer, **errors(401, 403, 404)},
    )
    def get(self, request: Request, rule_id: str) -> Response:
        rule = _or_404(EventRule.objects.select_related("agent"), rule_id)
        return Response(RuleSerializer(rule).data)

    @extend_schema(
        operation_id="activity_rules_update",
        request=RuleUpdateSerializer,
        responses={200: RuleSerializer, **errors(401, 403, 404, 409, 422)},
    )
    def patch(self, request: Request, rule_id: str) -> Response:
        rule = _or_404(EventRule.objects.select_related("agent"), rule_id)
        data = RuleUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = _rule_fields(data.validated_data, creating=False)
        try:
            rule = services.update_rule(actor=actor_for(request), rule=rule, **fields)
        except services.DuplicateRuleName:
            raise conflict(
                f"A rule named {fields['name']!r} already exists.", "duplicate"
            ) from None
        return Response(RuleSerializer(rule).data)

    @extend_schema(
        operation_id="activity_rules_destroy", responses={204: None, **errors(401, 403, 404)}
    )
    def delete(self, request: Request, rule_id: str) -> Response:
        services.delete_rule(actor=actor_for(request), rule=_or_404(EventRule.objects, rule_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- graph ------------------------------------------------------------------------------------


class NodeSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    kind = AsIsChoiceField(choices=NodeKind.choices)
    key = AsIsCharField()
    label = AsIsCharField()  # type: ignore[assignment]
    category = AsIsCharField()
    properties = AsIsDictField()
    first_seen = ZDateTimeField()
    last_seen = ZDateTimeField()


class EdgeSerializer(serializers.Serializer):
    """An edge seen from the node in the context (``node``): its direction and other end.

    Select ``source`` and ``target`` with the edges."""

    kind = AsIsCharField()
    direction = serializers.SerializerMethodField()
    node = serializers.SerializerMethodField()
    occurred_at = ZDateTimeField()
    event_id = serializers.UUIDField(allow_null=True)

    def _outgoing(self, edge: GraphEdge) -> bool:
        return bool(edge.source_id == self.context["node"].pk)

    @extend_schema_field(serializers.ChoiceField(choices=["out", "in"]))
    def get_direction(self, edge: GraphEdge) -> str:
        return "out" if self._outgoing(edge) else "in"

    @extend_schema_field(NodeSerializer())
    def get_node(self, edge: GraphEdge) -> dict[str, Any]:
        return dict(NodeSerializer(edge.target if self._outgoing(edge) else edge.source).data)


class NodeDetailSerializer(NodeSerializer):
    """A node with its first 200 edges, oldest first (three queries in all)."""

    edges = serializers.SerializerMethodField()

    @extend_schema_field(EdgeSerializer(many=True))
    def get_edges(self, node: GraphNode) -> list[Any]:
        edges = (
            GraphEdge.objects.filter(Q(source=node) | Q(target=node))
            .select_related("source", "target")
            .order_by("occurred_at", "id")[:200]
        )
        return list(EdgeSerializer(edges, many=True, context={"node": node}).data)


class JourneyStepSerializer(serializers.Serializer):
    """A ``graph.JourneyStep``."""

    at = ZDateTimeField()
    step = AsIsCharField()
    ticket = NodeSerializer()
    node = NodeSerializer()
    event_id = serializers.UUIDField(allow_null=True)


class JourneySerializer(serializers.Serializer):
    customer = NodeSerializer()
    steps = JourneyStepSerializer(many=True)


class CitedArticleListSerializer(serializers.ListSerializer):
    """Loads the articles a page of resolutions cites in one query (no N+1)."""

    def to_representation(self, data: Any) -> list[Any]:
        resolutions = list(data)
        articles = graph.cited_articles([n.pk for n in resolutions])
        for resolution in resolutions:
            resolution.articles = articles.get(str(resolution.pk), [])
        return super().to_representation(resolutions)


class ResolutionSerializer(NodeSerializer):
    """A resolution node annotated with ``tickets`` (``graph.similar_resolutions``)."""

    tickets = AsIsIntegerField(help_text="Tickets it resolved.")
    articles = AsIsListField(
        child=inline_serializer(
            "CitedArticle",
            {
                "id": serializers.UUIDField(),
                "key": serializers.CharField(),
                "label": serializers.CharField(),
            },
        ),
    )

    class Meta:
        list_serializer_class = CitedArticleListSerializer


class NodeFilter(django_filters.FilterSet):
    kind = choice_filter(NodeKind.values)
    category = text_filter(None, lookup_expr="iexact")
    key = text_filter(None, help_text="Exact key, e.g. zendesk:user:123")
    q = text_filter(
        None,
        field_name="label",
        lookup_expr="icontains",
        help_text="Label contains (case-insensitive)",
    )

    class Meta:
        model = GraphNode
        fields: list[str] = []


# Arguments of graph.similar_resolutions, not filters of a queryset: read by the view.
SIMILAR_PARAMETERS = [
    OpenApiParameter("category", OpenApiTypes.STR, description="Default: every category"),
    OpenApiParameter(
        "ticket", OpenApiTypes.UUID, description="A ticket node: its category, its own excluded"
    ),
]


class NodeListView(ListEndpoint, TenantScopedAPIView):
    filterset_class = NodeFilter
    ordering_fields = ("last_seen", "first_seen", "label", "kind")
    ordering = "last_seen"

    @extend_schema(
        operation_id="graph_nodes_list",
        responses={200: NodeSerializer(many=True), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        return self.list_response(request, GraphNode.objects.all(), NodeSerializer)


class NodeDetailView(TenantScopedAPIView):
    @extend_schema(
        operation_id="graph_nodes_retrieve",
        responses={200: NodeDetailSerializer, **errors(401, 403, 404)},
    )
    def get(self, request: Request, node_id: str) -> Response:
        node = _or_404(GraphNode.objects, node_id)
        return Response(NodeDetailSerializer(node).data)


class JourneyView(TenantScopedAPIView):
    @extend_schema(
        operation_id="graph_customer_journey",
        responses={200: JourneySerializer, **errors(401, 403, 404, 422)},
    )
    def get(self, request: Request, node_id: str) -> Response:
        node = _or_404(GraphNode.objects, node_id)
        if node.kind != NodeKind.CUSTOMER:
            raise unprocessable("Journeys are of customers.", {"node_id": ["Not a customer node."]})
        journey = {"customer": node, "steps": graph.journey(node)}
        return Response(JourneySerializer(journey).data)


class SimilarResolutionsView(ListEndpoint, TenantScopedAPIView):
    @extend_schema(
        operation_id="graph_similar_resolutions",
        parameters=SIMILAR_PARAMETERS,
        responses={200: ResolutionSerializer(many=True), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        category = request.query_params.get("category", "")
        ticket = None
        if ticket_id := request.query_params.get("ticket"):
            ticket = GraphNode.objects.filter(pk=_uuid(ticket_id), kind=NodeKind.TICKET).first()
            if ticket is None:
                raise unprocessable("Unknown ticket.", {"ticket": ["No such ticket node."]})
            category = category or ticket.category
        queryset = graph.similar_resolutions(category, ticket)
        return self.list_response(request, queryset, ResolutionSerializer)


def _uuid(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise unprocessable("ticket is not a UUID.", {"ticket": ["Must be a node id."]}) from None
