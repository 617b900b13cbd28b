"""The learning loop over HTTP (thin views over services):

* ``GET /api/v1/learning/golden-paths`` (list), ``.../search?q=`` (by similarity, with
  scores), ``.../{golden_path_id}``, ``POST .../{golden_path_id}/deactivate|activate``;
* ``POST /api/v1/learning/feedback`` (score a run's answer), ``GET`` (list);
* ``GET /api/v1/learning/playbooks`` (list), ``.../suggest?agent_id=&category=``,
  ``.../{playbook_id}``, ``POST .../{playbook_id}/retire``, ``POST .../{playbook_id}/apply``
  (the agent runs the playbook's FSM), ``POST .../extract``.
"""

from __future__ import annotations

import uuid
from typing import Any

import django_filters
from django.db.models import Manager, QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from agentflow.api.serializers import AgentSerializer
from agentflow.core.api.exceptions import unprocessable
from agentflow.core.api.filters import (
    ListEndpoint,
    choice_filter,
    flag_filter,
    text_filter,
    uuid_filter,
)
from agentflow.core.api.schema import IDEMPOTENCY_PARAMETER, errors
from agentflow.core.api.serializers import StrictIntegerField, StrictSerializer
from agentflow.models import Agent, Run
from agentflow.services import AgentConfigInvalid
from governance.services import restrict_to_visible_agents
from learning import feedback as feedback_service
from learning import golden_paths, playbook_agents, playbooks
from learning.models import Feedback, GoldenPath, GoldenPathSource, Playbook, PlaybookStatus
from learning.serializers import (
    FeedbackSerializer,
    GoldenPathHitSerializer,
    GoldenPathSerializer,
    PlaybookSerializer,
)
from tenants.authentication import actor_for
from tenants.idempotency import idempotent
from tenants.views_base import REVIEW, WRITE, TenantScopedAPIView

MAX_SEARCH_LIMIT = 50
MAX_QUERY_CHARS = 4_000


class _LearningView(TenantScopedAPIView):
    def visible(self, queryset: QuerySet[Any], field: str = "agent") -> QuerySet[Any]:
        """Rows of agents the caller may see (governance restrictions), filtered in SQL."""
        if self.role is None:  # an API key: the tenant's machine credential sees every agent
            return queryset
        return restrict_to_visible_agents(queryset, self.request.user, self.tenant.pk, field)

    def one(self, rows: Manager[Any] | QuerySet[Any], pk: Any) -> Any:
        found = self.visible(rows.all()).filter(pk=pk).first()
        if found is None:
            raise Http404
        return found

    def agent_param(self, request: Request, name: str = "agent_id") -> Agent | None:
        value = request.query_params.get(name)
        if not value:
            return None
        try:
            agent_id = uuid.UUID(value)
        except ValueError:
            raise unprocessable(f"{name} is invalid.", {name: ["A UUID."]}) from None
        agent = self.visible(Agent.objects.filter(pk=agent_id)).first()
        if agent is None:  # foreign and missing agents look the same
            raise unprocessable("Unknown agent.", {name: ["No such agent in this tenant."]})
        return agent


def _choice(request: Request, name: str, allowed: list[str]) -> str | None:
    value = request.query_params.get(name)
    if value and value not in allowed:
        raise unprocessable(f"{name} is invalid.", {name: [f"Use one of: {', '.join(allowed)}."]})
    return value or None


def _flag(request: Request, name: str) -> bool | None:
    value = _choice(request, name, ["true", "false"])
    return None if value is None else value == "true"


# --- golden paths ---------------------------------------------------------------------------


class _AgentFilterSet(django_filters.FilterSet):
    """``agent_id``: one agent the caller may see; a foreign or missing one is a 422."""

    agent_id = uuid_filter(method="filter_agent")
    category = text_filter(None)

    def filter_agent(self, queryset: QuerySet[Any], name: str, value: uuid.UUID) -> Any:
        view = self.request.parser_context["view"]
        if view.visible(Agent.objects.filter(pk=value)).first() is None:
            raise unprocessable("Unknown agent.", {name: ["No such agent in this tenant."]})
        return queryset.filter(agent_id=value)


