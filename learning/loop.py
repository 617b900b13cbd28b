"""What turns outcomes into learning: HITL decisions, completed runs, their traces.

* A decision that approves or edits an answer becomes a golden path after the decision
  commits: ``agentflow.orchestration`` enqueues ``learning.record_review_outcome`` on
  commit when :func:`learns_from` the request, and the task runs
  :func:`learn_from_review` (idempotent; Celery retries it with backoff while, say, a
  remote embedder is down). The embedding never runs inside the decision's transaction,
  which holds the tenant's assignment lock.
* A run that completes with an answer citing golden paths counts one use of each.
* :func:`trace_steps` reads a settled run's result as the ordered steps its agent took:
  what playbooks are extracted from and what a golden path keeps as its trace summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from django.db import transaction

from governance.audit import Actor
from learning import golden_paths
from learning.models import GoldenPathSource
from tenants.context import tenant_scope

log = structlog.get_logger(__name__)

# Blueprints whose reviewed answers are answers to customers, reused as golden paths.
ANSWERING_BLUEPRINTS = frozenset({"support_agent"})

__all__ = [
    "cited_golden_paths",
    "learn_from_review",
    "learns_from",
    "record_review_outcome",
    "trace_steps",
    "trace_summary",
]

_TITLE_CHARS = 80
# How much a source vouches for an answer (GoldenPath.score): a rewrite is the reviewer's
# own answer; an approval confirms the agent's.
_DECISION_SOURCES = {"approve": GoldenPathSource.APPROVED, "edit": GoldenPathSource.EDITED}
LEARNING_DECISIONS = tuple(_DECISION_SOURCES)  # the decisions a golden path is learnt from
_DECISION_SCORES = {GoldenPathSource.APPROVED: 0.9, GoldenPathSource.EDITED: 1.0}


def trace_steps(result: Mapping[str, Any] | None) -> list[str]:
    """The ordered steps of a settled run, as names that recur across runs.

    ``classify:<intent>``, ``consult:<kind>:<title>`` per source the answer used,
    ``tool:<name>`` per tool called, ``answer:<handler>``, ``review:<decision>`` when a
    person decided, then ``deliver`` or ``handoff``.
    """
    if not result:
        return []
    metadata = result.get("metadata") or {}
    steps = [f"classify:{result.get('intent') or 'unknown'}"]
    for source in result.get("sources") or []:
        if isinstance(source, Mapping):
            title = str(source.get("title") or source.get("id") or "")[:_TITLE_CHARS]
            steps.append(f"consult:{source.get('kind')}:{title}")
    for tool in metadata.get("tools") or []:
        name = tool.get("name") if isinstance(tool, Mapping) else tool
        if name:
            steps.append(f"tool:{name}")
    if metadata.get("handler"):
        steps.append(f"answer:{metadata['handler']}")
    review = result.get("review") or {}
    if review.get("decision"):
        steps.append(f"review:{review['decision']}")
    delivered = not result.get("escalated") or review.get("decision") in ("approve", "edit")
    steps.append("deliver" if delivered else "handoff")
    return list(dict.fromkeys(steps))  # a step taken twice is one state of the playbook


def cited_golden_paths(result: Mapping[str, Any] | None) -> list[str]:
    """The ids of the golden paths a run's answer cited (its sources)."""
    return [
        str(source.get("id"))
        for source in (result or {}).get("sources") or []
        if isinstance(source, Mapping) and source.get("kind") == "golden_path" and source.get("id")
    ]


def trace_summary(run: Any, *, decision: str = "", request_id: str = "") -> dict[str, Any]:
    """What a golden path remembers of the run it came from (no end-user identifiers)."""
    result = run.result or {}
    return {
        "run_id": str(run.pk),
        "intent": result.get("intent"),
        "confidence": result.get("confidence"),
        "escalation_reason": result.get("escalation_reason"),
        "sources": [
            {"kind": s.get("kind"), "id": s.get("id"), "title": s.get("title")}
            for s in result.get("sources") or []
            if isinstance(s, Mapping)
        ][:10],
        "steps": trace_steps(result),
        "decision": decision or None,
        "request_id": request_id or None,
    }


def is_playground(run: Any) -> bool:
    """A run sent from the dashboard's playground (issue 19): an operator trying the
    agent, not a customer; nothing is learnt from it."""
    return bool((getattr(run, "metadata", None) or {}).get("playground"))


def learns_from(request: Any) -> bool:
    """Whether a decided request teaches anything: a rejection does not, nor does
    confirming a settled run's answer (it is not new), nor a playground run."""
    return (
        request.decision in _DECISION_SOURCES
        and not (request.context.get("after_the_fact") and request.decision == "approve")
        and not is_playground(request.run)
    )


def record_review_outcome(request: Any, decision: str, *, actor: Actor) -> Any:
    """The golden path of an approved or edited HITL request (current tenant scope)."""
    source = _DECISION_SOURCES.get(decision)
    if source is None or (request.context.get("after_the_fact") and decision == "approve"):
        return None  # a rejection teaches nothing; confirming a settled answer is not new
    if is_playground(request.run):
        return None
    answer = request.response if source == GoldenPathSource.EDITED else request.proposed_answer
    run = request.run
    if run.agent.blueprint not in ANSWERING_BLUEPRINTS:
        # A reviewed code review, triage or audit is no answer to a customer's question:
        # learnt, a support agent sharing the tenant's golden paths could quote it.
        return None
    return golden_paths.record_outcome(
        actor=actor,
        agent=run.agent,
        question=request.question,
        answer=answer or "",
        source=source,
        score=_DECISION_SCORES[source],
        category=request.intent or "",
        run=run,
        trace=trace_summary(run, decision=decision, request_id=str(request.pk)),
    )


def count_golden_path_uses(tenant_id: int, run: Mapping[str, Any]) -> None:
    """A completed run's answer cited golden paths: count one use of each.

    ``run`` is the activity payload of the run (``learning.services``, which reads the run
    once for both). An edited or rejected review means the customer got a reviewer's words
    (or nothing), not the cited answer, so nothing is counted then.
    """
    if run.get("review") not in (None, "approve"):
        return
    ids = cited_golden_paths(run)
    if not ids:
        return
    try:
        with tenant_scope(int(tenant_id)), transaction.atomic():
            golden_paths.count_usage(ids)
    except Exception:
        # Counting uses is bookkeeping: it must never undo the run's completion.
        log.exception("golden_path.usage_failed", run_id=str(run.get("run_id")))


def learn_from_review(request: Any) -> str:
    """Record a decided request's golden path (the ``learning.record_review_outcome`` task,
    after the decision committed, hands over the HITL request it read). Idempotent: a
    request whose run is already in a golden path of its agent changes nothing
    (``golden_paths.record_outcome``). No transaction is open here, so the embedding holds
    no lock; the write takes only the agent's own."""
    if request is None or request.decision not in _DECISION_SOURCES:
        return "skipped"
    actor = Actor("user", str(request.decided_by_id)) if request.decided_by_id else None
    path = record_review_outcome(request, request.decision, actor=actor or Actor.system("hitl"))
    return "recorded" if path is not None else "skipped"
