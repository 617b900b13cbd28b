"""The activity stream's consumer: what an event does once it is read (graph, rules).

Producers record events into the stream (:mod:`learning.services`) by explicit calls from
the run and review path; this module acts on them. A rule that matches an external event
starts a run (``agentflow.services.start_run``), so the consumer sits in the run
orchestration layer, above the stream's transport (:mod:`learning.activity`), which it
hands :func:`process_events` as the processor of each batch of entries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from django.db import transaction

from agentflow.core.api.exceptions import ContractError
from agentflow.core.conf import setting_int
from agentflow.kernel.guardrails import wrap_untrusted
from agentflow.services import RunRequest, start_run
from learning import activity, graph
from learning.models import ActivityEvent, ActivitySource, EventRule
from learning.rules import RULE_ACTOR, label, matches
from learning.webhooks import payloads
from learning.webhooks.payloads import Facts
from tenants.context import tenant_scope

log = structlog.get_logger(__name__)

__all__ = ["drain", "fire_rules", "handle", "process_event", "process_events", "sweep"]


def process_event(tenant_id: int, event_id: str, stream_id: str = "") -> str:
    """Apply one event's effects (graph, rule runs) once; a processed event is skipped.

    ``stream_id`` is the entry that delivered it, recorded with the outcome.
    """
    return process_events(tenant_id, [(stream_id, event_id)])[0]


def process_events(tenant_id: int, entries: list[activity.Entry]) -> list[str]:
    """Apply the effects of several stream entries' events in one transaction, in stream
    order, each once: ``processed``, ``duplicate`` (processed already, or delivered twice in
    the batch) or ``missing``, per entry.

    The row locks, taken in key order, serialise two consumers holding the same events (a
    claimed entry whose first consumer was only slow, a replayed duplicate): the second finds
    them processed. One transaction for the batch is what makes a run's event cheap to
    consume; if anything in it fails, nothing of it stays and the caller retries the events
    one by one, so that only the faulty one is counted against its attempts.
    """
    event_ids = list(dict.fromkeys(event_id for _, event_id in entries))
    with tenant_scope(tenant_id), transaction.atomic():
        locked = ActivityEvent.objects.select_for_update().filter(pk__in=event_ids).order_by("pk")
        events = {str(event.pk): event for event in locked}
        outcomes: list[str] = []
        batch: list[tuple[ActivityEvent, Facts | None]] = []
        taken: set[str] = set()
        for stream_id, event_id in entries:
            event = events.pop(event_id, None)
            if event is None:
                outcomes.append("duplicate" if event_id in taken else "missing")
                continue
            taken.add(event_id)
            if event.processed_at is not None:
                outcomes.append("duplicate")
                continue
            event.stream_id = stream_id[:40]
            batch.append((event, _facts(event)))
            outcomes.append("processed")
        if batch:
            _apply(batch)
    return outcomes


def _facts(event: ActivityEvent) -> Facts | None:
    if event.source == ActivitySource.INTERNAL:
        return None
    return payloads.facts(event.source, event.kind, event.payload)


def _apply(batch: list[tuple[ActivityEvent, Facts | None]]) -> None:
    """The graph for all, then each external event's rules (rules read no graph), then the
    processed marks, all in the caller's transaction."""
    for (event, facts), counts in zip(batch, graph.apply_events(batch), strict=True):
        event.outcome = {"graph": counts}
        if facts is not None:
            event.outcome["rules"] = fire_rules(event, facts)
    now = datetime.now(UTC)
    events = [event for event, _ in batch]
    for event in events:
        event.processed_at = event.published_at = now
    ActivityEvent.objects.bulk_update(
        events, ["processed_at", "published_at", "stream_id", "outcome"]
    )


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
    return activity.handle(tenant_id, entries, process_events)


def drain(tenant_id: int, **options: Any) -> int:
    return activity.drain(tenant_id, process_events, **options)


def sweep() -> activity.SweepReport:
    return activity.sweep(process_events)
