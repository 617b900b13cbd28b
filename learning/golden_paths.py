"""Golden paths: answers a person vouched for, found again for the next similar question.

Where they come from (SPEC 9): a HITL decision that approves or edits an answer (after
it commits, by the ``learning.record_review_outcome`` task) and feedback that scores a
delivered answer highly (:mod:`learning.feedback`). Both go through :func:`record_outcome`,
which embeds the question and either merges it into a near-duplicate of the same agent and
category (similarity at least ``GOLDEN_PATH_MERGE_SIMILARITY``) or inserts a new row, under
a per-agent advisory lock so two concurrent decisions cannot both insert the same question.

Where they go: the agent's pipeline searches them in its parallel context stage
(:mod:`learning.stores`); the offline provider answers a close one verbatim with high
confidence, so the same question no longer escalates; the reply's sources name the golden
path, and :func:`count_usage` counts it when the run completes.

Every search filters by tenant inside the query (the scoped manager) and goes through
:func:`agentflow.vector_search.nearest`, which keeps the filter whichever plan it picks.
"""

from __future__ import annotations

import functools
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from django.db import connection, transaction
from django.db.models import F

from agentflow import non_answers
from agentflow.core.conf import setting_float
from agentflow.core.realtime import send_to_group_on_commit, tenant_group
from agentflow.kernel.smalltalk import SMALL_TALK, small_talk_kind
from agentflow.kernel.vectors import Vector
from agentflow.knowledge import embed_query
from agentflow.models import Agent, Run
from agentflow.vector_search import EXACT_SEARCH_MAX_ROWS, exact_statement, nearest, nearest_exact
from governance.audit import Actor, append
from learning.models import GoldenPath, GoldenPathSource
from learning.serializers import GoldenPathSerializer
from tenants.scoping import require_tenant_id

log = structlog.get_logger(__name__)

__all__ = [
    "GoldenPathHit",
    "count_usage",
    "record_outcome",
    "search",
    "set_active",
]

# A person's own words beat a person's nod, which beats a customer's score: a merge only
# replaces the answer of a row with a source of equal or lower rank.
_SOURCE_RANK: dict[str, int] = {  # callers pass the source as a plain str
    GoldenPathSource.FEEDBACK: 0,
    GoldenPathSource.APPROVED: 1,
    GoldenPathSource.EDITED: 2,
}
_MAX_TRACE_RUNS = 20  # runs remembered per row: enough to audit a merge, bounded in size
_ADVISORY_LOCK_CLASS = 7363  # 7361 audit chain, 7362 run lease


@dataclass(frozen=True, slots=True)
class GoldenPathHit:
    golden_path: GoldenPath
    score: float  # cosine similarity of the questions, within (0, 1]


def _lock_agent(agent_id: Any) -> None:
    """Serialise merges into one agent's golden paths until the transaction ends."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_ADVISORY_LOCK_CLASS, str(agent_id)]
        )


def _scope(agent_id: Any, *, include_inactive: bool = False) -> Any:
    rows = GoldenPath.objects.filter(agent_id=agent_id)
    return rows if include_inactive else rows.filter(is_active=True)


def _publish(path: GoldenPath, event: str) -> None:
    send_to_group_on_commit(
        tenant_group(path.tenant_id),
        {
            "type": f"learning.golden_path.{event}",
            "golden_path": dict(GoldenPathSerializer(path).data),
        },
    )


def recorded_for_run(agent_id: Any, run_id: str) -> GoldenPath | None:
    """The row a run's outcome already went into (a retried task must not count it twice)."""
    return (
        _scope(agent_id, include_inactive=True)
        .filter(trace_summary__runs__contains=[run_id])
        .first()
    )


