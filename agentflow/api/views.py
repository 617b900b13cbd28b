"""Agents, runs, conversations and knowledge: thin views over agentflow.services."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import django_filters
import redis
from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers as drf_serializers
from rest_framework import status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from agentflow import agent_usage, budgets, knowledge, services, takeover, tooling
from agentflow.api.prefer import parse_prefer
from agentflow.api.serializers import (
    NO_RESULT,
    AgentCreateSerializer,
    AgentSerializer,
    AgentUpdateSerializer,
    AgentUsageSerializer,
    BlueprintSerializer,
    DocumentSerializer,
    KnowledgeCreateSerializer,
    KnowledgeUploadSerializer,
    MessageSerializer,
    PreflightAccuracySerializer,
    PreflightCreateSerializer,
    PreflightSerializer,
    RunCreateSerializer,
    RunSerializer,
    RunStepsSerializer,
    RunWithStepsSerializer,
    SessionActionSerializer,
    SessionReplySerializer,
    SessionSerializer,
    ToolCallSerializer,
    ToolInvokeSerializer,
    ToolSerializer,
    run_body,
)
from agentflow.core.api.exceptions import ContractError, unprocessable
from agentflow.core.api.filters import ListEndpoint, choice_filter
from agentflow.core.api.lookups import get_or_404
from agentflow.core.api.parsers import BoundedJSONParser
from agentflow.core.api.schema import IDEMPOTENCY_PARAMETER, errors
from agentflow.core.api.serializers import StrictSerializer
from agentflow.core.conf import setting_float
from agentflow.models import (
    Agent,
    AgentSession,
    KnowledgeDocument,
    Message,
    Run,
    RunStatus,
    ToolCall,
)
from agentflow.pipelines import BLUEPRINTS, AgentConfigError, validate_agent_config
from agentflow.planners import has_budget, preflight_agent
from agentflow.run_result import plan_steps
from agentflow.run_signals import SettledWaiter
from tenants.authentication import actor_for
from tenants.idempotency import idempotent
from tenants.roles import READ, REVIEW, roles_with
from tenants.views_base import DEFAULT_SCOPE_MAP, TenantScopedAPIView

PREFER_PARAMETER = OpenApiParameter(
    "Prefer",
    OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    description="respond-async (always 202) or wait=N (wait up to N s for a 201).",
)


def _config_error(exc: services.AgentConfigInvalid | AgentConfigError) -> ContractError:
    """422 whose ``detail`` lists every error (a planner's name their lines) and whose
    ``errors`` group them by field."""
    fields = exc.fields if isinstance(exc, services.AgentConfigInvalid) else exc.by_field()
    listed = "; ".join(
        f"{path}: {reason}" for path, reasons in fields.items() for reason in reasons
    )
    return unprocessable(f"Agent config is invalid: {listed}", fields)


def _knowledge_error(exc: knowledge.KnowledgeError) -> ContractError:
    if isinstance(exc, knowledge.UnsupportedContentType):
        return ContractError(
            str(exc),
            status_code=415,
            error_type="unsupported_media_type",
            extra={"allowed": list(knowledge.CONTENT_TYPES)},
        )
    if isinstance(exc, knowledge.KnowledgeTooLarge):
        return ContractError(str(exc), status_code=413, error_type="payload_too_large")
    if isinstance(exc, knowledge.EmbedderUnavailable):  # the operator's server, not the input
        return ContractError(
            str(exc),
            status_code=503,
            error_type="embedder_unavailable",
            headers={"Retry-After": "30"},
        )
    if isinstance(exc, knowledge.KnowledgeQuotaExceeded):
        return ContractError(
            str(exc),
            status_code=429,
            error_type="quota_exceeded",
            extra={"limit": "knowledge_bytes", "resets_at": None},
        )
    return unprocessable("Document rejected.", {"content": [str(exc)]})


class BlueprintListView(TenantScopedAPIView):
    @extend_schema(
        operation_id="blueprints_list",
        responses={
            200: inline_serializer(
                "BlueprintList",
                {
                    "results": BlueprintSerializer(many=True),
                    "total": drf_serializers.IntegerField(),
                },
            ),
            **errors(401, 403),
        },
    )
    def get(self, request: Request) -> Response:
        return Response(
            {
                "results": BlueprintSerializer(BLUEPRINTS.values(), many=True).data,
                "total": len(BLUEPRINTS),
            }
        )


class RunFilter(django_filters.FilterSet):
    status = choice_filter(RunStatus.values)

    class Meta:
        model = Run
        fields: list[str] = []


class AgentListView(ListEndpoint, TenantScopedAPIView):
    ordering_fields = ("created_at", "name", "updated_at")
    ordering = "created_at"

    @extend_schema(
        operation_id="agents_list",
        responses={200: AgentSerializer(many=True), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        return self.list_response(request, Agent.objects.all(), AgentSerializer)

    @extend_schema(
        operation_id="agents_create",
        request=AgentCreateSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: AgentSerializer, **errors(401, 403, 409, 422, 429)},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = AgentCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data["blueprint"] not in BLUEPRINTS:
            raise unprocessable(
                "Unknown blueprint.", {"blueprint": [f"Use one of: {', '.join(BLUEPRINTS)}."]}
            )
        try:
            agent = services.create_agent(
                actor=actor_for(request), tenant=self.tenant, **data.validated_data
            )
        except services.AgentConfigInvalid as exc:
            raise _config_error(exc) from exc
        return Response(
            AgentSerializer(agent).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/agents/{agent.pk}"},
        )


class AgentDetailView(TenantScopedAPIView):
    @extend_schema(
        operation_id="agents_retrieve", responses={200: AgentSerializer, **errors(401, 403, 404)}
    )
    def get(self, request: Request, agent_id: str) -> Response:
        return Response(AgentSerializer(get_or_404(Agent.objects, pk=agent_id)).data)

    @extend_schema(
        operation_id="agents_update",
        request=AgentUpdateSerializer,
        responses={200: AgentSerializer, **errors(401, 403, 404, 409, 422)},
    )
    def patch(self, request: Request, agent_id: str) -> Response:
        agent = get_or_404(Agent.objects, pk=agent_id)
        data = AgentUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            agent = services.update_agent(
                actor=actor_for(request), agent=agent, **data.validated_data
            )
        except services.AgentConfigInvalid as exc:
            raise _config_error(exc) from exc
        return Response(AgentSerializer(agent).data)

    @extend_schema(operation_id="agents_destroy", responses={204: None, **errors(401, 403, 404)})
    def delete(self, request: Request, agent_id: str) -> Response:
        services.delete_agent(
            actor=actor_for(request), agent=get_or_404(Agent.objects, pk=agent_id)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class AgentPreflightView(TenantScopedAPIView):
    """The cost estimate of one message along the agent's plan; nothing runs or is written.

    A read: it changes nothing, so whoever may see the agent may ask (a viewer too).
    ``GET`` reports how close the estimates made before its runs came to what they spent.
    """

    scope_map = {**DEFAULT_SCOPE_MAP, "POST": READ}

    @extend_schema(
        operation_id="agents_preflight_accuracy",
        responses={200: PreflightAccuracySerializer, **errors(401, 403, 404)},
    )
    def get(self, request: Request, agent_id: str) -> Response:
        agent = get_or_404(Agent.objects, pk=agent_id)
        body = {
            "agent_id": agent.pk,
            "window": services.PREFLIGHT_ACCURACY_RUNS,
            "tokens": services.agent_preflight_accuracy(agent),
        }
        return Response(PreflightAccuracySerializer(body).data)

    @extend_schema(
        operation_id="agents_preflight",
        request=PreflightCreateSerializer,
        responses={200: PreflightSerializer, **errors(401, 403, 404, 422)},
    )
    def post(self, request: Request, agent_id: str) -> Response:
        agent = get_or_404(Agent.objects, pk=agent_id)
        data = PreflightCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            config = validate_agent_config(agent.blueprint, agent.config)
        except AgentConfigError as exc:  # stored before a rule it breaks existed
            raise _config_error(exc) from exc
        message = data.validated_data["message"]
        estimate = preflight_agent(
            str(agent.pk),
            config,
            message,
            tooling.tool_costs(agent, config),
            token_scale=services.agent_token_scale(agent),
            spent_usd=budgets.spent_today(agent) if has_budget(config) else 0.0,
        )
        return Response(PreflightSerializer(estimate).data)


class _RunList(ListEndpoint):
    filterset_class = RunFilter
    ordering_fields = ("created_at", "status", "priority")
    ordering = "created_at"

    def runs_response(self, request: Request, queryset: QuerySet[Run]) -> Response:
        return self.list_response(request, queryset, RunSerializer, NO_RESULT)


class AgentRunsView(_RunList, TenantScopedAPIView):
    """``POST`` starts a run: 201 with the result when it settles in time, else 202."""

    @extend_schema(responses={200: RunSerializer(many=True), **errors(401, 403, 404, 422)})
    def get(self, request: Request, agent_id: str) -> Response:
        agent = get_or_404(Agent.objects, pk=agent_id)
        return self.runs_response(request, Run.objects.filter(agent=agent))

    @extend_schema(
        request=RunCreateSerializer,
        parameters=[IDEMPOTENCY_PARAMETER, PREFER_PARAMETER],
        responses={
            201: RunSerializer,
            202: RunSerializer,
            **errors(401, 402, 403, 404, 409, 422, 429),
        },
    )
    @idempotent
    def post(self, request: Request, agent_id: str) -> Response:
        # The tenant with the agent: start_run reads its quotas without another query.
        agent = get_or_404(Agent.objects.select_related("tenant"), pk=agent_id)
        data = RunCreateSerializer(data=request.data, context={"request": request})
        data.is_valid(raise_exception=True)
        max_wait = setting_float("RUN_MAX_WAIT_SECONDS")
        prefer = parse_prefer(request.headers.get("Prefer"), max_wait=max_wait)
        default_wait = setting_float("RUN_DEFAULT_WAIT_SECONDS")
        wait = (
            0.0
            if prefer.respond_async
            else (prefer.wait if prefer.wait is not None else default_wait)
        )
        run_request = services.RunRequest(**data.validated_data)
        waiter = None
        try:
            if wait > 0:
                # Listen before the run can possibly finish, so a fast run is not missed.
                waiter = _PendingWait()
            run = services.start_run(
                actor=actor_for(request),
                agent=agent,
                request=run_request,
                on_created=waiter.attach if waiter else None,
            )
            if waiter is not None:
                waiter.wait(wait)
                run.refresh_from_db()
        finally:
            if waiter is not None:
                waiter.close()
        location = f"/api/v1/runs/{run.pk}"
        if run.status in (RunStatus.COMPLETED, RunStatus.AWAITING_REVIEW, RunStatus.FAILED):
            return Response(
                run_body(run),
                status=status.HTTP_201_CREATED,
                headers={"Location": location},
            )
        return Response(
            run_body(run, include_result=False),
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": location, "Retry-After": "1"},
        )


class _PendingWait:
    """Subscribes to the run's settled signal as soon as the run id exists."""

    def __init__(self) -> None:
        self._waiter: SettledWaiter | None = None

    def attach(self, run_id: Any) -> None:
        # Redis down: no waiting, the run is still accepted and answered 202.
        with contextlib.suppress(redis.RedisError):
            self._waiter = SettledWaiter(run_id)

    def wait(self, timeout: float) -> None:
        if self._waiter is not None:
            with contextlib.suppress(redis.RedisError):
                self._waiter.wait(timeout)

    def close(self) -> None:
        if self._waiter is not None:
            self._waiter.close()


class RunListView(_RunList, TenantScopedAPIView):
    @extend_schema(
        operation_id="runs_list",
        responses={200: RunSerializer(many=True), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        return self.runs_response(request, Run.objects.all())


class RunDetailView(TenantScopedAPIView):
    @extend_schema(
        operation_id="runs_retrieve",
        responses={
            200: RunSerializer,
            303: OpenApiResponse(description="Completed: see Location."),
            **errors(401, 403, 404),
        },
    )
    def get(self, request: Request, run_id: str) -> Response:
        run = get_or_404(Run.objects, pk=run_id)
        if run.status == RunStatus.COMPLETED:
            return Response(
                status=status.HTTP_303_SEE_OTHER,
                headers={"Location": f"/api/v1/runs/{run.pk}/result"},
            )
        headers = {} if run.is_terminal else {"Retry-After": "1"}
        return Response(run_body(run), headers=headers)

    @extend_schema(
        operation_id="runs_cancel", responses={200: RunSerializer, **errors(401, 403, 404, 409)}
    )
    def delete(self, request: Request, run_id: str) -> Response:
        run = services.cancel_run(actor=actor_for(request), run=get_or_404(Run.objects, pk=run_id))
        return Response(run_body(run))


class RunResultView(TenantScopedAPIView):
    @extend_schema(
        operation_id="runs_result",
        responses={200: RunWithStepsSerializer, **errors(401, 403, 404, 409)},
    )
    def get(self, request: Request, run_id: str) -> Response:
        run = get_or_404(Run.objects, pk=run_id)
        if run.status != RunStatus.COMPLETED:
            raise ContractError(
                f"Run is {run.status}; it has no result yet.",
                status_code=409,
                error_type="run_not_completed",
                extra={"status": run.status},
            )
        return Response(RunWithStepsSerializer(run).data)


class RunStepsView(TenantScopedAPIView):
    @extend_schema(
        operation_id="runs_steps",
        responses={200: RunStepsSerializer, **errors(401, 403, 404)},
    )
    def get(self, request: Request, run_id: str) -> Response:
        """The planner's path of a run, in order; empty (with Retry-After) until it settles."""
        run = get_or_404(Run.objects, pk=run_id)
        body = {
            "run_id": run.pk,
            "status": run.status,
            "steps": plan_steps(run.result, run.started_at),
        }
        headers = (
            {}
            if run.is_terminal or run.status == RunStatus.AWAITING_REVIEW
            else {"Retry-After": "1"}
        )
        return Response(RunStepsSerializer(body).data, headers=headers)


class SessionConversationView(ListEndpoint, TenantScopedAPIView):
    @extend_schema(
        operation_id="sessions_conversation",
        responses={200: MessageSerializer(many=True), **errors(401, 403, 404, 422)},
    )
    def get(self, request: Request, session_id: str) -> Response:
        session = get_or_404(AgentSession.objects, pk=session_id)
        queryset = (
            Message.objects.filter(session=session)
            .select_related("author")
            .order_by("created_at", "id")
        )
        return self.list_response(request, queryset, MessageSerializer)


# Taking a conversation over: a lookup first (a foreign id is 404 whatever the caller's
# role), then the caller must be a person whose role reviews (reviewer, operator, owner).
_LOOKUP_FIRST = {**DEFAULT_SCOPE_MAP, "POST": READ}
_TAKERS = roles_with(REVIEW)


class _SessionAction(TenantScopedAPIView):
    scope_map = _LOOKUP_FIRST
    body: type[StrictSerializer] = SessionActionSerializer

    def taker_session(self, request: Request, session_id: str) -> tuple[AgentSession, Any]:
        """The session (404 when not the tenant's) and the checked body (413/415/422), once
        the caller may take it over (403)."""
        session = get_or_404(AgentSession.objects, pk=session_id)
        data = self.body(data=request.data)
        data.is_valid(raise_exception=True)
        if request.auth is not None:
            raise takeover.person_required()
        if self.role not in _TAKERS:
            raise ContractError(
                "Taking over a conversation needs the review role (reviewer, operator, owner).",
                status_code=status.HTTP_403_FORBIDDEN,
                error_type="permission_denied",
            )
        return session, data.validated_data


class SessionDetailView(TenantScopedAPIView):
    @extend_schema(
        operation_id="sessions_retrieve",
        responses={200: SessionSerializer, **errors(401, 403, 404)},
    )
    def get(self, request: Request, session_id: str) -> Response:
        session = get_or_404(AgentSession.objects.select_related("taken_by"), pk=session_id)
        return Response(takeover.session_body(session))


class SessionTakeoverView(_SessionAction):
    @extend_schema(
        operation_id="sessions_takeover",
        request=SessionActionSerializer,
        # An empty body has no schema to attach the hook's 413/415 to: documented here.
        responses={200: SessionSerializer, **errors(401, 403, 404, 409, 413, 415, 422)},
    )
    def post(self, request: Request, session_id: str) -> Response:
        """Take the conversation over: the agent stays silent until it is handed back."""
        session, _ = self.taker_session(request, session_id)
        taken = takeover.take_over(actor=actor_for(request), user=request.user, session=session)
        return Response(takeover.session_body(taken))


class SessionHandbackView(_SessionAction):
    @extend_schema(
        operation_id="sessions_handback",
        request=SessionActionSerializer,
        responses={200: SessionSerializer, **errors(401, 403, 404, 409, 413, 415, 422)},
    )
    def post(self, request: Request, session_id: str) -> Response:
        """Hand the conversation back: the agent answers the next message again."""
        session, _ = self.taker_session(request, session_id)
        back = takeover.hand_back(actor=actor_for(request), user=request.user, session=session)
        return Response(takeover.session_body(back))


class SessionMessagesView(_SessionAction):
    body = SessionReplySerializer

    @extend_schema(
        operation_id="sessions_reply",
        request=SessionReplySerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: MessageSerializer, **errors(401, 403, 404, 409, 422)},
    )
    @idempotent
    def post(self, request: Request, session_id: str) -> Response:
        """The taker's reply to the end user (an assistant message authored by them)."""
        session, data = self.taker_session(request, session_id)
        message = takeover.reply(
            actor=actor_for(request), user=request.user, session=session, content=data["content"]
        )
        return Response(MessageSerializer(message).data, status=status.HTTP_201_CREATED)


class KnowledgeListView(ListEndpoint, TenantScopedAPIView):
    parser_classes = [BoundedJSONParser, MultiPartParser]

    @extend_schema(
        operation_id="knowledge_list",
        responses={200: DocumentSerializer(many=True), **errors(401, 403, 404, 422)},
    )
    def get(self, request: Request, agent_id: str) -> Response:
        agent = get_or_404(Agent.objects, pk=agent_id)
        queryset = KnowledgeDocument.objects.filter(agent=agent).order_by("-created_at")
        return self.list_response(request, queryset, DocumentSerializer)

    @extend_schema(
        operation_id="knowledge_create",
        request={
            "application/json": KnowledgeCreateSerializer,
            "multipart/form-data": KnowledgeUploadSerializer,
        },
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: DocumentSerializer, **errors(401, 403, 404, 413, 415, 422)},
    )
    @idempotent
    def post(self, request: Request, agent_id: str) -> Response:
        agent = get_or_404(Agent.objects, pk=agent_id)
        upload = request.FILES.get("file") if hasattr(request, "FILES") else None
        if upload is not None:
            content_type = (upload.content_type or "").split(";")[0].strip()
            if content_type not in knowledge.CONTENT_TYPES:
                unsupported = f"unsupported document type {content_type!r}"
                raise _knowledge_error(knowledge.UnsupportedContentType(unsupported))
            raw = upload.read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise unprocessable(
                    "Document is not UTF-8 text.", {"file": ["Not UTF-8."]}
                ) from None
            form = request.data  # multipart: the QueryDict of the other fields
            given = form.get("title") if isinstance(form, dict) else None
            title = given or upload.name or "document"
        else:
            data = KnowledgeCreateSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            title, text = data.validated_data["title"], data.validated_data["content"]
            content_type = data.validated_data["content_type"]
        try:
            document = knowledge.ingest_document(
                agent=agent, title=str(title), content_type=content_type, text=text
            )
        except knowledge.KnowledgeError as exc:
            raise _knowledge_error(exc) from exc
        return Response(
            DocumentSerializer(document).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/agents/{agent.pk}/knowledge/{document.pk}"},
        )


class KnowledgeDetailView(TenantScopedAPIView):
    @extend_schema(
        operation_id="knowledge_retrieve",
        responses={200: DocumentSerializer, **errors(401, 403, 404)},
    )
    def get(self, request: Request, agent_id: str, document_id: str) -> Response:
        return Response(
            DocumentSerializer(
                get_or_404(KnowledgeDocument.objects, pk=document_id, agent_id=agent_id)
            ).data
        )

    @extend_schema(operation_id="knowledge_destroy", responses={204: None, **errors(401, 403, 404)})
    def delete(self, request: Request, agent_id: str, document_id: str) -> Response:
        agent = get_or_404(Agent.objects, pk=agent_id)
        if not knowledge.delete_document(agent=agent, document_id=document_id):
            raise Http404
        return Response(status=status.HTTP_204_NO_CONTENT)


def _tool_role(view: TenantScopedAPIView) -> str:
    """The governance role whose tool levels apply to this caller (an API key: operator)."""
    return view.role or tooling.API_KEY_ROLE


def _tool_refusal(exc: tooling.ToolInvocationError) -> ContractError | Http404:
    if isinstance(exc, tooling.ToolNotFound):
        return Http404(str(exc))
    if isinstance(exc, tooling.ToolArgumentsInvalid):
        return unprocessable(f"Tool arguments are invalid: {exc}", exc.fields)
    if isinstance(exc, tooling.ToolRateLimited):
        return ContractError(
            str(exc),
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            error_type="rate_limited",
            extra={"retry_after": exc.retry_after},
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, tooling.ToolNeedsApproval):
        return ContractError(
            f"{exc}; it could not be queued for approval.",
            status_code=status.HTTP_409_CONFLICT,
            error_type="approval_required",
        )
    return ContractError(
        str(exc), status_code=status.HTTP_403_FORBIDDEN, error_type="permission_denied"
    )


class AgentToolsView(TenantScopedAPIView):
    @extend_schema(
        operation_id="agents_tools",
        responses={200: ToolSerializer(many=True), **errors(401, 403, 404, 422)},
    )
    def get(self, request: Request, agent_id: str) -> Response:
        """Every tool the agent can see, whether its config grants it, and the caller's
        governance level for it; tools are denied by default."""
        agent = get_or_404(Agent.objects.select_related("tenant"), pk=agent_id)
        try:
            views = tooling.agent_tools(agent, _tool_role(self))
        except AgentConfigError as exc:  # stored before a rule it breaks existed
            raise _config_error(exc) from exc
        return Response(ToolSerializer(views, many=True).data)


class AgentToolInvokeView(TenantScopedAPIView):
    @extend_schema(
        operation_id="agents_tools_invoke",
        parameters=[
            OpenApiParameter(
                "tool_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="e.g. demo.add"
            )
        ],
        request=ToolInvokeSerializer,
        responses={
            200: ToolCallSerializer,
            202: ToolCallSerializer,
            **errors(401, 403, 404, 409, 422, 429),
        },
    )
    def post(self, request: Request, agent_id: str, tool_id: str) -> Response:
        """An operator's "try this tool", under the rules of a run; the call is recorded."""
        agent = get_or_404(Agent.objects.select_related("tenant"), pk=agent_id)
        data = ToolInvokeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            call = tooling.invoke_as_operator(
                actor=actor_for(request),
                agent=agent,
                role=_tool_role(self),
                tool_id=tool_id,
                arguments=data.validated_data["arguments"],
            )
        except AgentConfigError as exc:
            raise _config_error(exc) from exc
        except tooling.ToolNeedsApproval as exc:
            if exc.proposal is None:
                raise _tool_refusal(exc) from exc
            return self._proposed(request, agent, exc.proposal)
        except tooling.ToolInvocationError as exc:
            raise _tool_refusal(exc) from exc
        return Response(ToolCallSerializer(call).data)

    def _proposed(self, request: Request, agent: Agent, proposal: dict[str, Any]) -> Response:
        """202: the call waits for approval in the review queue (Location: the request)."""
        run, review = services.propose_tool_action(
            actor=actor_for(request), agent=agent, proposal=proposal
        )
        call = ToolCall.objects.get(run=run)
        return Response(
            ToolCallSerializer(call).data,
            status=status.HTTP_202_ACCEPTED,
            headers={"Location": f"/api/v1/hitl/queue/{review.pk}"},
        )


class RunToolCallsView(ListEndpoint, TenantScopedAPIView):
    ordering_fields = ("created_at",)
    ordering = "created_at"

    @extend_schema(
        operation_id="runs_tool_calls",
        responses={200: ToolCallSerializer(many=True), **errors(401, 403, 404, 422)},
    )
    def get(self, request: Request, run_id: str) -> Response:
        """The tool calls of a run (by created_at; sort_order=asc: in call order)."""
        run = get_or_404(Run.objects, pk=run_id)
        return self.list_response(request, ToolCall.objects.filter(run=run), ToolCallSerializer)


USAGE_PARAMETERS = [
    OpenApiParameter(
        "days", OpenApiTypes.INT, description=f"1-{agent_usage.MAX_DAYS}, default 7 (today too)"
    )
]


def _usage_days(request: Request) -> int:
    raw = request.query_params.get("days") or str(agent_usage.DEFAULT_DAYS)
    if not raw.isdigit() or not 1 <= int(raw) <= agent_usage.MAX_DAYS:
        reason = f"An integer from 1 to {agent_usage.MAX_DAYS}."
        raise unprocessable("days is invalid.", {"days": [reason]})
    return int(raw)


class AgentsUsageView(TenantScopedAPIView):
    """Tokens and dollars of every agent of the tenant per UTC day (a read)."""

    @extend_schema(
        operation_id="usage_agents",
        parameters=USAGE_PARAMETERS,
        responses={200: AgentUsageSerializer, **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        usage = agent_usage.agent_days(now=datetime.now(UTC), days=_usage_days(request))
        return Response(AgentUsageSerializer(usage).data)


class AgentUsageView(TenantScopedAPIView):
    """Tokens and dollars of one agent per UTC day (a read); another tenant's agent: 404."""

    @extend_schema(
        operation_id="agents_usage",
        parameters=USAGE_PARAMETERS,
        responses={200: AgentUsageSerializer, **errors(401, 403, 404, 422)},
    )
    def get(self, request: Request, agent_id: str) -> Response:
        agent = get_or_404(Agent.objects, pk=agent_id)
        days = _usage_days(request)
        usage = agent_usage.agent_days(now=datetime.now(UTC), days=days, agent=agent)
        return Response(AgentUsageSerializer(usage).data)
