"""Live ``run.updated`` events for the dashboard (contract: one per state change).

Each event carries the run exactly as the runs list API shows it (``RunSerializer`` without the
result), so a page that applies events holds the same rows a fresh fetch returns. The
event is built from the row the transition already locked and read (``ROW_FIELDS``) plus
the values it wrote, so publishing costs no extra query; it is sent when the transaction
commits, never for a rolled-back change, and a failure to send is logged, not raised: the
run must not fail because a dashboard could not be told.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import models

from agentflow.api.serializers import run_body
from agentflow.core.realtime import send_to_group_on_commit, tenant_group
from agentflow.models import Run

EVENT_TYPE = "run.updated"
# What RunSerializer(context=NO_RESULT) reads: transition() loads only these under its lock.
ROW_FIELDS = (
    "id",
    "tenant_id",
    "agent_id",
    "session_id",
    "user_id",
    "status",
    "progress",
    "priority",
    "created_at",
    "started_at",
    "finished_at",
    "tokens",
    "cost_usd",
    "error",
)


def event(run: Run) -> dict[str, Any]:
    return {"type": EVENT_TYPE, "run": run_body(run, include_result=False)}


def publish(run: Run) -> None:
    """Send ``run.updated`` for ``run`` (as it is now in memory) once the transaction commits."""
    send_to_group_on_commit(tenant_group(run.tenant_id), event(run))


def publish_transition(row: Run, to_status: str, fields: dict[str, Any]) -> None:
    """``row`` was read under the transition's lock; apply what the update wrote, publish."""
    row.status = to_status
    for name, value in fields.items():
        setattr(row, name, _as_stored(name, value))
    publish(row)


def _as_stored(name: str, value: Any) -> Any:
    """The value as reading the row back would give it (Decimal("0.0") is stored 0.000000)."""
    field = Run._meta.get_field(name)
    if isinstance(field, models.DecimalField) and value is not None:
        return Decimal(str(value)).quantize(Decimal(1).scaleb(-field.decimal_places))
    return value