def record_outcome(
    *,
    actor: Actor,
    agent: Agent,
    question: str,
    answer: str,
    source: str,
    score: float,
    category: str = "",
    run: Run | None = None,
    trace: dict[str, Any] | None = None,
    vector: Vector | None = None,
) -> GoldenPath | None:
    """Record a vouched-for answer: merged into a near-duplicate, or a new golden path.

    Runs in the current tenant scope and the caller's transaction, if any; the question is
    embedded before any lock is taken, so call it outside transactions that hold locks
    others wait for (a HITL decision's learning runs after it commits). Returns None when
    there is nothing to learn: an empty question, or an answer that is none (empty, a
    hand-off, the agent's escalation message or template answer: learnt, it would promise
    every similar question a person who never comes), or small talk. Recording the same run
    twice changes nothing (and does not embed again). `category` is the message's intent;
    the row's category is the one most messages given the same answer were asked as
    (``_answer_category``).
    """
    tenant_id = require_tenant_id()
    question, answer = question.strip(), answer.strip()
    if not question or source not in _SOURCE_RANK:
        return None
    if category == SMALL_TALK or small_talk_kind(question) is not None:
        return None  # "thanks!" is answered by every agent: no resolution to reuse
    if (why := non_answers.check(answer, agent=agent)) is not None:
        log.info("golden_path.refused", reason=why.kind, run_id=str(run.pk) if run else None)
        return None
    run_id = str(run.pk) if run is not None else ""
    summary = {**(trace or {}), "runs": [run_id] if run_id else []}
    if run_id and (done := recorded_for_run(agent.pk, run_id)) is not None:
        return done  # a redelivered task: not even the embedding is paid twice
    if vector is None:
        vector = embed_query(question)
    threshold = setting_float("GOLDEN_PATH_MERGE_SIMILARITY")
    summary["asked_as"] = category  # the message's intent: its vote for the answer's category
    with transaction.atomic():
        _lock_agent(agent.pk)
        if run_id and (done := recorded_for_run(agent.pk, run_id)) is not None:
            return done
        category = _answer_category(actor, agent.pk, answer, category)
        candidates = _scope(agent.pk).filter(category=category)
        close = nearest(candidates, vector, limit=1, fields=("id",))
        if close and close[0]["similarity"] >= threshold:
            return _merge(close[0]["id"], actor, answer, source, score, run_id, summary)
        path = GoldenPath.objects.create(
            tenant_id=tenant_id,
            agent=agent,
            category=category,
            question=question,
            answer=answer,
            trace_summary=summary,
            source=source,
            score=score,
            source_run=run,
            embedding=vector,
        )
        path.refresh_from_db(fields=["created_at", "updated_at"])
        append(
            tenant_id=tenant_id,
            actor=actor,
            action="learning.golden_path.created",
            target_type="golden_path",
            target_id=path.pk,
            changes={"agent_id": str(agent.pk), "source": source, "run_id": run_id or None},
        )
        _publish(path, "created")
    log.info("golden_path.created", golden_path_id=str(path.pk), source=source)
    return path


def _answer_category(actor: Actor, agent_id: Any, answer: str, asked_as: str) -> str:
    """The category of a golden path: the intent most messages given this very answer were
    classified as, when more than half were; else the message's own (`asked_as`).

    A person's answer says what a question was about better than the classifier did: a
    message it put in the wrong category, answered with another category's answer (an
    approved golden path, a reviewer's macro), would otherwise be a golden path of the wrong
    category, and answer that category's next questions with it. Each row votes with the
    intent it was asked as; rows of a minority category move to the majority's (audited).
    Uncategorised rows (given in code) and an uncategorised message stay out of it.
    """
    if not asked_as:
        return asked_as
    rows = list(_scope(agent_id).filter(answer=answer).exclude(category=""))
    if not rows:
        return asked_as
    votes = Counter(str(row.trace_summary.get("asked_as") or row.category) for row in rows)
    votes[asked_as] += 1
    leader, count = votes.most_common(1)[0]
    if 2 * count <= sum(votes.values()):
        return asked_as  # no majority: an answer several categories share stays per message
    for row in rows:
        if row.category != leader:
            _recategorise(actor, row, leader)
    return leader


def _recategorise(actor: Actor, path: GoldenPath, category: str) -> None:
    before = path.category
    path.category, path.updated_at = category, datetime.now(UTC)
    path.save(update_fields=["category", "updated_at"])
    append(
        tenant_id=path.tenant_id,
        actor=actor,
        action="learning.golden_path.recategorised",
        target_type="golden_path",
        target_id=path.pk,
        changes={"category": {"from": before, "to": category}},
    )
    _publish(path, "updated")


def _merge(
    path_id: uuid.UUID,
    actor: Actor,
    answer: str,
    source: str,
    score: float,
    run_id: str,
    summary: dict[str, Any],
) -> GoldenPath:
    path = GoldenPath.objects.select_for_update().get(pk=path_id)
    replaces = _SOURCE_RANK[source] >= _SOURCE_RANK[GoldenPathSource(path.source)]
    if replaces:
        path.answer, path.source = answer, source
        runs = [*path.trace_summary.get("runs", []), *summary["runs"]][-_MAX_TRACE_RUNS:]
        path.trace_summary = {**summary, "runs": runs}
    else:
        runs = [*path.trace_summary.get("runs", []), *summary["runs"]][-_MAX_TRACE_RUNS:]
        path.trace_summary = {**path.trace_summary, "runs": runs}
    path.score = max(path.score, score)
    path.merged_count += 1
    path.updated_at = datetime.now(UTC)
    path.save(
        update_fields=["answer", "source", "trace_summary", "score", "merged_count", "updated_at"]
    )
    append(
        tenant_id=path.tenant_id,
        actor=actor,
        action="learning.golden_path.merged",
        target_type="golden_path",
        target_id=path.pk,
        changes={"source": source, "answer_replaced": replaces, "run_id": run_id or None},
    )
    _publish(path, "updated")
    log.info("golden_path.merged", golden_path_id=str(path.pk), answer_replaced=replaces)
    return path


