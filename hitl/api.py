"""The review queue over HTTP (``/api/v1/hitl/``): thin views over :mod:`hitl.services`.

Who may do what: anyone with ``read`` (every member, every key) sees the queue, a
request, its history, the reviewers and the SLA figures; ``write`` (operators, owners,
write keys) escalates a run by hand. Claiming, unclaiming and deciding need a member
whose role reaches the request's ``required_role`` (reviewer < operator < owner;
platform admins act as owners) or a ``write`` key, which may decide and release at any
level but not hold a request. Those three look the request up *before* checking the
caller, so a foreign or unknown id is the same ``404`` for every caller, and only then
``403``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from agentflow import orchestration
from agentflow.core.api.exceptions import unprocessable
from agentflow.core.api.filters import ChoiceListFilter, ListEndpoint, flag_filter
from agentflow.core.api.lookups import get_or_404
from agentflow.core.api.schema import IDEMPOTENCY_PARAMETER, errors
from agentflow.models import Run
from hitl import services, stats
from hitl.models import (
    OPEN_STATUSES,
    PRIORITY_RANK,
    HITLRequest,
    Kind,
    Status,
)
from hitl.policy import REVIEW_ROLES
from hitl.serializers import (
    ClaimSerializer,
    EscalateSerializer,
    HistoryEntrySerializer,
    RespondSerializer,
    ReviewerSerializer,
    ReviewRequestSerializer,
    StatsSerializer,
    UnclaimSerializer,
    request_body,
)
from tenants.authentication import actor_for
from tenants.idempotency import idempotent
from tenants.models import APIKey, Membership, Role
from tenants.roles import is_platform_admin
from tenants.views_base import READ, WRITE, TenantScopedAPIView

STATUS_VALUES = [*Status.values, "open", "all"]
SORTABLE = {
    "priority": "priority_rank",
    "sla_deadline": "sla_deadline",
    "created_at": "created_at",
    "decided_at": "decided_at",
    "status": "status",
}
STATS_PARAMETERS = [OpenApiParameter("days", OpenApiTypes.INT, description="1-90, default 14")]
# Claim, unclaim and respond check the caller after the lookup (see the module docstring).
LOOKUP_FIRST = {"GET": READ, "HEAD": READ, "OPTIONS": READ, "POST": READ}


def reviewer_for(request: Request) -> services.Reviewer:
    actor = actor_for(request)
    if isinstance(request.auth, APIKey):
        return services.Reviewer(actor=actor, key_writes=request.auth.has_scope("write"))
    user = request.user
    assert user.pk is not None  # the base view lets only authenticated callers through
    role = Membership.objects.filter(user_id=user.pk).values_list("role", flat=True).first()
    if role is None and is_platform_admin(user):
        role = Role.OWNER  # a platform admin acting in a tenant it is not a member of
    return services.Reviewer(actor=actor, user_id=user.pk, role=role)


class QueueFilter(django_filters.FilterSet):
    """The queue's filters; without ``status``, the open requests."""

    status = ChoiceListFilter(
        allowed=STATUS_VALUES,
        method="filter_status",
        help_text="Comma-separated statuses, `open` (default: pending, assigned, escalated) "
        "or `all`.",
    )
    priority = ChoiceListFilter(
        allowed=list(PRIORITY_RANK), help_text="Comma-separated priorities."
    )
    kind = ChoiceListFilter(allowed=Kind.values, help_text="Comma-separated kinds.")
    assignee = django_filters.CharFilter(
        method="filter_assignee", help_text="`me`, `none` or a user id (integer)."
    )
    breached = flag_filter("breached_at", is_null=True)

    class Meta:
        model = HITLRequest
        fields: list[str] = []

    def filter_queryset(self, queryset: QuerySet[HITLRequest]) -> QuerySet[HITLRequest]:
        if not self.form.cleaned_data.get("status"):
            queryset = queryset.filter(status__in=OPEN_STATUSES)
        return super().filter_queryset(queryset)

    def filter_status(
        self, queryset: QuerySet[HITLRequest], name: str, value: list[str]
    ) -> QuerySet[HITLRequest]:
        if "all" in value:
            return queryset
        wanted = {s for s in value if s != "open"}
        if "open" in value:
            wanted |= set(OPEN_STATUSES)
        return queryset.filter(status__in=wanted)

    def filter_assignee(
        self, queryset: QuerySet[HITLRequest], name: str, value: str
    ) -> QuerySet[HITLRequest]:
        if value == "none":
            return queryset.filter(assignee__isnull=True)
        if value == "me":
            if isinstance(self.request.auth, APIKey):
                raise unprocessable(
                    "An API key is nobody.", {"assignee": ["'me' needs a signed-in member."]}
                )
            return queryset.filter(assignee_id=self.request.user.pk)
        if not value.isdigit() or len(value) > 12:
            raise unprocessable(
                "assignee is invalid.", {"assignee": ["Use me, none or a user id."]}
            )
        return queryset.filter(assignee_id=int(value))


