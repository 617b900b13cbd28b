"""Playbooks: the common ordered steps of an agent's successful runs of one category.

Extraction (SPEC 9): over the latest ``PLAYBOOK_WINDOW_RUNS`` settled runs of an agent's
category, a run is a success when its answer reached the customer without a person
changing it (answered confidently, or approved as proposed) and no feedback scored it
low; edited, rejected, expired and failed runs are failures; cancelled and unsettled runs
do not count. With at least ``PLAYBOOK_MIN_SAMPLES`` successes and a success rate of at
least ``PLAYBOOK_MIN_SUCCESS_RATE``, the steps present in at least
``PLAYBOOK_MIN_STEP_SUPPORT`` of the successful traces (:func:`learning.loop.trace_steps`)
are ordered by their mean relative position in those traces: the playbook's steps, and
consecutive pairs its transitions. Its ``planner`` is the FSM over the support steps that
an agent can be told to run (:mod:`learning.playbook_fsm`; applying it:
:mod:`learning.playbook_agents`).

A playbook is versioned: extraction that finds the same steps as the active version
changes nothing; different steps supersede it with version + 1. A person can retire one;
a retired playbook's steps are not extracted again until the traces change. The active
playbook of a category is suggested to the agent before it answers a message of that
category (``learning.stores.DjangoProceduralStore``) and named in the run's trace.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from django.db import transaction
from django.db.models import Max

from agentflow.core.conf import setting_float, setting_int
from agentflow.models import Agent, Run
from governance.audit import Actor, append
from learning.loop import trace_steps
from learning.models import Feedback, Playbook, PlaybookStatus
from learning.playbook_fsm import planner_for
from learning.serializers import PlaybookSerializer
from tenants.context import tenant_scope
from tenants.scoping import require_tenant_id

__all__ = [
    "Extraction",
    "common_sequence",
    "extract",
    "extract_for_agent",
    "retire",
    "suggestion",
    "sweep",
]

_SETTLED = ("completed", "failed")
_LOW_FEEDBACK = 0.5  # a normalised feedback score below this marks the run a failure


@dataclass(frozen=True, slots=True)
class Extraction:
    category: str
    outcome: str  # "created" | "unchanged" | "too_few_samples" | "low_success_rate" | "retired"
    successes: int
    total: int
    success_rate: float
    playbook: Playbook | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "outcome": self.outcome,
            "successes": self.successes,
            "total": self.total,
            "success_rate": round(self.success_rate, 4),
            "playbook": dict(PlaybookSerializer(self.playbook).data) if self.playbook else None,
        }


def common_sequence(traces: Sequence[Sequence[str]], min_support: float) -> list[str]:
    """The steps in at least ``min_support`` of ``traces``, by mean relative position.

    Relative positions (index / (length - 1)) let traces of different lengths agree on
    what comes first; ties keep the order in which steps were first seen.
    """
    if not traces:
        return []
    seen: dict[str, int] = {}
    positions: dict[str, list[float]] = defaultdict(list)
    for trace in traces:
        unique = list(dict.fromkeys(trace))
        last = max(len(unique) - 1, 1)
        for index, step in enumerate(unique):
            seen.setdefault(step, len(seen))
            positions[step].append(index / last)
    needed = min_support * len(traces)
    common = [step for step in seen if len(positions[step]) >= needed]
    return sorted(common, key=lambda s: (sum(positions[s]) / len(positions[s]), seen[s]))


def _outcomes(agent: Agent, category: str) -> tuple[list[list[str]], int]:
    """The successful traces of the category's latest settled runs, and how many ran."""
    window = setting_int("PLAYBOOK_WINDOW_RUNS")
    runs = list(
        Run.objects.filter(agent=agent, status__in=_SETTLED, result__intent=category)
        .exclude(metadata__contains={"playground": True})  # an operator trying it (issue 19)
        .order_by("-created_at")
        .values("id", "status", "result")[:window]
    )
    low = set(
        Feedback.objects.filter(run_id__in=[r["id"] for r in runs], score__lt=_LOW_FEEDBACK)
        .values_list("run_id", flat=True)
        .distinct()
    )
    successes = []
    for run in runs:
        result = run["result"] or {}
        decision = (result.get("review") or {}).get("decision")
        reached = not result.get("escalated") or decision == "approve"
        if run["status"] == "completed" and reached and run["id"] not in low:
            successes.append(trace_steps(result))
    return successes, len(runs)