def search(
    *,
    query: str | None = None,
    vector: Vector | None = None,
    agent_id: Any = None,
    limit: int = 5,
    include_inactive: bool = False,
    scope_rows: int | None = None,
    intent: str | None = None,
) -> list[GoldenPathHit]:
    """The tenant's golden paths most similar to a question, best first (sync ORM).

    The tenant filter comes from the scoped manager inside the query; ``agent_id`` narrows
    to one agent's rows (None: the whole tenant); ``intent`` to the rows that may answer a
    message of that intent: its category and uncategorised rows (``golden_path_matches``).
    """
    if vector is None:
        vector = embed_query(query or "")
    found = _nearest(vector, agent_id, limit, include_inactive, scope_rows, intent, ("id",))
    by_id = GoldenPath.objects.in_bulk([row["id"] for row in found])
    return [
        GoldenPathHit(by_id[row["id"]], row["similarity"]) for row in found if row["id"] in by_id
    ]


def search_answers(
    vector: Vector,
    *,
    agent_id: Any = None,
    limit: int = 5,
    scope_rows: int | None = None,
    intent: str | None = None,
) -> list[dict[str, Any]]:
    """As ``search`` over the active rows, each hit as a dict of its ``id``, ``question``,
    ``answer`` and ``similarity``: what a run's context needs, in one statement. Loading the
    whole rows (their embedding and trace) was 40 % of the search's CPU (issue 15)."""
    fields = ("id", "question", "answer")
    if scope_rows is not None and scope_rows <= EXACT_SEARCH_MAX_ROWS:
        # A run's search of a small scope (the store's cached count): a constant statement.
        statement, params = _exact_answers_statement(agent_id, intent)
        return nearest_exact(statement, params, vector, columns=fields, limit=limit)
    return _nearest(vector, agent_id, limit, False, scope_rows, intent, fields)


def _exact_answers_statement(agent_id: Any, intent: str | None) -> tuple[str, list[Any]]:
    """`_nearest`'s filters over the active rows, as `nearest_exact`'s statement and
    parameters."""
    params: list[Any] = [require_tenant_id()]
    if agent_id is not None:
        params.append(agent_id)
    if intent:
        params.append(intent)
    return _exact_answers_sql(agent_id is not None, bool(intent)), params


@functools.cache
def _exact_answers_sql(by_agent: bool, by_intent: bool) -> str:
    where = ["tenant_id = %s", "is_active"]
    if by_agent:
        where.append("agent_id = %s")
    if by_intent:
        where.append("category IN (%s, '')")
    return exact_statement(
        select="id, question, answer",
        source="learning_goldenpath",
        where=" AND ".join(where),
        embedding="embedding",
    )


def _nearest(
    vector: Vector,
    agent_id: Any,
    limit: int,
    include_inactive: bool,
    scope_rows: int | None,
    intent: str | None,
    fields: Sequence[str],
) -> list[dict[str, Any]]:
    require_tenant_id()
    rows = GoldenPath.objects.all()
    if agent_id is not None:
        rows = rows.filter(agent_id=agent_id)
    if not include_inactive:
        rows = rows.filter(is_active=True)
    if intent:
        rows = rows.filter(category__in=[intent, ""])
    return nearest(rows, vector, limit=limit, fields=fields, scope_rows=scope_rows)


def set_active(*, actor: Actor, path: GoldenPath, active: bool) -> GoldenPath:
    """Deactivate (never retrieved again) or reactivate a golden path; audited, live."""
    with transaction.atomic():
        now = datetime.now(UTC)
        changed = GoldenPath.objects.filter(pk=path.pk, is_active=not active).update(
            is_active=active,
            deactivated_at=None if active else now,
            deactivated_by="" if active else f"{actor.type}:{actor.id}",
            updated_at=now,
        )
        path.refresh_from_db()
        if changed:
            append(
                tenant_id=path.tenant_id,
                actor=actor,
                action="learning.golden_path.activated"
                if active
                else "learning.golden_path.deactivated",
                target_type="golden_path",
                target_id=path.pk,
            )
            _publish(path, "updated")
    return path


def count_usage(golden_path_ids: Sequence[str], *, at: datetime | None = None) -> int:
    """Count one use of each golden path a delivered answer cited (current tenant)."""
    ids = [value for value in golden_path_ids if _is_uuid(value)]
    if not ids:
        return 0
    return GoldenPath.objects.filter(pk__in=ids).update(
        usage_count=F("usage_count") + 1, last_used_at=at or datetime.now(UTC)
    )


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
