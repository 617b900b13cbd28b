"""Compliance exports of a tenant (or of one end user): JSON or CSV, produced in batches.

The export is a generator of byte chunks, so a tenant with millions of rows streams in
constant memory. It carries the audit chain head (sequence and hash) for anchoring
outside AgentFlow: the audit part ends exactly at that head, which is the export's own
``data.exported`` event. Each batch is read inside the tenant's scope and the scope is
left before the chunk is yielded (the consumer of a streamed response may run each step
in another context, where a scope left open would leak).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from django.db.models import Model, QuerySet
from rest_framework import serializers

from agentflow.core.api.serializers import (
    AsIsBooleanField,
    AsIsCharField,
    AsIsDictField,
    AsIsIntegerField,
)
from agentflow.models import (
    Agent,
    AgentSession,
    KnowledgeChunk,
    KnowledgeDocument,
    MemoryCase,
    Message,
    Run,
    Thread,
)
from governance.audit import Actor, append, chain_head
from governance.erasure import subject_digest
from governance.models import AgentToolPermission, AuditEvent
from tenants.context import tenant_scope
from tenants.models import Membership, Tenant, UsageDay
from tenants.services import usage_days

FORMATS = ("json", "csv")
MEDIA_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8"}
_BATCH = 500
CHUNK_BYTES = 64 * 1024  # what one chunk of a streamed export holds, roughly


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


class UtcIsoField(serializers.CharField):
    """A timestamp in UTC, ISO 8601 with ``Z`` (as the audit chain hashes it)."""

    def to_representation(self, value: Any) -> str:
        # Never None here: DRF writes None itself without asking the field.
        return str(value.astimezone(UTC).isoformat().replace("+00:00", "Z"))


class AuditEventSerializer(serializers.Serializer):
    """An audit event: the API's list item and the export's ``audit`` row."""

    sequence = AsIsIntegerField()
    occurred_at = UtcIsoField()
    actor_type = AsIsCharField()
    actor_id = AsIsCharField()
    action = AsIsCharField()
    target_type = AsIsCharField()
    target_id = AsIsCharField()
    changes = AsIsDictField()
    correlation_id = AsIsCharField()
    prev_hash = AsIsCharField()
    hash = AsIsCharField()


# The rows of the other parts: ids as strings, timestamps in UTC with Z, money as strings
# (a CharField writes str(Decimal)), the rest as stored. Their fields are the CSV columns.


class MemberRowSerializer(serializers.Serializer):
    user_id = AsIsIntegerField()
    username = AsIsCharField(source="user.get_username")
    role = AsIsCharField()


class AgentRowSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = AsIsCharField()
    blueprint = AsIsCharField()
    config = AsIsDictField()
    version = AsIsIntegerField()
    created_at = UtcIsoField()
    updated_at = UtcIsoField()


class ToolPermissionRowSerializer(serializers.Serializer):
    agent_id = serializers.UUIDField()
    tool = AsIsCharField()
    role = AsIsCharField()
    level = AsIsCharField()


class DocumentRowSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    agent_id = serializers.UUIDField()
    title = AsIsCharField()
    content_type = AsIsCharField()
    size_bytes = AsIsIntegerField()
    created_at = UtcIsoField()


class ChunkRowSerializer(serializers.Serializer):
    document_id = serializers.UUIDField()
    index = AsIsIntegerField()
    text = AsIsCharField()


class SessionRowSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    agent_id = serializers.UUIDField()
    user_id = AsIsCharField()
    message_count = AsIsIntegerField()
    created_at = UtcIsoField()
    last_active = UtcIsoField()


class ThreadRowSerializer(serializers.Serializer):
    id = AsIsIntegerField()
    session_id = serializers.UUIDField()
    topic = AsIsCharField()
    intent = AsIsCharField()
    status = AsIsCharField()
    escalated = AsIsBooleanField()
    resolution = AsIsCharField()
    created_at = UtcIsoField()


class MessageRowSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    session_id = serializers.UUIDField()
    run_id = serializers.UUIDField(allow_null=True)
    thread_id = AsIsIntegerField(allow_null=True)
    role = AsIsCharField()
    content = AsIsCharField()
    created_at = UtcIsoField()


class RunRowSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    agent_id = serializers.UUIDField()
    session_id = serializers.UUIDField(allow_null=True)
    user_id = AsIsCharField()
    status = AsIsCharField()
    priority = AsIsCharField()
    input = AsIsCharField()
    result = AsIsDictField(allow_null=True)
    error = AsIsCharField()
    tokens = AsIsIntegerField()
    cost_usd = serializers.CharField()
    created_at = UtcIsoField()
    finished_at = UtcIsoField(allow_null=True)


class MemoryCaseRowSerializer(serializers.Serializer):
    id = AsIsIntegerField()
    agent_id = serializers.UUIDField()
    user_id = AsIsCharField()
    question = AsIsCharField()
    answer = AsIsCharField()
    intent = AsIsCharField()
    resolved = AsIsBooleanField()
    created_at = UtcIsoField()


class UsageRowSerializer(serializers.Serializer):
    day = serializers.DateField()
    runs = AsIsIntegerField()
    tokens = AsIsIntegerField()
    dollars = serializers.CharField()


@dataclass(frozen=True)
class Part:
    """One table of the export: rows of ``model`` (scoped), each written by ``serializer``
    (its fields, in order, are the CSV columns)."""

    name: str
    model: type[Model]
    serializer: type[serializers.Serializer]
    per_user: str | None = None  # the end-user filter, for a GDPR export of one user
    order: str = "pk"

    @property
    def columns(self) -> list[str]:
        return list(self.serializer().fields)


PARTS: dict[str, Part] = {
    p.name: p
    for p in (
        Part("audit", AuditEvent, AuditEventSerializer, order="sequence"),
        Part("members", Membership, MemberRowSerializer),
        Part("agents", Agent, AgentRowSerializer),
        Part("tool_permissions", AgentToolPermission, ToolPermissionRowSerializer),
        Part("knowledge_documents", KnowledgeDocument, DocumentRowSerializer),
        Part("knowledge_chunks", KnowledgeChunk, ChunkRowSerializer),
        Part("sessions", AgentSession, SessionRowSerializer, per_user="user_id"),
        Part("threads", Thread, ThreadRowSerializer, per_user="session__user_id"),
        Part("messages", Message, MessageRowSerializer, per_user="session__user_id"),
        Part("runs", Run, RunRowSerializer, per_user="user_id"),
        Part("memory_cases", MemoryCase, MemoryCaseRowSerializer, per_user="user_id"),
        Part("usage", UsageDay, UsageRowSerializer, order="day"),
    )
}
# CSV headers: each part's serializer fields.
COLUMNS: dict[str, tuple[str, ...]] = {name: tuple(p.columns) for name, p in PARTS.items()}
USER_PARTS = tuple(name for name, part in PARTS.items() if part.per_user)


class ChainHeadSerializer(serializers.Serializer):
    sequence = AsIsIntegerField()
    hash = AsIsCharField()


class ExportTenantSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    slug = serializers.CharField()
    name = serializers.CharField()


class ExportSerializer(serializers.Serializer):
    """A JSON export: this header, then one list per part (rows written by the part's
    ``row``, the same rows the CSV has); the schema lists the parts as optional."""

    tenant = ExportTenantSerializer()
    generated_at = AsIsCharField()
    chain_head = ChainHeadSerializer(allow_null=True)
    end_user = AsIsCharField(allow_null=True)

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        for name in PARTS:
            fields[name] = serializers.ListField(child=serializers.DictField(), required=False)
        return fields


class ExportError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Export:
    """What the view needs: chunks to send and the head to announce."""

    chunks: Iterator[bytes]
    head_sequence: int | None
    head_hash: str | None
    media_type: str
    filename: str


def _queryset(part: Part, user_id: str | None, upto: int | None) -> QuerySet[Any]:
    queryset: QuerySet[Any] = part.model.objects.all()  # type: ignore[attr-defined]
    if part.model is AuditEvent:
        queryset = queryset.filter(sequence__lte=upto or 0)
    if part.model is Membership:
        queryset = queryset.select_related("user")
    if user_id is not None and part.per_user:
        queryset = queryset.filter(**{part.per_user: user_id})
    return queryset.order_by(part.order)


def _rows(
    tenant_id: int, part: Part, user_id: str | None, upto: int | None
) -> Iterator[dict[str, Any]]:
    """Rows in batches by keyset on the part's ordering (a unique column)."""
    if part.model is UsageDay:
        # A day is split over shard rows: one row per day, their sum (few rows: no batches).
        yield from part.serializer(usage_days(tenant_id, date.min), many=True).data
        return
    after: Any = None
    while True:
        with tenant_scope(tenant_id):
            queryset = _queryset(part, user_id, upto)
            if after is not None:
                queryset = queryset.filter(**{f"{part.order}__gt": after})
            batch = list(queryset[:_BATCH])
            rows = part.serializer(batch, many=True).data
        yield from rows
        if len(batch) < _BATCH:
            return
        after = getattr(batch[-1], part.order)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date | Decimal):
        return str(value)
    raise TypeError(f"cannot export {type(value).__name__}")


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default, ensure_ascii=False)


