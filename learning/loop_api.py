"""The learning loop over HTTP (thin views over services):

* ``GET /api/v1/learning/golden-paths`` (list), ``.../search?q=`` (by similarity, with
  scores), ``.../{golden_path_id}``, ``POST .../{golden_path_id}/deactivate|activate``;
* ``POST /api/v1/learning/feedback`` (score a run's answer), ``GET`` (list);
* ``GET /api/v1/learning/playbooks`` (list), ``.../suggest?agent_id=&category=``,
  ``.../{playbook_id}``, ``POST .../{playbook_id}/retire``, ``POST .../extract``.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Manager, QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from agentflow.core.api.exceptions import unprocessable
from agentflow.core.api.pagination import paginate, sort_queryset
from agentflow.core.api.schema import IDEMPOTENCY_PARAMETER, LIST_PARAMETERS, envelope, errors
from agentflow.core.api.serializers import StrictIntegerField, StrictSerializer
from agentflow.models import Agent, Run
from governance.services import restrict_to_visible_agents
from learning import feedback as feedback_service
from learning import golden_paths, playbooks
from learning.models import Feedback, GoldenPath, GoldenPathSource, Playbook, PlaybookStatus
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


class GoldenPathSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    agent_id = serializers.UUIDField()
    category = serializers.CharField()
    question = serializers.CharField()
    answer = serializers.CharField()
    # The stubs type `source` as Field.source; DRF's metaclass makes it a declared field.
    source = serializers.ChoiceField(choices=GoldenPathSource.values)  # type: ignore[assignment]
    score = serializers.FloatField()
    usage_count = serializers.IntegerField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    merged_count = serializers.IntegerField()
    is_active = serializers.BooleanField()
    source_run_id = serializers.UUIDField(allow_null=True)
    trace_summary = serializers.DictField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class GoldenPathHitSerializer(GoldenPathSerializer):
    similarity = serializers.FloatField(help_text="Cosine similarity of the questions, 0..1.")


GOLDEN_PATH_FILTERS = [
    *LIST_PARAMETERS,
    OpenApiParameter("agent_id", OpenApiTypes.UUID),
    OpenApiParameter("category", OpenApiTypes.STR),
    OpenApiParameter("source", OpenApiTypes.STR, enum=GoldenPathSource.values),
    OpenApiParameter("active", OpenApiTypes.STR, enum=["true", "false"]),
]


class GoldenPathListView(_LearningView):
    sortable = ("created_at", "updated_at", "usage_count", "score", "last_used_at")

    @extend_schema(
        operation_id="golden_paths_list",
        parameters=GOLDEN_PATH_FILTERS,
        responses={200: envelope(GoldenPathSerializer), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        rows = self.visible(GoldenPath.objects.all())
        agent = self.agent_param(request)
        if agent is not None:
            rows = rows.filter(agent=agent)
        if category := request.query_params.get("category"):
            rows = rows.filter(category=category)
        if source := _choice(request, "source", GoldenPathSource.values):
            rows = rows.filter(source=source)
        if (active := _flag(request, "active")) is not None:
            rows = rows.filter(is_active=active)
        rows = sort_queryset(request, rows.defer("embedding"), self.sortable, "created_at")
        return paginate(
            request, rows, lambda page: [golden_paths.golden_path_json(p) for p in page]
        )


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
                "results": [
                    golden_paths.golden_path_json(hit.golden_path, score=hit.score)
                    for hit in hits
                    if hit.golden_path.pk in visible
                ]
            }
        )


class GoldenPathDetailView(_LearningView):
    @extend_schema(
        operation_id="golden_paths_retrieve",
        responses={200: GoldenPathSerializer, **errors(401, 403, 404)},
    )
    def get(self, request: Request, golden_path_id: str) -> Response:
        return Response(golden_paths.golden_path_json(self.one(GoldenPath.objects, golden_path_id)))


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
        return Response(golden_paths.golden_path_json(path))


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


class FeedbackSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    run_id = serializers.UUIDField()
    message_id = serializers.UUIDField(allow_null=True)
    kind = serializers.ChoiceField(choices=["rating", "thumbs"])
    rating = serializers.IntegerField(allow_null=True)
    thumbs = serializers.ChoiceField(choices=["up", "down"], allow_null=True)
    score = serializers.FloatField(help_text="Normalised to 0..1.")
    comment = serializers.CharField()
    # The stubs type `source` as Field.source; DRF's metaclass makes it a declared field.
    source = serializers.CharField()  # type: ignore[assignment]
    golden_path_id = serializers.UUIDField(
        allow_null=True, help_text="The golden path this feedback made or scored."
    )
    created_at = serializers.DateTimeField()


class FeedbackView(_LearningView):
    sortable = ("created_at", "score")

    @extend_schema(
        operation_id="feedback_list",
        parameters=[*LIST_PARAMETERS, OpenApiParameter("run_id", OpenApiTypes.UUID)],
        responses={200: envelope(FeedbackSerializer), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        rows = self.visible(Feedback.objects.all(), field="run__agent")
        if run_id := request.query_params.get("run_id"):
            try:
                rows = rows.filter(run_id=uuid.UUID(run_id))
            except ValueError:
                raise unprocessable("run_id is invalid.", {"run_id": ["A UUID."]}) from None
        rows = sort_queryset(request, rows, self.sortable, "created_at")
        return paginate(
            request, rows, lambda page: [feedback_service.feedback_json(f) for f in page]
        )

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
        return Response(feedback_service.feedback_json(feedback), status=status.HTTP_201_CREATED)


# --- playbooks --------------------------------------------------------------------------------


class PlaybookSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    agent_id = serializers.UUIDField()
    category = serializers.CharField()
    version = serializers.IntegerField()
    name = serializers.CharField()
    steps = serializers.ListField(child=serializers.CharField())
    transitions = serializers.ListField(child=serializers.ListField(child=serializers.CharField()))
    sample_count = serializers.IntegerField()
    total_count = serializers.IntegerField()
    success_rate = serializers.FloatField()
    status = serializers.ChoiceField(choices=PlaybookStatus.values)
    created_at = serializers.DateTimeField()
    retired_at = serializers.DateTimeField(allow_null=True)


class PlaybookListView(_LearningView):
    sortable = ("created_at", "version", "success_rate")

    @extend_schema(
        operation_id="playbooks_list",
        parameters=[
            *LIST_PARAMETERS,
            OpenApiParameter("agent_id", OpenApiTypes.UUID),
            OpenApiParameter("category", OpenApiTypes.STR),
            OpenApiParameter("status", OpenApiTypes.STR, enum=PlaybookStatus.values),
        ],
        responses={200: envelope(PlaybookSerializer), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        rows = self.visible(Playbook.objects.all())
        agent = self.agent_param(request)
        if agent is not None:
            rows = rows.filter(agent=agent)
        if category := request.query_params.get("category"):
            rows = rows.filter(category=category)
        if state := _choice(request, "status", PlaybookStatus.values):
            rows = rows.filter(status=state)
        rows = sort_queryset(request, rows, self.sortable, "created_at")
        return paginate(request, rows, lambda page: [playbooks.playbook_json(p) for p in page])


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
        return Response({"playbook": playbooks.playbook_json(found) if found else None})


class PlaybookDetailView(_LearningView):
    @extend_schema(
        operation_id="playbooks_retrieve",
        responses={200: PlaybookSerializer, **errors(401, 403, 404)},
    )
    def get(self, request: Request, playbook_id: str) -> Response:
        return Response(playbooks.playbook_json(self.one(Playbook.objects, playbook_id)))


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
        return Response(playbooks.playbook_json(playbook))


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
    "PlaybookDetailView",
    "PlaybookExtractView",
    "PlaybookListView",
    "PlaybookRetireView",
    "PlaybookSuggestView",
]
