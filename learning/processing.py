"""The activity stream's consumer: what an event does once it is read (graph, rules).

Producers record events into the stream (:mod:`learning.services`) by explicit calls from
the run and review path; this module acts on them. A rule that matches an external event
starts a run (``agentflow.services.start_run``), so the consumer sits in the run
orchestration layer, above the stream's transport (:mod:`learning.activity`), which it
hands :func:`process_event` as the processor of each entry.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from django.db import transaction

from agentflow.core.api.exceptions import ContractError
from agentflow.core.conf import setting_int
from agentflow.core.rows import unique_or_none
from agentflow.kernel.guardrails import wrap_untrusted
from agentflow.services import RunRequest, start_run
from learning import activity, graph
from learning.models import ActivityEvent, ActivitySource, EventRule
from learning.rules import RULE_ACTOR, label, matches
from learning.webhooks import payloads
from learning.webhooks.payloads import Facts
from tenants.context import tenant_scope

log = structlog.get_logger(__name__)

__all__ = ["drain", "fire_rules", "handle", "process_event", "sweep"]


def process_event(tenant_id: int, event_id: str, stream_id: str = "") -> str:
    """Apply one event's effects (graph, rule runs) once; a processed event is skipped.

    The row lock serialises two consumers holding the same event (a claimed entry whose
    first consumer was only slow, a replayed duplicate): the second finds it processed.
    ``stream_id`` is the entry that delivered it, recorded with the outcome.
    """
    with tenant_scope(tenant_id), transaction.atomic():
        event = unique_or_none(ActivityEvent.objects.select_for_update().filter(pk=event_id))
        if event is None:
            return "missing"
        if event.processed_at is not None:
            return "duplicate"
        facts = (
            payloads.facts(event.source, event.kind, event.payload)
            if event.source != ActivitySource.INTERNAL
            else None
        )
        outcome: dict[str, Any] = {"graph": graph.apply(event, facts)}
        if facts is not None:
            outcome["rules"] = fire_rules(event, facts)
        now = datetime.now(UTC)
        ActivityEvent.objects.filter(pk=event.pk).update(
            processed_at=now, published_at=now, stream_id=stream_id[:40], outcome=outcome
        )
    return "processed"


def fire_rules(event: ActivityEvent, facts: Facts) -> list[dict[str, Any]]:
    """Start one run per matching enabled rule (in the caller's transaction); the outcomes."""
    if event.source == ActivitySource.INTERNAL or facts.from_bot:
        return []
    fields = facts.fields()
    outcomes: list[dict[str, Any]] = []
    for rule in EventRule.objects.filter(enabled=True).select_related("agent"):
        if matches(rule, event.kind, fields):
            outcomes.append(_start_rule_run(rule, event, facts))
    return outcomes


def _start_rule_run(rule: EventRule, event: ActivityEvent, facts: Facts) -> dict[str, Any]:
    outcome: dict[str, Any] = {"rule_id": str(rule.pk), "rule": rule.name}
    if not facts.text:
        return {**outcome, "skipped": "no_text"}
    limit = setting_int("WEBHOOK_MESSAGE_MAX_CHARS")
    customer_key = facts.customer.key if facts.customer else f"{event.source}:anonymous"
    metadata: dict[str, Any] = {
        "activity_event_id": str(event.pk),
        "rule_id": str(rule.pk),
        "source": event.source,
        "customer_key": customer_key,
    }
    if facts.ticket:
        metadata["ticket_key"] = facts.ticket.key
        metadata["ticket_label"] = facts.ticket.label
    if rule.reply_url:
        metadata["reply"] = facts.reply
    request = RunRequest(
        user_id=customer_key[:200],
        message=wrap_untrusted(facts.text, label(event, facts), max_chars=limit),
        priority=rule.priority,
        metadata=metadata,
    )
    try:
        with transaction.atomic():
            run = start_run(actor=RULE_ACTOR, agent=rule.agent, request=request)
    except ContractError as exc:  # quota or budget: recorded, not retried forever
        log.warning("rules.run_refused", rule_id=str(rule.pk), error=exc.error_type)
        return {**outcome, "skipped": exc.error_type}
    return {**outcome, "run_id": str(run.pk), "agent_id": str(rule.agent_id)}


# --- the stream's transport, with this consumer as its processor ------------------------------


def handle(tenant_id: int, entries: list[activity.Entry]) -> int:
    return activity.handle(tenant_id, entries, process_event)


def drain(tenant_id: int, **options: Any) -> int:
    return activity.drain(tenant_id, process_event, **options)


def sweep() -> activity.SweepReport:
    return activity.sweep(process_event)
