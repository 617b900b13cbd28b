"""Governance over the REST API: audit query and verify, exports, erasure, roles, tool grants.

Thin views over :mod:`governance.services`, :mod:`governance.erasure` and
:mod:`governance.exports`. Each declares its per-method scopes (ARCHITECTURE habit 3):
reading the audit trail, members and tool grants needs ``read``; exports, erasure, role
assignment and tool grants need ``admin`` (tenant owners, platform admins, write keys).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import Any

import django_filters
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agentflow.core.api.exceptions import ContractError, conflict, unprocessable
from agentflow.core.api.filters import (
    ListEndpoint,
    ZonedDateTimeFilter,
    prefix_filter,
    text_filter,
)
from agentflow.core.api.schema import errors
from agentflow.core.api.serializers import (
    AsIsBooleanField,
    AsIsCharField,
    AsIsDictField,
    AsIsIntegerField,
    StrictSerializer,
)
from agentflow.models import Agent
from governance import checkpoints, erasure, exports, invitations, services
from governance.audit import Actor, chain_head, seal_chain
from governance.models import AuditEvent, Invitation
from governance.verify import verify_chain
from tenants.views_base import ADMIN, DEFAULT_SCOPE_MAP, READ, TenantScopedAPIView

# --- serializers (shapes of the OpenAPI schema) -------------------------------------------


class VerificationSerializer(serializers.Serializer):
    """A :class:`~governance.verify.Verification` (or an unverified chain's answer)."""

    ok = AsIsBooleanField()
    events = AsIsIntegerField()
    first_bad = AsIsIntegerField(allow_null=True)
    reason = AsIsCharField(allow_null=True)
    head_sequence = AsIsIntegerField(allow_null=True)
    head_hash = AsIsCharField(allow_null=True)
    checkpoint_sequence = AsIsIntegerField(allow_null=True)
    unanchored = AsIsIntegerField(
        allow_null=True, help_text="Events after the newest exported head: not yet anchored."
    )


class ErasureRequestSerializer(StrictSerializer):
    user_id = serializers.CharField(max_length=200, help_text="The end user's id in runs.")


class ErasureSerializer(serializers.Serializer):
    """An ``erasure.ErasureReport``."""

    subject = AsIsCharField(help_text="SHA-256 of '<tenant id>:<user id>'.")
    erased = AsIsDictField(child=serializers.IntegerField())


class MemberListSerializer(serializers.ListSerializer):
    """A page of memberships with their agent lists, batch-loaded (``member_views``) for
    the tenant in the context."""

    def to_representation(self, data: Any) -> list[Any]:
        return super().to_representation(services.member_views(self.context["tenant"], data))


class MemberSerializer(serializers.Serializer):
    """A member (``services.MemberView``); a list of memberships loads its agent lists."""

    user_id = serializers.IntegerField()
    username = serializers.CharField()
    role = serializers.CharField(allow_null=True)
    agents = serializers.ListField(child=serializers.CharField(), allow_null=True)

    class Meta:
        list_serializer_class = MemberListSerializer


class RoleAssignSerializer(StrictSerializer):
    username = serializers.CharField(
        max_length=150,
        validators=[UnicodeUsernameValidator()],
        help_text="A member of this tenant (to bring someone in, invite them).",
    )
    role = serializers.ChoiceField(
        choices=list(services.Role.values),
        allow_null=True,
        help_text="null removes the user from the tenant.",
    )
    agents = serializers.ListField(
        child=serializers.UUIDField(),
        allow_null=True,
        required=False,
        max_length=1000,
        help_text="Restrict the member to these agents; null: every agent; absent: unchanged.",
    )


class ToolGrantSerializer(StrictSerializer):
    tool = serializers.CharField(max_length=100, help_text="A tool name, or * for any tool.")
    role = serializers.ChoiceField(
        choices=["", *services.ROLE_HIERARCHY],
        required=False,
        default="",
        help_text="Empty: every role. A grant to a role also applies to the roles above it.",
    )
    level = serializers.ChoiceField(choices=list(services.LEVELS))


class ToolPermissionsUpdateSerializer(StrictSerializer):
    permissions = serializers.ListField(child=ToolGrantSerializer(), max_length=500)


class ToolPermissionsSerializer(serializers.Serializer):
    """An agent's tool grants (``services.ToolGrant``) and what each role gets from them."""

    agent_id = serializers.CharField()
    permissions = ToolGrantSerializer(many=True)
    effective = AsIsDictField(
        child=serializers.DictField(child=serializers.CharField()),
        help_text="role -> tool -> level; '*' is the level of any tool not listed.",
    )


# --- helpers -------------------------------------------------------------------------------


def _text_param(request: Request, name: str, max_length: int = 100) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length or "\x00" in raw:
        raise unprocessable(f"{name} is invalid.", {name: [f"At most {max_length} characters."]})
    return raw


def _flat_errors(detail: Any, path: str = "") -> dict[str, list[str]]:
    """DRF's nested errors ({"permissions": {"1": {"level": [...]}}}) as one level of
    field paths ({"permissions[1].level": [...]}), the shape every 422 body has."""
    if isinstance(detail, dict):
        flat: dict[str, list[str]] = {}
        for key, value in detail.items():
            name = str(key)
            if name == "non_field_errors" and path:
                child = path  # an error of the nested object itself: name the object
            elif name.isdigit():
                child = f"{path}[{name}]"
            else:
                child = f"{path}.{name}" if path else name
            flat.update(_flat_errors(value, child))
        return flat
    if isinstance(detail, list) and detail and not all(isinstance(d, str) for d in detail):
        flat = {}
        for index, value in enumerate(detail):
            if value:
                flat.update(_flat_errors(value, f"{path}[{index}]"))
        return flat
    return {
        path or "non_field_errors": [str(d) for d in detail]
        if isinstance(detail, list)
        else [str(detail)]
    }


def _validated(serializer: serializers.Serializer) -> dict[str, Any]:
    if not serializer.is_valid():
        raise unprocessable("Request validation failed.", _flat_errors(serializer.errors))
    return dict(serializer.validated_data)


# --- audit ---------------------------------------------------------------------------------

ACTOR_TYPE = {"type": "string", "enum": ["user", "api_key", "system"]}


class AuditFilter(django_filters.FilterSet):
    actor_type = extend_schema_field(ACTOR_TYPE)(text_filter())
    actor_id = text_filter()
    action = prefix_filter("action", help_text="exact, or a prefix ending in *")
    target_type = text_filter()
    target_id = text_filter()
    since = ZonedDateTimeFilter(
        field_name="occurred_at", lookup_expr="gte", help_text="occurred at or after"
    )
    until = ZonedDateTimeFilter(
        field_name="occurred_at", lookup_expr="lt", help_text="occurred before"
    )

    class Meta:
        model = AuditEvent
        fields: list[str] = []


class AuditListView(ListEndpoint, TenantScopedAPIView):
    scope_map = {**DEFAULT_SCOPE_MAP, "GET": READ}
    filterset_class = AuditFilter
    ordering_fields = ("sequence", "occurred_at")
    ordering = "sequence"

    @extend_schema(
        operation_id="audit_list",
        responses={200: exports.AuditEventSerializer(many=True), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        seal_chain(self.tenant.pk)  # every event listed has its sequence and hash
        return self.list_response(request, AuditEvent.objects.all(), exports.AuditEventSerializer)


class AuditVerifyView(TenantScopedAPIView):
    scope_map = {**DEFAULT_SCOPE_MAP, "GET": READ}

    @extend_schema(
        operation_id="audit_verify",
        responses={200: VerificationSerializer, **errors(401, 403)},
        description=(
            "Walks the tenant's chain and compares it with the exported checkpoints: "
            "ok, the number of events, and the sequence of the first bad one."
        ),
    )
    def get(self, request: Request) -> Response:
        try:
            exported = checkpoints.read_checkpoints(self.tenant.pk)
        except ValueError:
            return Response(VerificationSerializer(_unverified("checkpoints_unreadable")).data)
        return Response(VerificationSerializer(verify_chain(self.tenant.pk, exported)).data)


def _unverified(reason: str) -> dict[str, Any]:
    return {
        "ok": False,
        "events": 0,
        "first_bad": None,
        "reason": reason,
        "head_sequence": None,
        "head_hash": None,
        "checkpoint_sequence": None,
        "unanchored": None,
    }


# --- exports and erasure ------------------------------------------------------------------


EXPORT_PARAMETERS = [
    OpenApiParameter("format", OpenApiTypes.STR, enum=list(exports.FORMATS)),
    OpenApiParameter(
        "part",
        OpenApiTypes.STR,
        enum=list(exports.PARTS),
        description="one part only (CSV: default audit, or runs for one end user)",
    ),
    OpenApiParameter("user_id", OpenApiTypes.STR, description="one end user's data (GDPR)"),
]
CHAIN_HEADERS = ("X-Audit-Chain-Sequence", "X-Audit-Chain-Hash")


async def _aiter_chunks(chunks: Any) -> Any:
    """Serve a sync chunk generator from an async server, one chunk per thread hop."""
    step = sync_to_async(_next_chunk, thread_sensitive=True)
    while (chunk := await step(chunks)) is not None:
        yield chunk


def _next_chunk(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)


class ExportView(TenantScopedAPIView):
    scope_map = {**DEFAULT_SCOPE_MAP, "GET": ADMIN, "HEAD": ADMIN}

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # Errors are always the JSON error body; the export itself picks JSON or CSV from
        # ?format= or Accept below (DRF would 404 an unknown ?format= instead of 422).
        renderer = JSONRenderer()
        return renderer, renderer.media_type

    def _format(self, request: Request) -> str:
        wanted = request.query_params.get("format")
        if wanted is None:
            accept = request.headers.get("Accept", "")
            wanted = "csv" if "text/csv" in accept and "json" not in accept else "json"
        if wanted not in exports.FORMATS:
            raise unprocessable("Unknown format.", {"format": ["Use json or csv."]})
        return wanted

    def head(self, request: Request) -> HttpResponse:
        """What a GET would announce (format, chain head), without exporting anything."""
        fmt = self._format(request)
        seal_chain(self.tenant.pk)
        head = chain_head(self.tenant.pk) or {}
        response = HttpResponse(content_type=exports.MEDIA_TYPES[fmt])
        for name, value in zip(
            CHAIN_HEADERS, (head.get("sequence"), head.get("hash")), strict=True
        ):
            response[name] = "" if value is None else str(value)
        return response

    @extend_schema(
        operation_id="governance_export",
        parameters=EXPORT_PARAMETERS,
        responses={
            (200, "application/json"): exports.ExportSerializer,
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="one part as CSV"),
            **errors(401, 403, 422),
        },
        description=(
            "The tenant's audit trail and data (or one end user's data with user_id), "
            "streamed. X-Audit-Chain-Sequence and X-Audit-Chain-Hash give the chain head "
            "the audit part ends at: the export's own data.exported event."
        ),
    )
    def get(self, request: Request) -> HttpResponse | StreamingHttpResponse:
        try:
            export = exports.start_export(
                actor=Actor.from_request(request),
                tenant=self.tenant,
                fmt=self._format(request),
                part=_text_param(request, "part", 40),
                user_id=_text_param(request, "user_id", 200),
            )
        except exports.ExportError as exc:
            raise unprocessable(f"{exc.field}: {exc}", {exc.field: [str(exc)]}) from exc
        response = _export_response(request, export)
        response["Content-Disposition"] = f'attachment; filename="{export.filename}"'
        for name, value in zip(
            CHAIN_HEADERS, (export.head_sequence, export.head_hash), strict=True
        ):
            response[name] = "" if value is None else str(value)
        return response


def _export_response(
    request: Request, export: exports.Export
) -> HttpResponse | StreamingHttpResponse:
    """Small exports go out whole, with a Content-Length; larger ones stream.

    Up to ``EXPORT_BUFFER_BYTES`` is read ahead: if the export ends within it, one plain
    response (clients see the size, no chunked encoding); otherwise what was read and the
    rest are streamed in constant memory (async iteration under an ASGI server).
    """
    limit = int(str(settings.AGENTFLOW["EXPORT_BUFFER_BYTES"]))
    head: list[bytes] = []
    size = 0
    for chunk in export.chunks:
        head.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    else:
        return HttpResponse(b"".join(head), content_type=export.media_type)
    rest = chain(head, export.chunks)
    content: Any = _aiter_chunks(rest) if isinstance(request._request, ASGIRequest) else rest
    return StreamingHttpResponse(content, content_type=export.media_type)


class ErasureView(TenantScopedAPIView):
    scope_map = {**DEFAULT_SCOPE_MAP, "POST": ADMIN}

    @extend_schema(
        operation_id="governance_erasure",
        request=ErasureRequestSerializer,
        responses={200: ErasureSerializer, **errors(401, 403, 422)},
        description=(
            "GDPR erasure of one end user: sessions, threads, messages, memory (with "
            "their vectors) and the content of their runs. Audited without the content."
        ),
    )
    def post(self, request: Request) -> Response:
        data = _validated(ErasureRequestSerializer(data=request.data))
        report = erasure.erase_end_user(
            actor=Actor.from_request(request), tenant=self.tenant, user_id=data["user_id"]
        )
        return Response(ErasureSerializer(report).data)


# --- roles ----------------------------------------------------------------------------------


class RolesView(ListEndpoint, TenantScopedAPIView):
    scope_map = {**DEFAULT_SCOPE_MAP, "GET": READ, "POST": ADMIN}
    ordering_fields = ("created_at", "role")
    ordering = "created_at"

    @extend_schema(
        operation_id="roles_list",
        responses={200: MemberSerializer(many=True), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        members = services.members(self.tenant)
        return self.list_response(request, members, MemberSerializer, {"tenant": self.tenant})

    @extend_schema(
        operation_id="roles_assign",
        request=RoleAssignSerializer,
        responses={200: MemberSerializer, **errors(401, 403, 409, 422)},
        description=(
            "Change a member's role, optionally only on some agents; role null removes the "
            "member. Only members of this tenant: any other username (unknown or another "
            "tenant's) is the same 422 naming username. People join by invitation."
        ),
    )
    def post(self, request: Request) -> Response:
        data = _validated(RoleAssignSerializer(data=request.data))
        username, role = data["username"], data["role"]
        agents = data.get("agents", services.KEEP)
        actor = Actor.from_request(request)
        try:
            user = services.member_by_username(self.tenant, username)
            if role is None:
                services.revoke_role(actor=actor, tenant=self.tenant, user=user)
                removed = {"user_id": user.pk, "username": username, "role": None, "agents": None}
                return Response(MemberSerializer(removed).data)
            member = services.assign_role(
                actor=actor,
                tenant=self.tenant,
                user=user,
                role=role,
                agents=agents
                if agents is None or agents is services.KEEP
                else [str(a) for a in agents],
                members_only=True,
            )
        except services.LastOwner as exc:
            raise conflict(str(exc), "last_owner") from exc
        except services.GovernanceError as exc:
            raise unprocessable(str(exc), {exc.field: [str(exc)]}) from exc
        return Response(MemberSerializer(member).data)


# --- invitations ----------------------------------------------------------------------------


class InvitationSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    email = serializers.CharField(help_text="The person invited by address, or empty.")
    username = serializers.CharField(help_text="The person invited by username, or empty.")
    role = serializers.CharField()
    status = serializers.SerializerMethodField()
    invited_by = serializers.CharField(help_text="The inviting actor, '<type>:<id>'.")
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    accepted_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)

    @extend_schema_field(
        serializers.ChoiceField(
            choices=[
                invitations.PENDING,
                invitations.ACCEPTED,
                invitations.REVOKED,
                invitations.EXPIRED,
            ]
        )
    )
    def get_status(self, invitation: Invitation) -> str:
        return invitations.status_of(invitation)


class InvitationIssuedSerializer(InvitationSerializer):
    token = serializers.CharField(
        source="issued_token",
        help_text="Shown once (also e-mailed to the person); only its hash is stored.",
    )
    accept_url = serializers.CharField(source="issued_accept_url")


class InvitationCreateSerializer(StrictSerializer):
    email = serializers.EmailField(required=False, max_length=254)
    username = serializers.CharField(
        required=False, max_length=150, validators=[UnicodeUsernameValidator()]
    )
    role = serializers.ChoiceField(choices=list(services.Role.values))
    expires_in_days = serializers.IntegerField(
        min_value=1, max_value=invitations.MAX_DAYS, default=invitations.DEFAULT_DAYS
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if bool(attrs.get("email")) == bool(attrs.get("username")):
            raise serializers.ValidationError({"email": ["Give either email or username."]})
        return attrs


class InvitationAcceptSerializer(StrictSerializer):
    token = serializers.CharField(max_length=200)


class JoinedSerializer(serializers.Serializer):
    tenant = exports.ExportTenantSerializer()
    user_id = serializers.IntegerField()
    username = serializers.CharField()
    role = serializers.CharField()


# Answers of refused invitation requests: the rule broken and its status code.
_INVITATION_ERRORS = {
    "not_found": status.HTTP_404_NOT_FOUND,
    "already_member": status.HTTP_409_CONFLICT,
    "invitation_accepted": status.HTTP_409_CONFLICT,
    "invitation_revoked": status.HTTP_410_GONE,
    "invitation_expired": status.HTTP_410_GONE,
}


def _invitation_error(exc: invitations.InvitationError) -> ContractError:
    code = _INVITATION_ERRORS.get(exc.code)
    if code is None:
        return unprocessable(str(exc), {exc.field: [str(exc)]})
    detail = "Not found." if exc.code == "not_found" else f"{exc}."
    return ContractError(detail, status_code=code, error_type=exc.code)


def _accept_url(request: Request) -> str:
    # The token goes in the POST body, never in a URL (URLs end up in logs and histories).
    return request.build_absolute_uri(reverse("governance-invitation-accept"))


class InvitationsView(ListEndpoint, TenantScopedAPIView):
    scope_map = {**DEFAULT_SCOPE_MAP, "GET": ADMIN, "POST": ADMIN}
    ordering_fields = ("created_at", "expires_at")
    ordering = "created_at"

    @extend_schema(
        operation_id="invitations_list",
        responses={200: InvitationSerializer(many=True), **errors(401, 403, 422)},
    )
    def get(self, request: Request) -> Response:
        queryset = invitations.invitations(self.tenant)
        return self.list_response(request, queryset, InvitationSerializer)

    @extend_schema(
        operation_id="invitations_create",
        request=InvitationCreateSerializer,
        responses={201: InvitationIssuedSerializer, **errors(401, 403, 409, 422)},
        description=(
            "Invite one person (by email or username) to join with a role. The token is in "
            "this answer only and in the e-mail sent to the person; they accept it signed in "
            "as themselves. The answer is the same whether the person has an account or not. "
            "No Idempotency-Key: a replay would have to store the token."
        ),
    )
    def post(self, request: Request) -> Response:
        data = _validated(InvitationCreateSerializer(data=request.data))
        try:
            issued = invitations.invite_member(
                actor=Actor.from_request(request),
                tenant=self.tenant,
                role=data["role"],
                email=data.get("email", ""),
                username=data.get("username", ""),
                days=data["expires_in_days"],
                accept_url=_accept_url(request),
            )
        except invitations.InvitationError as exc:
            raise _invitation_error(exc) from exc
        invitation = issued.invitation
        invitation.issued_token = issued.token  # type: ignore[attr-defined]
        invitation.issued_accept_url = _accept_url(request)  # type: ignore[attr-defined]
        location = reverse("governance-invitation", args=[invitation.pk])
        return Response(
            InvitationIssuedSerializer(invitation).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": location},
        )


class InvitationDetailView(TenantScopedAPIView):
    scope_map = {**DEFAULT_SCOPE_MAP, "DELETE": ADMIN}

    @extend_schema(
        operation_id="invitations_revoke",
        responses={200: InvitationSerializer, **errors(401, 403, 404, 409)},
        description="Withdraw a pending invitation (again: no change); an accepted one is 409.",
    )
    def delete(self, request: Request, invitation_id: str) -> Response:
        invitation = Invitation.objects.filter(pk=invitation_id).first()
        if invitation is None:
            raise Http404
        try:
            revoked = invitations.revoke_invitation(
                actor=Actor.from_request(request), tenant=self.tenant, invitation=invitation
            )
        except invitations.InvitationError as exc:
            raise _invitation_error(exc) from exc
        return Response(InvitationSerializer(revoked).data)


class InvitationAcceptView(APIView):
    """The invited person, signed in as themselves, joins the tenant.

    Not tenant-scoped: the caller is not a member yet, and the tenant is the invitation's.
    A person acts here, never an API key (a key belongs to a tenant, not to anyone).
    """

    authentication_classes = [SessionAuthentication]
    permission_classes = [IsAuthenticated]
    acts_as_the_signed_in_person = True  # governed by the session alone (test_matrix)

    @extend_schema(
        operation_id="invitations_accept",
        request=InvitationAcceptSerializer,
        responses={200: JoinedSerializer, **errors(403, 404, 409, 410, 422)},
        description=(
            "Accept an invitation addressed to you (your username, or your account's e-mail "
            "address) with its token. A token that is unknown or addressed to someone else "
            "is 404 alike; expired and revoked are 410, used 409."
        ),
    )
    def post(self, request: Request) -> Response:
        data = _validated(InvitationAcceptSerializer(data=request.data))
        try:
            invitation, membership = invitations.accept_invitation(
                user=request.user, token=data["token"]
            )
        except invitations.InvitationError as exc:
            raise _invitation_error(exc) from exc
        joined = {
            "tenant": invitation.tenant,
            "user_id": request.user.pk,
            "username": request.user.get_username(),
            "role": membership.role,
        }
        return Response(JoinedSerializer(joined).data)


# --- tool permissions -----------------------------------------------------------------------


class ToolPermissionsView(TenantScopedAPIView):
    scope_map = {**DEFAULT_SCOPE_MAP, "GET": READ, "PUT": ADMIN}

    def _agent(self, agent_id: str) -> Agent:
        agent = Agent.objects.filter(pk=agent_id).first()
        if agent is None:
            raise Http404
        return agent

    def _body(self, agent: Agent) -> dict[str, Any]:
        grants = services.tool_grants(agent)
        tools = sorted({g.tool for g in grants} | {services.ANY_TOOL})
        effective = {
            role: services.effective_tool_permissions(agent, role, tools)
            for role in services.ROLE_HIERARCHY
        }
        body = {"agent_id": agent.pk, "permissions": grants, "effective": effective}
        return dict(ToolPermissionsSerializer(body).data)

    @extend_schema(
        operation_id="tool_permissions_retrieve",
        responses={200: ToolPermissionsSerializer, **errors(401, 403, 404)},
    )
    def get(self, request: Request, agent_id: str) -> Response:
        return Response(self._body(self._agent(agent_id)))

    @extend_schema(
        operation_id="tool_permissions_update",
        request=ToolPermissionsUpdateSerializer,
        responses={200: ToolPermissionsSerializer, **errors(401, 403, 404, 422)},
        description="Replace the agent's tool grants. Tools nobody granted are denied.",
    )
    def put(self, request: Request, agent_id: str) -> Response:
        agent = self._agent(agent_id)
        data = _validated(ToolPermissionsUpdateSerializer(data=request.data))
        try:
            services.set_tool_permissions(
                actor=Actor.from_request(request), agent=agent, grants=data["permissions"]
            )
        except services.GovernanceError as exc:
            raise unprocessable(str(exc), {exc.field: [str(exc)]}) from exc
        return Response(self._body(agent))