def extract(agent: Agent, category: str, *, actor: Actor) -> Extraction:
    """Extract (or confirm) the playbook of one agent category (current tenant scope)."""
    tenant_id = require_tenant_id()
    successes, total = _outcomes(agent, category)
    rate = len(successes) / total if total else 0.0

    def extraction(outcome: str, playbook: Playbook | None = None) -> Extraction:
        return Extraction(category, outcome, len(successes), total, rate, playbook)

    if len(successes) < setting_int("PLAYBOOK_MIN_SAMPLES"):
        return extraction("too_few_samples")
    if rate < setting_float("PLAYBOOK_MIN_SUCCESS_RATE"):
        return extraction("low_success_rate")
    steps = common_sequence(successes, setting_float("PLAYBOOK_MIN_STEP_SUPPORT"))
    with transaction.atomic():
        versions = Playbook.objects.select_for_update().filter(agent=agent, category=category)
        latest = versions.order_by("-version").first()
        if latest is not None and latest.steps == steps:
            outcome = "retired" if latest.status == PlaybookStatus.RETIRED else "unchanged"
            return extraction(outcome, latest)
        version = (versions.aggregate(v=Max("version"))["v"] or 0) + 1
        versions.filter(status=PlaybookStatus.ACTIVE).update(status=PlaybookStatus.SUPERSEDED)
        name = f"{category} v{version}"
        playbook = Playbook.objects.create(
            tenant_id=tenant_id,
            agent=agent,
            category=category,
            version=version,
            name=name,
            steps=steps,
            transitions=[[a, b] for a, b in pairwise(steps)],
            planner=planner_for(name, steps),
            sample_count=len(successes),
            total_count=total,
            success_rate=rate,
        )
        playbook.refresh_from_db(fields=["created_at"])
        append(
            tenant_id=tenant_id,
            actor=actor,
            action="learning.playbook.created",
            target_type="playbook",
            target_id=playbook.pk,
            changes={"agent_id": str(agent.pk), "category": category, "version": version},
        )
    return extraction("created", playbook)


def categories_of(agent: Agent) -> list[str]:
    """The intents the agent's settled runs were classified as."""
    found = (
        Run.objects.filter(agent=agent, status__in=_SETTLED)
        .exclude(result__intent=None)
        .values_list("result__intent", flat=True)
        .distinct()
    )
    return sorted(str(category) for category in found if category)


def extract_for_agent(
    agent: Agent, *, actor: Actor, categories: Iterable[str] | None = None
) -> list[Extraction]:
    wanted = list(categories) if categories is not None else categories_of(agent)
    return [extract(agent, category, actor=actor) for category in wanted]


def retire(*, actor: Actor, playbook: Playbook) -> Playbook:
    """Take a playbook out of use (it is no longer suggested); idempotent, audited."""
    with transaction.atomic():
        now = datetime.now(UTC)
        changed = (
            Playbook.objects.filter(pk=playbook.pk)
            .exclude(status=PlaybookStatus.RETIRED)
            .update(
                status=PlaybookStatus.RETIRED, retired_at=now, retired_by=f"{actor.type}:{actor.id}"
            )
        )
        playbook.refresh_from_db()
        if changed:
            append(
                tenant_id=playbook.tenant_id,
                actor=actor,
                action="learning.playbook.retired",
                target_type="playbook",
                target_id=playbook.pk,
            )
    return playbook


def suggestion(agent_id: Any, category: str) -> Playbook | None:
    """The playbook to suggest before a run of ``category`` (the active version).

    The run path reads the same row in one statement: ``learning.stores`` (keep in step)."""
    return (
        Playbook.objects.filter(agent_id=agent_id, category=category, status=PlaybookStatus.ACTIVE)
        .order_by("-version")
        .first()
    )


def sweep(now: datetime | None = None) -> dict[str, int]:
    """Re-extract the playbooks of every agent with runs settled in the last interval."""
    now = now or datetime.now(UTC)
    since = now - timedelta(seconds=2 * setting_float("PLAYBOOK_EXTRACT_SECONDS"))
    pairs = (
        Run.unscoped.filter(finished_at__gte=since, status__in=_SETTLED)
        .values_list("tenant_id", "agent_id")
        .distinct()
    )
    counts = {"agents": 0, "created": 0}
    for tenant_id, agent_id in pairs:
        with tenant_scope(int(tenant_id)):
            agent = Agent.objects.filter(pk=agent_id).first()
            if agent is None:
                continue
            done = extract_for_agent(agent, actor=Actor.system("learning"))
        counts["agents"] += 1
        counts["created"] += sum(1 for item in done if item.outcome == "created")
    return counts
