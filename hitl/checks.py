"""System checks of the HITL settings: a bad SLA table fails at start-up, not at 3 a.m."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from agentflow.core.conf import optional_setting
from hitl.models import OnExpiry, chain_issues, sla_minutes_issues
from tenants.quotas import Tier


@register()
def check_hitl_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    found: list[CheckMessage] = []
    table = optional_setting("HITL_SLA_MINUTES")
    if not isinstance(table, dict):
        table = {}
    for tier in Tier.ALL:
        minutes = table.get(tier)
        issues = sla_minutes_issues(minutes)
        if isinstance(minutes, dict):
            issues += [
                f"missing priority {p!r}"
                for p in ("low", "medium", "high", "critical")
                if p not in minutes
            ]
        found += [Error(f"HITL_SLA_MINUTES[{tier!r}]: {issue}", id="hitl.E001") for issue in issues]
    found += [
        Error(f"HITL_SLA_MINUTES: unknown tier {tier!r}", id="hitl.E001")
        for tier in table
        if tier not in Tier.ALL
    ]
    found += [
        Error(f"HITL_DEFAULT_CHAIN: {issue}", id="hitl.E002")
        for issue in chain_issues(optional_setting("HITL_DEFAULT_CHAIN"))
    ]
    schedule: dict[str, Any] = getattr(settings, "CELERY_BEAT_SCHEDULE", {})
    sweep = schedule.get("hitl.sla_sweep")
    if sweep is None or float(sweep["schedule"]) > 60:
        found.append(
            Warning(
                "The SLA sweep runs less often than every minute: breaches are marked late.",
                hint="Set HITL_SLA_SWEEP_SECONDS to 60 or less.",
                id="hitl.W001",
            )
        )
    if optional_setting("HITL_ON_EXPIRY") not in OnExpiry.values:
        found.append(Error(f"HITL_ON_EXPIRY must be one of {OnExpiry.values}", id="hitl.E003"))
    return found
