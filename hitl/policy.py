"""What applies to one request: its SLA, escalation policy, role ladder and hand-off.

Precedence, most specific first: an agent's :class:`ReviewSettings`, the tenant's, then
the ``AGENTFLOW`` settings (``HITL_*``); the first enabled :class:`EscalationPolicy`
that matches the request's priority, intent and kind, else the default policy built
from settings. Pure reads: callers are inside the tenant's scope.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q

from agentflow.core.conf import setting, setting_dict, setting_int, setting_list
from hitl.models import ROLE_RANK, EscalationPolicy, OnBreach, OnReject, ReviewSettings

# The review ladder (ROLE_RANK) sits in hitl.models, whose policies' chains it validates.
REVIEW_ROLES = tuple(ROLE_RANK)


def roles_at_or_above(role: str) -> list[str]:
    return [name for name, rank in ROLE_RANK.items() if rank >= ROLE_RANK[role]]


def default_policy() -> EscalationPolicy:
    """The policy of requests no tenant rule matches (unsaved; built from settings)."""
    expire = setting_int("HITL_EXPIRE_AFTER_MINUTES")
    return EscalationPolicy(
        name="default",
        chain=setting_list("HITL_DEFAULT_CHAIN"),
        on_breach=OnBreach.ESCALATE,
        expire_after_minutes=expire or None,
        on_expiry=str(setting("HITL_ON_EXPIRY")),
        notify_email=True,
        notify_slack=True,
    )


def resolve_policy(
    *, priority: str, intent: str, kind: str, enabled: Iterable[EscalationPolicy] | None = None
) -> EscalationPolicy:
    """The first matching policy of ``enabled`` (read now if not given: the tenant's
    enabled policies by position), else the default one."""
    if enabled is None:
        enabled = EscalationPolicy.objects.filter(enabled=True).order_by("position", "id")
    for policy in enabled:
        if policy.matches(priority=priority, intent=intent, kind=kind):
            return policy
    return default_policy()


def policy_of(policy: EscalationPolicy | None) -> EscalationPolicy:
    """A request's stored policy, or the default one when it had none (or it was deleted)."""
    return policy if policy is not None else default_policy()


@dataclass(frozen=True)
class ReviewConfig:
    sla_minutes: dict[str, int]
    handoff_message: str
    on_reject: str


def review_config(
    *, tier: str, agent_id: Any, settings: Iterable[ReviewSettings] | None = None
) -> ReviewConfig:
    """``settings``: the tenant's and the agent's rows (read now if not given)."""
    if settings is None:
        settings = ReviewSettings.objects.filter(Q(agent_id=agent_id) | Q(agent__isnull=True))
    rows = {None if row.agent_id is None else str(row.agent_id): row for row in settings}
    minutes: dict[str, int] = dict(setting_dict("HITL_SLA_MINUTES")[tier])
    handoff = str(setting("HITL_HANDOFF_MESSAGE"))
    on_reject = OnReject.HANDOFF.value
    for row in (rows.get(None), rows.get(str(agent_id))):  # tenant first, the agent's wins
        if row is None:
            continue
        minutes.update({p: int(m) for p, m in row.sla_minutes.items()})
        handoff = row.handoff_message or handoff
        on_reject = row.on_reject or on_reject
    return ReviewConfig(sla_minutes=minutes, handoff_message=handoff, on_reject=on_reject)


def sla_deadline(config: ReviewConfig, priority: str, start: datetime) -> datetime:
    return start + timedelta(minutes=config.sla_minutes[priority])


def escalation_window(policy: EscalationPolicy, config: ReviewConfig, priority: str) -> timedelta:
    minutes = policy.escalation_minutes or config.sla_minutes[priority]
    return timedelta(minutes=minutes)


def handoff_text(config: ReviewConfig, reason: str) -> str:
    # Plain replacement, not str.format: a tenant's template must not reach attributes.
    return config.handoff_message.replace("{reason}", reason)
