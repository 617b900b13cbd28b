"""Writes of a tenant's review configuration: escalation policies, review settings (SLA
minutes, hand-off) and reviewers' availability at sign-in (ARCHITECTURE habit 2).

Each write validates with the model's own ``clean`` (the rules the admin and the request
path read), runs in one transaction inside the caller's tenant scope and is audited.
A refusal is a :class:`ConfigurationError` whose ``fields`` name what was wrong, so a
form shows it next to the field and nothing is changed.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from agentflow.models import Agent
from governance.audit import Actor, append
from hitl import services
from hitl.models import EscalationPolicy, ReviewerAvailability, ReviewSettings
from hitl.policy import REVIEW_ROLES
from tenants.context import tenant_scope
from tenants.models import Membership, TenantStatus

POLICY_FIELDS = (
    "name",
    "position",
    "enabled",
    "priorities",
    "intents",
    "kinds",
    "chain",
    "on_breach",
    "escalation_minutes",
    "expire_after_minutes",
    "on_expiry",
    "notify_on_queue",
    "notify_email",
    "extra_emails",
    "notify_slack",
)


class ConfigurationError(ValueError):
    """A policy or settings change refused; ``fields`` maps field names to reasons."""

    def __init__(self, fields: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in fields.items()))
        self.fields = fields


def _checked(row: EscalationPolicy | ReviewSettings) -> None:
    try:
        row.full_clean(exclude=["tenant"], validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        raise ConfigurationError(
            {name: [str(m) for m in messages] for name, messages in exc.message_dict.items()}
        ) from None


def _save_policy(policy: EscalationPolicy, actor: Actor, action: str) -> EscalationPolicy:
    _checked(policy)
    with transaction.atomic():
        try:
            with transaction.atomic():
                policy.save()
        except IntegrityError:
            raise ConfigurationError(
                {"name": [f"A policy named {policy.name!r} already exists."]}
            ) from None
        append(
            tenant_id=policy.tenant_id,
            actor=actor,
            action=action,
            target_type="escalation_policy",
            target_id=policy.pk,
            changes={name: getattr(policy, name) for name in POLICY_FIELDS},
        )
    return policy


def create_policy(*, actor: Actor, tenant_id: int, **fields: Any) -> EscalationPolicy:
    with tenant_scope(tenant_id):
        policy = EscalationPolicy(
            tenant_id=tenant_id, **{k: v for k, v in fields.items() if k in POLICY_FIELDS}
        )
        return _save_policy(policy, actor, "hitl.policy_created")


def update_policy(*, actor: Actor, policy: EscalationPolicy, **fields: Any) -> EscalationPolicy:
    """Change ``policy`` (a row of the caller's tenant scope); requests already queued keep
    the deadlines it gave them, the next ones follow the new rules."""
    for name, value in fields.items():
        if name in POLICY_FIELDS:
            setattr(policy, name, value)
    return _save_policy(policy, actor, "hitl.policy_updated")


def delete_policy(*, actor: Actor, policy: EscalationPolicy) -> None:
    """Requests it governed fall back to the default policy (their link is set null)."""
    with transaction.atomic():
        append(
            tenant_id=policy.tenant_id,
            actor=actor,
            action="hitl.policy_deleted",
            target_type="escalation_policy",
            target_id=policy.pk,
            changes={"name": policy.name},
        )
        policy.delete()


def save_review_settings(
    *,
    actor: Actor,
    tenant_id: int,
    agent: Agent | None,
    sla_minutes: dict[str, int],
    handoff_message: str,
    on_reject: str,
) -> ReviewSettings:
    """The tenant's review settings (``agent`` None) or one agent's, created or replaced."""
    with tenant_scope(tenant_id), transaction.atomic():
        row = ReviewSettings.objects.filter(agent=agent).first() or ReviewSettings(
            tenant_id=tenant_id, agent=agent
        )
        row.sla_minutes = sla_minutes
        row.handoff_message = handoff_message
        row.on_reject = on_reject
        _checked(row)
        row.save()
        append(
            tenant_id=tenant_id,
            actor=actor,
            action="hitl.settings_changed",
            target_type="agent" if agent is not None else "tenant",
            target_id=agent.pk if agent is not None else tenant_id,
            changes={
                "sla_minutes": sla_minutes,
                "handoff_message": bool(handoff_message),
                "on_reject": on_reject,
            },
        )
    return row


def delete_review_settings(*, actor: Actor, settings: ReviewSettings) -> None:
    """An agent's own settings removed: the tenant's apply to it again."""
    with transaction.atomic():
        append(
            tenant_id=settings.tenant_id,
            actor=actor,
            action="hitl.settings_deleted",
            target_type="agent" if settings.agent_id else "tenant",
            target_id=settings.agent_id or settings.tenant_id,
        )
        settings.delete()


def available_on_sign_in(*, user_id: int) -> list[int]:
    """A member who may review becomes available in each tenant where nobody chose yet
    (no availability row): reviewers are available by default once they sign in, and a
    choice made since ("away", a capacity) is kept. Returns the tenants it changed."""
    tenant_ids = list(
        Membership.unscoped.filter(
            user_id=user_id, role__in=REVIEW_ROLES, tenant__status=TenantStatus.ACTIVE
        ).values_list("tenant_id", flat=True)
    )
    changed = []
    for tenant_id in tenant_ids:
        with tenant_scope(tenant_id):
            if ReviewerAvailability.objects.filter(user_id=user_id).exists():
                continue
        services.set_availability(
            actor=Actor("user", str(user_id)), tenant_id=tenant_id, user_id=user_id, available=True
        )
        changed.append(tenant_id)
    return changed