def _json_chunks(
    tenant: Tenant, header: dict[str, Any], parts: list[Part], user_id: str | None, upto: int | None
) -> Iterator[bytes]:
    buffer = io.StringIO()
    buffer.write(_dumps(header)[:-1])  # the header object, left open for the parts
    for part in parts:
        buffer.write(f', "{part.name}": [')
        separator = ""
        for row in _rows(tenant.pk, part, user_id, upto):
            buffer.write(separator + _dumps(row))
            separator = ", "
            if buffer.tell() > CHUNK_BYTES:
                yield _drain(buffer)
        buffer.write("]")
    buffer.write("}\n")
    yield _drain(buffer)


def _drain(buffer: io.StringIO) -> bytes:
    """The buffer's text as one chunk (about CHUNK_BYTES: few writes, few thread hops)."""
    chunk = buffer.getvalue().encode()
    buffer.seek(0)
    buffer.truncate()
    return chunk


def _cell(value: Any) -> Any:
    if isinstance(value, dict | list):
        return _dumps(value)
    return "" if value is None else value


def _csv_chunks(
    tenant: Tenant, part: Part, user_id: str | None, upto: int | None
) -> Iterator[bytes]:
    buffer = io.StringIO()
    # The header comes first, rows or not, so even an empty file says what it would hold.
    writer = csv.DictWriter(buffer, fieldnames=part.columns, lineterminator="\r\n")
    writer.writeheader()
    for row in _rows(tenant.pk, part, user_id, upto):
        writer.writerow({key: _cell(value) for key, value in row.items()})
        if buffer.tell() > CHUNK_BYTES:
            yield _drain(buffer)
    yield _drain(buffer)