class GoldenPathFilter(_AgentFilterSet):
    source = choice_filter(GoldenPathSource.values)
    active = flag_filter("is_active")

    class Meta:
        model = GoldenPath
        fields: list[str] = []


class GoldenPathListView(ListEndpoint, _LearningView):
    filterset_class = GoldenPathFilter
    ordering_fields = ("created_at", "updated_at", "usage_count", "score", "last_used_at")
    ordering = "created_at"

    @extend_schema(
        operation_id="golden_paths_list",
        responses={200: GoldenPathSerializer(many=True), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        rows = self.visible(GoldenPath.objects.defer("embedding"))
        return self.list_response(request, rows, GoldenPathSerializer)


class GoldenPathSearchView(_LearningView):
    @extend_schema(
        operation_id="golden_paths_search",
        parameters=[
            OpenApiParameter("q", OpenApiTypes.STR, required=True, description="The question."),
            OpenApiParameter("agent_id", OpenApiTypes.UUID),
            OpenApiParameter("limit", OpenApiTypes.INT, description=f"1..{MAX_SEARCH_LIMIT}"),
            OpenApiParameter("include_inactive", OpenApiTypes.STR, enum=["true", "false"]),
        ],
        responses={
            200: inline_serializer(
                "GoldenPathSearchResults", {"results": GoldenPathHitSerializer(many=True)}
            ),
            **errors(401, 403, 422),
        },
    )
    def get(self, request: Request) -> Response:
        query = request.query_params.get("q", "")
        if not query.strip() or len(query) > MAX_QUERY_CHARS or "\x00" in query:
            raise unprocessable(
                "q is invalid.", {"q": [f"A question of 1 to {MAX_QUERY_CHARS} characters."]}
            )
        raw_limit = request.query_params.get("limit", "5")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_SEARCH_LIMIT:
            raise unprocessable(
                "limit is invalid.", {"limit": [f"An integer from 1 to {MAX_SEARCH_LIMIT}."]}
            )
        agent = self.agent_param(request)
        hits = golden_paths.search(
            query=query,
            agent_id=agent.pk if agent is not None else None,
            limit=int(raw_limit),
            include_inactive=bool(_flag(request, "include_inactive")),
        )
        found = GoldenPath.objects.filter(pk__in=[hit.golden_path.pk for hit in hits])
        visible = set(self.visible(found).values_list("pk", flat=True))
        return Response(
            {
                "results": GoldenPathHitSerializer(
                    [hit for hit in hits if hit.golden_path.pk in visible], many=True
                ).data
            }
        )


class GoldenPathDetailView(_LearningView):
    @extend_schema(
        operation_id="golden_paths_retrieve",
        responses={200: GoldenPathSerializer, **errors(401, 403, 404)},
    )
    def get(self, request: Request, golden_path_id: str) -> Response:
        return Response(GoldenPathSerializer(self.one(GoldenPath.objects, golden_path_id)).data)


class NoBodySerializer(StrictSerializer):
    """An action without parameters: an empty JSON object, or no body at all."""


# Documented as an object with no properties: a client may send {} or nothing at all.
NO_BODY = {"application/json": {"type": "object", "properties": {}, "additionalProperties": False}}


def _no_body(request: Request) -> None:
    # Parsing refuses a huge (413), non-JSON (415) or malformed body; fields are unknown (422).
    NoBodySerializer(data=request.data or {}).is_valid(raise_exception=True)


class _GoldenPathSwitch(_LearningView):
    # Reviewers and operators curate what the agents answer from.
    scope_map = {"POST": REVIEW}
    active: bool

    def post(self, request: Request, golden_path_id: str) -> Response:
        _no_body(request)
        path = self.one(GoldenPath.objects, golden_path_id)
        path = golden_paths.set_active(actor=actor_for(request), path=path, active=self.active)
        return Response(GoldenPathSerializer(path).data)


class GoldenPathDeactivateView(_GoldenPathSwitch):
    active = False

    @extend_schema(
        operation_id="golden_paths_deactivate",
        request=NO_BODY,
        responses={200: GoldenPathSerializer, **errors(401, 403, 404, 422)},
    )
    def post(self, request: Request, golden_path_id: str) -> Response:
        return super().post(request, golden_path_id)


class GoldenPathActivateView(_GoldenPathSwitch):
    active = True

    @extend_schema(
        operation_id="golden_paths_activate",
        request=NO_BODY,
        responses={200: GoldenPathSerializer, **errors(401, 403, 404, 422)},
    )
    def post(self, request: Request, golden_path_id: str) -> Response:
        return super().post(request, golden_path_id)


# --- feedback -------------------------------------------------------------------------------


class FeedbackCreateSerializer(StrictSerializer):
    run_id = serializers.UUIDField()
    message_id = serializers.UUIDField(required=False)
    rating = StrictIntegerField(required=False, min_value=1, max_value=5)
    thumbs = serializers.ChoiceField(choices=["up", "down"], required=False)
    comment = serializers.CharField(required=False, allow_blank=True, max_length=4_000)
    # The stubs type `source` as Field.source; DRF's metaclass makes it a declared field.
    source = serializers.CharField(  # type: ignore[assignment]
        required=False, allow_blank=True, max_length=100
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("rating" in attrs) == ("thumbs" in attrs):
            raise serializers.ValidationError(
                {"rating": ["Send exactly one of rating (1-5) or thumbs (up/down)."]}
            )
        return attrs


class FeedbackFilter(django_filters.FilterSet):
    run_id = uuid_filter()

    class Meta:
        model = Feedback
        fields: list[str] = []


class FeedbackView(ListEndpoint, _LearningView):
    filterset_class = FeedbackFilter
    ordering_fields = ("created_at", "score")
    ordering = "created_at"

    @extend_schema(
        operation_id="feedback_list",
        responses={200: FeedbackSerializer(many=True), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        rows = self.visible(Feedback.objects.all(), field="run__agent")
        return self.list_response(request, rows, FeedbackSerializer)

    @extend_schema(
        operation_id="feedback_create",
        request=FeedbackCreateSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: FeedbackSerializer, **errors(401, 403, 409, 422)},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = FeedbackCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        run = self.visible(Run.objects.select_related("agent")).filter(pk=values["run_id"]).first()
        if run is None:  # a foreign run is as unknown as a missing one
            raise unprocessable("Unknown run.", {"run_id": ["No such run in this tenant."]})
        feedback = feedback_service.record_feedback(
            actor=actor_for(request),
            run=run,
            message_id=values.get("message_id"),
            rating=values.get("rating"),
            thumbs=values.get("thumbs"),
            comment=values.get("comment", ""),
            source=values.get("source", ""),
        )
        return Response(FeedbackSerializer(feedback).data, status=status.HTTP_201_CREATED)


# --- playbooks --------------------------------------------------------------------------------


class PlaybookFilter(_AgentFilterSet):
    status = choice_filter(PlaybookStatus.values)

    class Meta:
        model = Playbook
        fields: list[str] = []


class PlaybookListView(ListEndpoint, _LearningView):
    filterset_class = PlaybookFilter
    ordering_fields = ("created_at", "version", "success_rate")
    ordering = "created_at"

    @extend_schema(
        operation_id="playbooks_list",
        responses={200: PlaybookSerializer(many=True), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        rows = self.visible(Playbook.objects.all())
        return self.list_response(request, rows, PlaybookSerializer)


class PlaybookSuggestView(_LearningView):
    @extend_schema(
        operation_id="playbooks_suggest",
        parameters=[
            OpenApiParameter("agent_id", OpenApiTypes.UUID, required=True),
            OpenApiParameter("category", OpenApiTypes.STR, required=True),
        ],
        responses={
            200: inline_serializer(
                "PlaybookSuggestion", {"playbook": PlaybookSerializer(allow_null=True)}
            ),
            **errors(401, 403, 422),
        },
    )
    def get(self, request: Request) -> Response:
        agent = self.agent_param(request)
        category = request.query_params.get("category", "")
        if agent is None or not category:
            missing = {"agent_id": ["Required."]} if agent is None else {"category": ["Required."]}
            raise unprocessable("agent_id and category are required.", missing)
        found = playbooks.suggestion(agent.pk, category)
        return Response({"playbook": PlaybookSerializer(found).data if found else None})


class PlaybookDetailView(_LearningView):
    @extend_schema(
        operation_id="playbooks_retrieve",
        responses={200: PlaybookSerializer, **errors(401, 403, 404)},
    )
    def get(self, request: Request, playbook_id: str) -> Response:
        return Response(PlaybookSerializer(self.one(Playbook.objects, playbook_id)).data)


class PlaybookRetireView(_LearningView):
    scope_map = {"POST": WRITE}

    @extend_schema(
        operation_id="playbooks_retire",
        request=NO_BODY,
        responses={200: PlaybookSerializer, **errors(401, 403, 404, 422)},
    )
    def post(self, request: Request, playbook_id: str) -> Response:
        _no_body(request)
        playbook = self.one(Playbook.objects, playbook_id)
        playbook = playbooks.retire(actor=actor_for(request), playbook=playbook)
        return Response(PlaybookSerializer(playbook).data)


class PlaybookApplyView(_LearningView):
    """Tell the playbook's agent to run it: its FSM becomes the agent's ``config.planner``."""

    scope_map = {"POST": WRITE}

    @extend_schema(
        operation_id="playbooks_apply",
        request=NO_BODY,
        responses={
            200: inline_serializer(
                "PlaybookApplied", {"playbook": PlaybookSerializer(), "agent": AgentSerializer()}
            ),
            **errors(401, 403, 404, 409, 422),
        },
    )
    def post(self, request: Request, playbook_id: str) -> Response:
        _no_body(request)
        playbook = self.one(Playbook.objects, playbook_id)
        try:
            agent = playbook_agents.apply(actor=actor_for(request), playbook=playbook)
        except AgentConfigInvalid as exc:
            listed = "; ".join(f"{f}: {r}" for f, reasons in exc.fields.items() for r in reasons)
            raise unprocessable(f"Agent config is invalid: {listed}", exc.fields) from exc
        return Response(
            {"playbook": PlaybookSerializer(playbook).data, "agent": AgentSerializer(agent).data}
        )


class ExtractSerializer(StrictSerializer):
    agent_id = serializers.UUIDField()
    categories = serializers.ListField(
        child=serializers.CharField(min_length=1, max_length=100),
        required=False,
        max_length=200,
        help_text="Default: every category the agent's settled runs were classified as.",
    )


class PlaybookExtractView(_LearningView):
    scope_map = {"POST": WRITE}

    @extend_schema(
        operation_id="playbooks_extract",
        request=ExtractSerializer,
        responses={
            200: inline_serializer(
                "PlaybookExtractions",
                {
                    "results": inline_serializer(
                        "PlaybookExtraction",
                        {
                            "category": serializers.CharField(),
                            "outcome": serializers.ChoiceField(
                                choices=[
                                    "created",
                                    "unchanged",
                                    "retired",
                                    "too_few_samples",
                                    "low_success_rate",
                                ]
                            ),
                            "successes": serializers.IntegerField(),
                            "total": serializers.IntegerField(),
                            "success_rate": serializers.FloatField(),
                            "playbook": PlaybookSerializer(allow_null=True),
                        },
                        many=True,
                    )
                },
            ),
            **errors(401, 403, 422),
        },
    )
    def post(self, request: Request) -> Response:
        data = ExtractSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        agent = self.visible(Agent.objects.filter(pk=values["agent_id"])).first()
        if agent is None:
            raise unprocessable("Unknown agent.", {"agent_id": ["No such agent in this tenant."]})
        done = playbooks.extract_for_agent(
            agent, actor=actor_for(request), categories=values.get("categories")
        )
        return Response({"results": [item.as_dict() for item in done]})


__all__ = [
    "FeedbackView",
    "GoldenPathActivateView",
    "GoldenPathDeactivateView",
    "GoldenPathDetailView",
    "GoldenPathListView",
    "GoldenPathSearchView",
    "PlaybookApplyView",
    "PlaybookDetailView",
    "PlaybookExtractView",
    "PlaybookListView",
    "PlaybookRetireView",
    "PlaybookSuggestView",
]