def _request_or_404(request_id: Any) -> HITLRequest:
    return get_or_404(HITLRequest.objects.select_related("assignee", "decided_by"), pk=request_id)


class QueueView(ListEndpoint, TenantScopedAPIView):
    filterset_class = QueueFilter
    ordering_fields = SORTABLE
    # The queue's natural order: most urgent first, then the nearest deadline.
    unsorted_ordering = ("-priority_rank", "sla_deadline", "created_at", "pk")
    ordering_nulls_last = True

    @extend_schema(
        operation_id="hitl_queue",
        responses={200: ReviewRequestSerializer(many=True), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        queryset = HITLRequest.objects.select_related("assignee", "decided_by")
        return self.list_response(request, queryset, ReviewRequestSerializer)


class RequestDetailView(TenantScopedAPIView):
    @extend_schema(
        operation_id="hitl_request",
        responses={200: ReviewRequestSerializer, **errors(401, 403, 404)},
    )
    def get(self, request: Request, request_id: str) -> Response:
        return Response(request_body(_request_or_404(request_id)))


class ClaimView(TenantScopedAPIView):
    scope_map = LOOKUP_FIRST

    @extend_schema(
        operation_id="hitl_claim",
        request=ClaimSerializer,
        # An empty body has no schema to attach the hook's 413/415 to: documented here.
        responses={200: ReviewRequestSerializer, **errors(401, 403, 404, 409, 413, 415, 422)},
    )
    def post(self, request: Request, request_id: str) -> Response:
        item = _request_or_404(request_id)
        ClaimSerializer(data=request.data).is_valid(raise_exception=True)
        claimed = services.claim(reviewer=reviewer_for(request), request=item)
        return Response(request_body(claimed))


class UnclaimView(TenantScopedAPIView):
    scope_map = LOOKUP_FIRST

    @extend_schema(
        operation_id="hitl_unclaim",
        request=UnclaimSerializer,
        responses={200: ReviewRequestSerializer, **errors(401, 403, 404, 409, 422)},
    )
    def post(self, request: Request, request_id: str) -> Response:
        item = _request_or_404(request_id)
        data = UnclaimSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        released = services.unclaim(
            reviewer=reviewer_for(request),
            request=item,
            reason=data.validated_data.get("reason", ""),
        )
        return Response(request_body(released))


class RespondView(TenantScopedAPIView):
    scope_map = LOOKUP_FIRST

    @extend_schema(
        operation_id="hitl_respond",
        request=RespondSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={200: ReviewRequestSerializer, **errors(401, 403, 404, 409, 422)},
    )
    @idempotent
    def post(self, request: Request, request_id: str) -> Response:
        item = _request_or_404(request_id)
        data = RespondSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        decided = orchestration.decide_review(
            reviewer=reviewer_for(request),
            request=item,
            decision=data.validated_data["decision"],
            response=data.validated_data.get("response"),
            reason=data.validated_data.get("reason", ""),
            arguments=data.validated_data.get("arguments"),
        )
        return Response(request_body(decided))


class HistoryView(ListEndpoint, TenantScopedAPIView):
    @extend_schema(
        operation_id="hitl_history",
        responses={200: HistoryEntrySerializer(many=True), **errors(401, 403, 404, 422)},
    )
    def get(self, request: Request, request_id: str) -> Response:
        item = _request_or_404(request_id)
        return self.list_response(request, item.events.order_by("at", "id"), HistoryEntrySerializer)


class EscalateView(TenantScopedAPIView):
    scope_map = {"GET": READ, "HEAD": READ, "OPTIONS": READ, "POST": WRITE}

    @extend_schema(
        operation_id="hitl_escalate",
        request=EscalateSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: ReviewRequestSerializer, **errors(401, 403, 404, 409, 422)},
    )
    @idempotent
    def post(self, request: Request, run_id: str) -> Response:
        run = get_or_404(Run.objects.all(), pk=run_id)
        data = EscalateSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        queued = services.escalate_run(
            actor=actor_for(request),
            run=run,
            reason=data.validated_data["reason"],
            priority=data.validated_data.get("priority"),
        )
        return Response(
            request_body(queued),
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/hitl/queue/{queued.pk}"},
        )


class ReviewersView(ListEndpoint, TenantScopedAPIView):
    @extend_schema(
        operation_id="hitl_reviewers",
        responses={200: ReviewerSerializer(many=True), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        members = (
            Membership.objects.filter(role__in=REVIEW_ROLES)
            .select_related("user")
            .order_by("user__username", "pk")
        )
        return self.list_response(request, members, ReviewerSerializer)


class StatsView(TenantScopedAPIView):
    @extend_schema(
        operation_id="hitl_stats",
        parameters=STATS_PARAMETERS,
        responses={200: StatsSerializer, **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        raw = request.query_params.get("days") or "14"
        if not raw.isdigit() or not 1 <= int(raw) <= 90:
            raise unprocessable("days is invalid.", {"days": ["An integer from 1 to 90."]})
        return Response(
            StatsSerializer(stats.daily_stats(now=datetime.now(UTC), days=int(raw))).data
        )