def start_export(
    *,
    actor: Actor,
    tenant: Tenant,
    fmt: str = "json",
    part: str | None = None,
    user_id: str | None = None,
) -> Export:
    """Audit the export, fix the chain head it ends at, and return its chunk generator."""
    if fmt not in FORMATS:
        raise ExportError(f"use one of: {', '.join(FORMATS)}", "format")
    names = list(USER_PARTS if user_id is not None else PARTS)
    if part is not None and part not in names:
        raise ExportError(f"use one of: {', '.join(names)}", "part")
    if fmt == "csv" and part is None:
        part = "audit" if user_id is None else "runs"
    if user_id is not None and not 1 <= len(user_id) <= 200:
        raise ExportError("must be 1-200 characters", "user_id")
    selected = [PARTS[part]] if part else [PARTS[n] for n in names]
    append(
        tenant_id=tenant.pk,
        actor=actor,
        action="data.exported",
        target_type="tenant",
        target_id=tenant.pk,
        # A digest, not the id: exporting a user's data must not copy it into the log.
        changes={
            "format": fmt,
            "parts": [p.name for p in selected],
            "end_user": _subject(tenant.pk, user_id),
        },
    )
    head = chain_head(tenant.pk) or {}
    upto = head.get("sequence")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if fmt == "csv":
        return Export(
            _csv_chunks(tenant, selected[0], user_id, upto),
            upto,
            head.get("hash"),
            MEDIA_TYPES["csv"],
            f"{tenant.slug}-{selected[0].name}-{stamp}.csv",
        )
    header = ExportSerializer(
        {
            "tenant": tenant,
            "generated_at": _iso(datetime.now(UTC)),
            "chain_head": {"sequence": upto, "hash": head.get("hash")} if upto else None,
            "end_user": user_id,
        }
    ).data
    return Export(
        _json_chunks(tenant, header, selected, user_id, upto),
        upto,
        head.get("hash"),
        MEDIA_TYPES["json"],
        f"{tenant.slug}-export-{stamp}.json",
    )


def _subject(tenant_id: int, user_id: str | None) -> str | None:
    return subject_digest(tenant_id, user_id) if user_id is not None else None
