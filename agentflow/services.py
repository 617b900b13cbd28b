"""Agents and runs: every write, every rule (ARCHITECTURE habit 2).

``start_run`` checks quotas under the tenant's row lock (exact under any
concurrency), records the run and its usage, and enqueues the work on commit.
``execute_run`` moves the run through its state machine by compare-and-set, so
a task delivered twice (or a worker killed mid-run) still completes it once.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

import structlog
from asgiref.sync import sync_to_async
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.db.models.sql import UpdateQuery

from agentflow import budgets, continuations, run_events, run_quotas, takeover, tooling
from agentflow.core import queueing, worker_loop
from agentflow.core.api.exceptions import ContractError, conflict
from agentflow.core.conf import setting_float, setting_int
from agentflow.core.context import current_correlation_id
from agentflow.core.leases import AdvisoryLeases
from agentflow.core.metrics import RUN_PERSISTENCE_FAILURES
from agentflow.core.rows import unique_or_none
from agentflow.kernel.confidence import EscalationReason
from agentflow.kernel.pipeline import DEFAULT_ESCALATION_MESSAGE, PersistenceError
from agentflow.kernel.planning.preflight import PreflightEstimate, decide
from agentflow.kernel.results import AgentReply
from agentflow.models import (
    Agent,
    AgentSession,
    Message,
    MessageRole,
    Run,
    RunStatus,
    RunTransition,
    Step,
    Thread,
    ThreadStatus,
)
from agentflow.pipelines import (
    AgentConfigError,
    get_pipeline,
    runs_preflight,
    validate_agent_config,
)
from agentflow.planners import (
    preflight_accuracy,
    preflight_record,
    preflight_token_scale,
    prices_runs,
    run_preflight,
)
from agentflow.run_result import reply_result
from agentflow.run_signals import in_flight_runs, publish_settled
from governance.audit import Actor, append, batched_appends
from hitl.models import OPEN_STATUSES, HITLRequest
from hitl.services import request_review
from learning import services as learning_services
from tenants.context import tenant_scope
from tenants.models import Tenant
from tenants.services import record_usage

log = structlog.get_logger(__name__)
T = TypeVar("T")

ACTIVE_STATUSES = (RunStatus.PENDING, RunStatus.PROCESSING)
_RUN_LEASE = 7_362  # advisory-lock namespace of run leases (audit chains use 7_361)
CANCELLABLE = (RunStatus.PENDING, RunStatus.PROCESSING, RunStatus.AWAITING_REVIEW)
# The task that executes a run (agentflow.tasks), sent by name: the task module calls
# this one, so this one never imports it.
EXECUTE_RUN_TASK = "agentflow.runs.execute"


class AgentConfigInvalid(ValueError):
    """The config does not fit the blueprint; ``fields`` maps each bad field to its reasons."""

    def __init__(self, message: str, fields: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.fields = fields


# --- agents -----------------------------------------------------------------------


def _validated_config(blueprint: str, config: dict[str, Any]) -> dict[str, Any]:
    try:
        return validate_agent_config(blueprint, config)
    except AgentConfigError as exc:
        raise AgentConfigInvalid(str(exc), exc.by_field()) from exc


def create_agent(
    *, actor: Actor, tenant: Tenant, name: str, blueprint: str, config: dict[str, Any]
) -> Agent:
    normalised = _validated_config(blueprint, config)
    quota = tenant.quotas.agents
    with tenant_scope(tenant.pk), transaction.atomic():
        Tenant.objects.select_for_update(no_key=True).get(pk=tenant.pk)
        if quota is not None and Agent.objects.count() >= quota:
            raise ContractError(
                f"The tenant's agent quota ({quota}) is used up.",
                status_code=429,
                error_type="quota_exceeded",
                extra={"limit": "agents", "resets_at": None},
            )
        try:
            with transaction.atomic():
                agent = Agent.objects.create(name=name, blueprint=blueprint, config=normalised)
        except IntegrityError:
            raise conflict(f"An agent named {name!r} already exists.", "duplicate") from None
        append(
            tenant_id=tenant.pk,
            actor=actor,
            action="agent.created",
            target_type="agent",
            target_id=agent.pk,
            changes={"name": name, "blueprint": blueprint, "config": normalised},
        )
    return agent


def update_agent(
    *, actor: Actor, agent: Agent, name: str | None = None, config: dict[str, Any] | None = None
) -> Agent:
    changes: dict[str, Any] = {}
    if config is not None:
        agent.config = _validated_config(agent.blueprint, config)
        changes["config"] = agent.config
    if name is not None and name != agent.name:
        agent.name = name
        changes["name"] = name
    if not changes:
        return agent
    agent.version += 1  # a new version invalidates cached pipelines everywhere
    with transaction.atomic():  # inside the tenant's scope: the API view (or dashboard) entered it
        try:
            with transaction.atomic():
                agent.save()
        except IntegrityError:
            raise conflict(f"An agent named {name!r} already exists.", "duplicate") from None
        append(
            tenant_id=agent.tenant_id,
            actor=actor,
            action="agent.updated",
            target_type="agent",
            target_id=agent.pk,
            changes={**changes, "version": agent.version},
        )
    return agent


def delete_agent(*, actor: Actor, agent: Agent) -> None:
    with transaction.atomic():  # inside the tenant's scope: the API view (or dashboard) entered it
        append(
            tenant_id=agent.tenant_id,
            actor=actor,
            action="agent.deleted",
            target_type="agent",
            target_id=agent.pk,
            changes={"name": agent.name},
        )
        agent_id = agent.pk
        agent.delete()
        # Its MCP servers' sessions (subprocesses) in this process close with it.
        transaction.on_commit(lambda: tooling.evict_registry(agent_id))


# How many of an agent's latest settled runs its preflight accuracy is measured over.
PREFLIGHT_ACCURACY_RUNS = 200


def _preflight_records(agent_id: uuid.UUID | str) -> list[dict[str, Any]]:
    """The ``metadata.preflight`` of the agent's latest settled runs that spent tokens."""
    records = (
        Run.objects.filter(
            agent_id=agent_id,
            status__in=(RunStatus.COMPLETED, RunStatus.AWAITING_REVIEW),
            result__metadata__preflight__actual_tokens__gt=0,
        )
        .order_by("-created_at")
        .values_list("result__metadata__preflight", flat=True)[:PREFLIGHT_ACCURACY_RUNS]
    )
    return [record for record in records if isinstance(record, dict)]


def agent_preflight_accuracy(agent: Agent) -> dict[str, Any] | None:
    """p50/p95 relative token error of the preflight over the agent's last settled runs.

    Runs whose LLM spent nothing (offline, refused) are left out; None when none is left.
    """
    return preflight_accuracy(_preflight_records(agent.pk))


# How long a worker keeps an agent's learnt token scale before reading its runs again.
TOKEN_SCALE_TTL_SECONDS = 300.0


class _TokenScales:
    """Agent id → (token scale, when learnt), shared by the threads of one process."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl_seconds = ttl_seconds
        self._items: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def get(self, agent_id: str) -> float | None:
        with self._lock:
            found = self._items.get(agent_id)
        if found is None or time.monotonic() - found[1] > self.ttl_seconds:
            return None
        return found[0]

    def put(self, agent_id: str, scale: float) -> None:
        with self._lock:
            self._items[agent_id] = (scale, time.monotonic())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_token_scales = _TokenScales(TOKEN_SCALE_TTL_SECONDS)


def agent_token_scale(agent: Agent) -> float:
    """Actual ÷ estimated tokens learnt from the agent's runs; 1.0 when it prices nothing.

    Kept per process for `TOKEN_SCALE_TTL_SECONDS`: one read of its recent runs per agent
    per worker every few minutes, not one per run.
    """
    if not prices_runs(agent.config):
        return 1.0
    key = str(agent.pk)
    scale = _token_scales.get(key)
    if scale is None:
        scale = preflight_token_scale(_preflight_records(agent.pk))
        _token_scales.put(key, scale)
    return scale


# --- starting runs ------------------------------------------------------------------


@dataclass(frozen=True)
class RunRequest:
    user_id: str
    message: str
    priority: str = "medium"
    metadata: dict[str, Any] = field(default_factory=dict)


def start_run(
    *,
    actor: Actor,
    agent: Agent,
    request: RunRequest,
    on_created: Callable[[Any], None] | None = None,
) -> Run:
    """Accept a message for ``agent``: quotas, the run row, usage, audit; enqueue on commit.

    ``on_created(run_id)`` runs before the work is enqueued (a waiter subscribes there).
    """
    now, run_id = datetime.now(UTC), uuid.uuid4()
    claim: run_quotas.Claim | None = None
    with tenant_scope(agent.tenant_id):
        try:
            with transaction.atomic():
                # No tenant row lock: a Redis claim (or, Redis down, the locked count).
                claim = run_quotas.admit(agent.tenant, run_id, now)
                run = _accept(actor, agent, request, run_id, on_created)
        except BaseException:
            run_quotas.release(claim)  # a failed 202 does not keep its quota
            raise
    return run


def _accept(
    actor: Actor,
    agent: Agent,
    request: RunRequest,
    run_id: uuid.UUID,
    on_created: Callable[[Any], None] | None,
) -> Run:
    """The writes of a 202, in the caller's transaction, once its quotas admitted it."""
    session_id = _session_of(agent, request.user_id)
    run = Run.objects.create(
        id=run_id,
        agent=agent,
        session_id=session_id,
        user_id=request.user_id,
        input=request.message,
        priority=request.priority,
        metadata=request.metadata,
        correlation_id=current_correlation_id() or "",
    )
    run_events.publish(run)  # on commit: the dashboard's runs list shows it live
    tenant_id = agent.tenant_id
    append(
        tenant_id=tenant_id,
        actor=actor,
        action="run.created",
        target_type="run",
        target_id=run.pk,
        changes={"agent_id": str(agent.pk), "priority": request.priority},
        seal_now=False,  # no chain lock on the run path: the sealer chains it
    )
    if on_created is not None:
        on_created(run.pk)
    record_usage(tenant_id=tenant_id, runs=1)  # the last write: its row lock ends at COMMIT
    queued = str(run.pk)
    # Broker down: the run waits in PostgreSQL and the recovery sweep sends it later.
    transaction.on_commit(lambda: queueing.send(EXECUTE_RUN_TASK, tenant_id, queued))
    return run


def _session_of(agent: Agent, user_id: str) -> uuid.UUID:
    """The id of the end user's session, made on the user's first run: one statement.

    No savepoint: the insert skips a row that exists. Only when a concurrent first run of
    the same user inserted it first (the statement's snapshot predates that commit) does a
    second statement read it.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _SESSION_SQL,
            [agent.tenant_id, agent.pk, user_id, uuid.uuid4(), agent.tenant_id, agent.pk, user_id],
        )
        row = cursor.fetchone()
    if row is not None:
        return row[0]
    return (
        AgentSession.objects.filter(agent=agent, user_id=user_id).values_list("id", flat=True).get()
    )


_SESSION_SQL = """
WITH found AS (
    SELECT id FROM agentflow_agentsession WHERE tenant_id = %s AND agent_id = %s AND user_id = %s
), made AS (
    INSERT INTO agentflow_agentsession
        (id, tenant_id, agent_id, user_id, active_thread_id, message_count, state, created_at,
         last_active)
    SELECT %s, %s, %s, %s, '', 0, '{}', now(), now()
    WHERE NOT EXISTS (SELECT 1 FROM found)
    ON CONFLICT (agent_id, user_id) DO NOTHING
    RETURNING id
)
SELECT id FROM found UNION ALL SELECT id FROM made
"""


# --- the state machine ----------------------------------------------------------------


def transition(
    run_id: Any,
    from_statuses: tuple[str, ...],
    to_status: str,
    *,
    reason: str = "",
    row: Run | None = None,
    steps: list[Step] | None = None,
    messages: list[Message] | None = None,
    **fields: Any,
) -> bool:
    """Compare-and-set a run's status; records the transition when it wins.

    With ``row`` (the caller's copy of the run, agent loaded) and one ``from`` status the
    compare-and-set is a single UPDATE: the previous status is known, and the live event
    and the activity event are built from ``row``. ``steps`` and ``messages`` are inserted
    when it wins (in that same statement when it is one). No savepoint: a failure here
    fails the caller's transaction anyway.
    """
    known = row is not None and len(from_statuses) == 1
    with transaction.atomic(savepoint=False):
        if row is not None and known:
            previous = from_statuses[0]
            written = (steps or [], messages or [])
            if not _move_and_record(run_id, previous, to_status, reason, fields, *written):
                return False
        else:
            row = (
                # NO KEY UPDATE: inserts of messages/steps referencing the run must not wait.
                # The columns of the live event are read here too: no extra query for it.
                Run.objects.select_for_update(no_key=True)
                .filter(pk=run_id, status__in=from_statuses)
                .only(*run_events.ROW_FIELDS)
                .first()
            )
            if row is None:
                return False
            previous = row.status
            Run.objects.filter(pk=run_id).update(status=to_status, **fields)
            RunTransition.objects.create(
                run_id=run_id, from_status=previous, to_status=to_status, reason=reason
            )
            if steps:
                Step.objects.bulk_create(steps)
            if messages:
                Message.objects.bulk_create(messages)
        run_events.publish_transition(row, to_status, fields)
        if not reason.startswith("review:"):
            # A review's resumption is recorded by agentflow.orchestration.decide_review.
            learning_services.record_run_settled(
                run_id, to_status, from_status=previous, reason=reason, run=row if known else None
            )
    return True


def _move_and_record(
    run_id: Any,
    previous: str,
    to_status: str,
    reason: str,
    fields: dict[str, Any],
    steps: list[Step],
    messages: list[Message],
) -> bool:
    """The compare-and-set UPDATE, its RunTransition INSERT, the run's steps and messages in
    one statement.

    Data-modifying CTEs: the transition, steps and messages are inserted only for the row
    the UPDATE moved, so a lost race writes nothing. The UPDATE is the scoped manager's own
    SQL (tenant filter included); the inserted rows take their tenant from the row it moved.
    """
    rows = Run.objects.filter(pk=run_id, status=previous)
    moved: UpdateQuery = rows.query.chain(UpdateQuery)  # type: ignore[assignment]
    moved.add_update_values({"status": to_status, **fields})
    update_sql, update_params = moved.get_compiler(using=rows.db).as_sql()
    ctes, params = [], [*update_params, previous, to_status, reason]
    if steps:
        ctes.append(_STEPS_CTE)
        params.extend(_step_columns(steps))
    if messages:
        ctes.append(_MESSAGES_CTE)
        params.extend(_message_columns(messages))
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH moved AS ({update_sql} RETURNING tenant_id, id), "  # noqa: S608 - Django's SQL
            "recorded AS (INSERT INTO agentflow_runtransition (tenant_id, run_id, from_status,"
            f" to_status, reason) SELECT tenant_id, id, %s, %s, %s FROM moved){''.join(ctes)}"
            " SELECT count(*) FROM moved",
            params,
        )
        (count,) = cursor.fetchone()
        return bool(count == 1)


# The run's steps and messages, one array per column (the shape of Django's own bulk
# inserts), joined to the row the compare-and-set moved.
_STEPS_CTE = """, stepped AS (
    INSERT INTO agentflow_step
        (tenant_id, run_id, "index", name, duration_ms, tokens, cost_usd, detail)
    SELECT moved.tenant_id, moved.id, step."index", step.name, step.duration_ms, step.tokens,
        step.cost_usd, step.detail::jsonb
    FROM moved CROSS JOIN UNNEST(
        %s::smallint[], %s::varchar[], %s::double precision[], %s::integer[], %s::numeric[],
        %s::text[]
    ) AS step ("index", name, duration_ms, tokens, cost_usd, detail)
)"""
_MESSAGES_CTE = """, said AS (
    INSERT INTO agentflow_message
        (tenant_id, id, session_id, thread_id, run_id, role, content, created_at)
    SELECT moved.tenant_id, message.id, message.session_id, message.thread_id, moved.id,
        message.role, message.content, message.created_at
    FROM moved CROSS JOIN UNNEST(
        %s::uuid[], %s::uuid[], %s::varchar[], %s::varchar[], %s::text[], %s::timestamptz[]
    ) AS message (id, session_id, thread_id, role, content, created_at)
)"""


def _step_columns(steps: list[Step]) -> list[list[Any]]:
    return [
        [step.index for step in steps],
        [step.name for step in steps],
        [step.duration_ms for step in steps],
        [step.tokens for step in steps],
        [step.cost_usd for step in steps],
        [json.dumps(step.detail) for step in steps],
    ]


def _message_columns(messages: list[Message]) -> list[list[Any]]:
    return [
        [message.id for message in messages],
        [message.session_id for message in messages],
        [message.thread_id for message in messages],
        [message.role for message in messages],
        [message.content for message in messages],
        [message.created_at for message in messages],
    ]


def cancel_run(*, actor: Actor, run: Run) -> Run:
    """Cancel an unfinished run (inside its tenant's scope: the API view, the erasure)."""
    if not transition(
        run.pk,
        CANCELLABLE,
        RunStatus.CANCELLED,
        reason="cancelled by client",
        finished_at=datetime.now(UTC),
    ):
        run.refresh_from_db()
        raise conflict(
            f"Run is {run.status} and can no longer be cancelled.",
            "run_finished",
            status=run.status,
        )
    append(
        tenant_id=run.tenant_id,
        actor=actor,
        action="run.cancelled",
        target_type="run",
        target_id=run.pk,
    )
    run.refresh_from_db()
    _announce(run)
    return run


def _announce(run: Run) -> None:
    if run.is_terminal or run.status == RunStatus.AWAITING_REVIEW:
        run_id = run.pk
        transaction.on_commit(lambda: publish_settled(run_id))


# --- executing runs -------------------------------------------------------------------


# One connection per worker process holds the leases of all its runs in flight.
_run_leases = AdvisoryLeases(_RUN_LEASE)


def execute_run(run_id: str) -> str:
    """Process one run (called by the Celery task inside the tenant's scope). Idempotent.

    The lease (an advisory lock) makes a second delivery of the same run (redelivery,
    recovery sweep) leave it to its live worker; when that worker dies, PostgreSQL drops
    the lease with the worker's connection, and the next delivery takes over.
    """
    # Every log line of the run names it (the task bound tenant and correlation id). Bound
    # and reset by token: structlog's bound_contextvars copies the whole context per call.
    tokens = structlog.contextvars.bind_contextvars(run_id=str(run_id))
    try:
        with _run_leases.hold(str(run_id)) as leased:
            if not leased:
                return "busy"  # a live worker is processing it right now
            return _execute_leased(str(run_id))
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
        _return_connection()  # whatever pool of threads called us, it holds none between runs


def _execute_leased(run_id: str) -> str:
    run = unique_or_none(Run.objects.select_related("agent", "session").filter(pk=run_id))
    if run is None:
        log.warning("run.vanished", run_id=run_id)
        return "missing"
    started = run.status == RunStatus.PENDING and transition(
        run_id,
        (RunStatus.PENDING,),
        RunStatus.PROCESSING,
        reason="picked up",
        row=run,  # one UPDATE as compare-and-set; the row is read once
        # A run going on after a review keeps its start: its plan path is timed from it.
        started_at=run.started_at or datetime.now(UTC),
        progress=0.1,
    )
    if not started and run.status == RunStatus.PENDING:
        run.refresh_from_db()  # lost the race (cancelled meanwhile): its status now
    if not started and run.status != RunStatus.PROCESSING:
        return run.status  # already settled: a duplicate delivery does nothing
    # PROCESSING without our transition, yet the lease was free: the worker that started
    # it died mid-run. Processing again is safe because completion is a compare-and-set.
    if not continuations.continues(run) and takeover.in_human_mode(run):
        # A person answers this session (agentflow.takeover): the agent stays silent. (A
        # reviewed run going on delivers its review: that is a person's answer already.)
        return takeover.hold_for_person(run, transition=transition)
    _return_connection()  # while the run waits on its LLM, its connection serves others
    try:
        if continuations.continues(run):  # decided: its plan goes on from where it paused
            done = _interruptibly(run, continuations.run_continuation(run))
            return settle_continuation(run, done)
        reply = _interruptibly(run, _process(run))
    except concurrent.futures.CancelledError:
        run.refresh_from_db()
        log.info("run.stopped", run_id=run_id, status=run.status)
        return run.status  # settled elsewhere meanwhile (cancelled): its work is moot
    except Exception as exc:
        log.exception("run.failed", run_id=run_id)
        if isinstance(exc, PersistenceError):
            RUN_PERSISTENCE_FAILURES.labels(stage=exc.stage).inc()
        with transaction.atomic():
            failed = transition(
                run.pk,
                (RunStatus.PROCESSING,),
                RunStatus.FAILED,
                reason="error",
                error=f"{type(exc).__name__}: {exc}"[:2000],
                finished_at=datetime.now(UTC),
            )
            if failed:
                # The error class only: its message may quote the end user's input.
                append(
                    tenant_id=run.tenant_id,
                    actor=Actor.system("agent"),
                    action="run.failed",
                    target_type="run",
                    target_id=run.pk,
                    changes={"error": type(exc).__name__},
                    seal_now=False,
                )
        if failed:
            run.refresh_from_db()
            with transaction.atomic():
                _announce(run)
        return RunStatus.FAILED
    return complete_run(run, reply)


def _interruptibly(run: Run, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` on the process loop; a cancel announced meanwhile interrupts it."""
    future = worker_loop.submit(work)
    with in_flight_runs.track(str(run.pk), future):
        return future.result()


def _return_connection() -> None:
    """Give this thread's pooled connection back while the run is on the event loop.

    Hundreds of runs in flight in one worker must not hold hundreds of connections; the
    next statement of this thread takes one from the pool again (a warm one).
    """
    if connection.settings_dict["OPTIONS"].get("pool") and not connection.in_atomic_block:
        connection.close()


async def _process(run: Run) -> Any:
    """The run's reply: the cost preflight first, then the pipeline unless it refused.

    The estimate is recorded with what the run actually spent (``metadata.preflight``), so
    estimate vs actual is kept per run (GET /agents/{id}/preflight sums it up). An agent
    with a budget reserves the estimate's upper bound against its day first (`budgets`).
    """
    pipeline = await get_pipeline(run.agent)
    if not runs_preflight(run.agent.blueprint):
        # A StepAgent blueprint's tool states and acting steps call through it (issue 18).
        invoker = tooling.RunToolInvoker(run.agent, run.pk)
        reply = await pipeline.process_message(
            user_id=run.user_id,
            message=run.input,
            context={**_run_context(run), "tool_invoker": invoker},
        )
        return _with_tool_calls(reply, invoker)
    config = run.agent.config
    estimate, reservation = await _priced(run, pipeline.plan)
    record = preflight_record(estimate)
    if estimate.decision == "refuse":
        return _refused_by_preflight(run, config, record)
    # Tool states of the agent's plan call through it; each call is a ToolCall of the run.
    tools = tooling.RunToolInvoker(run.agent, run.pk)
    reply = await pipeline.process_message(
        user_id=run.user_id,
        message=run.input,
        context={**_run_context(run), "tool_invoker": tools},
    )
    reply = _with_tool_calls(reply, tools)
    if reservation is not None:
        await sync_to_async(budgets.settle)(reservation, reply.cost_usd)
    reply.metadata["preflight"] = {
        **record,
        "actual_tokens": int(reply.usage.total_tokens),
        "actual_usd": round(reply.cost_usd, 8),
    }
    if estimate.decision == "warn":
        soft = estimate.budget.soft_usd if estimate.budget is not None else None
        warning = (
            f"preflight: ${estimate.spent_usd:.6f} spent today plus up to "
            f"${estimate.max_usd:.6f}, above the soft budget ${soft}"
        )
        reply.metadata.setdefault("warnings", []).append(warning)
    return reply


def _with_tool_calls(reply: Any, tools: tooling.RunToolInvoker) -> Any:
    """The reply with what its tool calls cost and the call a paused plan proposes."""
    if tools.calls:
        reply.cost_usd += float(tools.cost_usd)  # tools' prices count in the run's cost
        # (``tool_calls`` already names the context tools whose output the answer used.)
        reply.metadata["planned_tool_calls"] = tools.calls
    if tools.pending_action is not None and reply.escalated:
        # Not stored with the run's result (exact arguments): complete_run hands it to review.
        reply.metadata[_ACTION_KEY] = tools.pending_action
    return reply


async def _priced(run: Run, plan: Any) -> tuple[PreflightEstimate, budgets.DayReservation | None]:
    """The run's estimate, and its reservation against the agent's day when it has a budget."""
    config = run.agent.config
    scale = _token_scales.get(str(run.agent_id))
    if scale is None:
        scale = await sync_to_async(agent_token_scale)(run.agent)
    costs = tooling.tool_costs(run.agent, config)
    estimate = run_preflight(plan, str(run.agent_id), config, run.input, costs, token_scale=scale)
    if estimate.budget is None or estimate.max_usd <= 0:
        return estimate, None
    reservation = await sync_to_async(budgets.reserve)(
        run.agent, estimate.max_usd, estimate.budget.hard_usd
    )
    decide(estimate, reservation.spent_before_usd)
    return estimate, (reservation if reservation.admitted else None)


def _run_context(run: Run) -> dict[str, Any]:
    return {
        "run_id": str(run.pk),
        "tenant_id": run.tenant_id,
        "agent_id": str(run.agent_id),
        "priority": run.priority,
        "metadata": run.metadata,
    }


def _request_review(run: Run, reply: Any, action: dict[str, Any] | None) -> None:
    """The run's review request: of kind ``action`` when its plan paused on a tool call
    that needs approval (the request carries the call; the call links to the request)."""
    if action is None:
        if reply.metadata.get("planned_tool_calls") and _in_review(run):
            return  # a tool of its plan (handoff_to_human) already put it before a person
        request_review(run=run, result=reply_result(reply), actor=Actor.system("agent"))
        return
    request = request_review(
        run=run,
        result={**reply_result(reply), "action": action},
        actor=Actor.system("agent"),
        kind="action",
        reason=f"tool call {action['tool']} needs approval",
    )
    tooling.link_approval(action["tool_call_id"], request.pk)


def _in_review(run: Run) -> bool:
    return HITLRequest.objects.filter(run_id=run.pk, status__in=OPEN_STATUSES).exists()


def propose_tool_action(*, actor: Actor, agent: Agent, proposal: dict[str, Any]) -> tuple[Run, Any]:
    """An operator's "try this tool" of a tool that needs approval: a run of the agent
    awaiting review with an action request for the call, as a run's plan would propose it.
    Returns (run, request); approving executes the call once and completes the run."""
    outcome = proposal["outcome"]
    now = datetime.now(UTC)
    with tenant_scope(agent.tenant_id), transaction.atomic():
        run = Run.objects.create(
            tenant_id=agent.tenant_id,
            agent=agent,
            user_id=f"{actor.type}:{actor.id}"[:200],
            input=f"tool call {outcome.tool_id} proposed by {actor.type} {actor.id}"[:2000],
            metadata={"tool_invocation": True},
            status=RunStatus.PROCESSING,
            started_at=now,
        )
        call = tooling.record_call(
            agent=agent,
            config=proposal["config"],
            outcome=outcome,
            arguments=proposal["arguments"],
            actor=actor,
            run_id=run.pk,
        )
        action = tooling.action_context(call, proposal["tool"], proposal["safety_level"])
        transition(run.pk, (RunStatus.PROCESSING,), RunStatus.AWAITING_REVIEW, reason="action")
        result = {"escalation_reason": "action", "action": action}
        request = request_review(
            run=run,
            result=result,
            actor=actor,
            kind="action",
            reason=f"tool call {outcome.tool_id} needs approval",
        )
        tooling.link_approval(call.pk, request.pk)
    return run, request


def _refused_by_preflight(run: Run, config: dict[str, Any], record: dict[str, Any]) -> Any:
    """A person answers instead: the hard budget refused the message before any LLM call.

    The pipeline is not entered, so the kernel's session and memory do not see this turn;
    the run's messages and its review request (complete_run) keep it.
    """
    return AgentReply(
        content=str(config.get("escalation_message") or DEFAULT_ESCALATION_MESSAGE),
        user_id=run.user_id,
        session_id=str(run.session_id or ""),
        intent="",
        intent_confidence=0.0,
        confidence=0.0,
        thread_id="",
        transition="",
        escalated=True,
        escalation_reason=EscalationReason.BUDGET_PREFLIGHT,
        metadata={"preflight": {**record, "actual_tokens": 0, "actual_usd": 0.0}},
    )


_ACTION_KEY = "pending_tool_action"


def complete_run(run: Run, reply: Any) -> str:
    """Settle a processed run exactly once: messages, steps, usage, audit, events."""
    action = reply.metadata.pop(_ACTION_KEY, None)
    to_status = RunStatus.AWAITING_REVIEW if reply.escalated else RunStatus.COMPLETED
    now = datetime.now(UTC)
    tokens = int(reply.usage.total_tokens)
    cost = Decimal(str(round(reply.cost_usd, 6)))
    # Where its plan waits for the decision, when the plan goes on after it.
    paused = {"plan_snapshot": reply.plan_snapshot} if reply.plan_snapshot else {}
    with transaction.atomic():
        won = transition(
            run.pk,
            (RunStatus.PROCESSING,),
            to_status,
            reason=reply.escalation_reason or "answered",
            row=run,
            result=reply_result(reply),
            progress=1.0,
            tokens=tokens,
            cost_usd=cost,
            finished_at=None if reply.escalated else now,
            # In the compare-and-set's statement: what the delivery that settles it writes.
            steps=_steps(run, reply, tokens, cost),
            # The turn, unless the session was erased (session_id None) meanwhile.
            messages=[] if run.session_id is None else _turn(run, reply, run.session_id, now),
            **paused,
        )
        if not won:
            run.refresh_from_db()
            return run.status  # cancelled meanwhile, or another delivery finished first
        # The escalation's audit events (hitl.queued, hitl.assigned...) and the run's: one INSERT.
        with batched_appends():
            if reply.escalated:
                # Queued in this transaction: a run awaiting review always has its request.
                # (Before the audit append below: HITL takes its assignment lock first.)
                _request_review(run, reply, action)
            # No session update here: the pipeline saved the session (last_active, message
            # count) when it placed the turn, a statement per run less.
            append(
                tenant_id=run.tenant_id,
                actor=Actor.system("agent"),
                action="run.escalated" if reply.escalated else "run.completed",
                target_type="run",
                target_id=run.pk,
                changes={
                    "intent": reply.intent,
                    "confidence": round(reply.confidence, 4),
                    "tokens": tokens,
                    "cost_usd": str(cost),
                },
                seal_now=False,  # no chain lock on the run path: the sealer chains it
            )
        # The last write: the usage shard row's lock ends at COMMIT.
        if tokens or cost:
            record_usage(tenant_id=run.tenant_id, tokens=tokens, dollars=cost)
        run.status = to_status
        _announce(run)
    return to_status


def _turn(run: Run, reply: Any, session_id: Any, now: datetime) -> list[Message]:
    """The turn's messages: the question, and the answer unless a person decides it."""
    turn = [(MessageRole.USER, run.input, run.created_at)]
    if not reply.escalated:
        turn.append((MessageRole.ASSISTANT, reply.content, now))
    return [
        Message(
            session_id=session_id,
            run=run,
            role=role,
            content=content,
            thread_id=reply.thread_id,
            created_at=at,
        )
        for role, content, at in turn
    ]


# Where a reply's LLM usage was spent: generation, or classification too when the intent
# was asked of the LLM. The kernel reports usage per reply, so it is attributed to the stage
# that made the calls (the generation stage when both did).
_LLM_STAGE = "generate"


def _steps(run: Run, reply: Any, tokens: int, cost: Decimal) -> list[Step]:
    """One Step per pipeline stage, with its duration; tokens and cost on the LLM's stage."""
    metadata = reply.metadata or {}
    stages = list(reply.timings_ms.items())
    llm_stage = _LLM_STAGE if any(name == _LLM_STAGE for name, _ in stages) else None
    details: dict[str, dict[str, Any]] = {
        "classify": {"intent": reply.intent, "method": metadata.get("intent_method")},
        "context": {"sources": [s.to_dict() for s in reply.sources][:10]},
        "generate": {
            "handler": metadata.get("handler"),
            "provider": metadata.get("provider"),
            "llm_calls": metadata.get("llm_calls"),
        },
        "evaluate": {"confidence": round(reply.confidence, 4), "escalated": reply.escalated},
    }
    if metadata.get("playbook"):
        details["context"]["playbook"] = metadata["playbook"].get("name")
    return [
        Step(
            run=run,
            index=index,
            name=stage,
            duration_ms=round(ms, 3),
            tokens=tokens if stage == llm_stage else 0,
            cost_usd=cost if stage == llm_stage else Decimal(0),
            detail=details.get(stage, {}),
        )
        for index, (stage, ms) in enumerate(stages)
    ]


# --- resuming after a review --------------------------------------------------------------


class Delivered(StrEnum):
    """What ``finish_review`` did: nothing (the run no longer waits), completed the run,
    sent it on to its plan's continuation, or added to a run that had already settled."""

    NOTHING = ""
    COMPLETED = "completed"
    CONTINUING = "continuing"
    FOLLOW_UP = "follow_up"


def finish_review(
    *,
    actor: Actor,
    run_id: Any,
    review: dict[str, Any],
    content: str | None,
    close_thread: bool = False,
    after_the_fact: bool = False,
    tool_call: Any = None,
) -> Delivered:
    """Deliver a reviewer's outcome, inside the decision's transaction (habit 6).

    A run awaiting review completes by compare-and-set, with ``review`` in its result
    and ``content`` (when there is one) as its single assistant message: a decision
    posted twice, or handled by two workers, completes it once. A run whose plan waits
    for the decision to go on is sent to its continuation instead (`agentflow.continuations`;
    ``tool_call``: the decided call it paused on). With ``after_the_fact``
    (a manual review of a run that already settled), the run keeps its status and
    ``content`` joins the conversation as a follow-up. ``close_thread`` resolves the
    conversation thread instead of answering. Falsy, with nothing written, when the
    run is in neither situation (e.g. it was cancelled while waiting).
    """
    now = datetime.now(UTC)
    with transaction.atomic():
        run = Run.objects.filter(pk=run_id).first()
        if run is None:
            return Delivered.NOTHING
        snapshot = None if after_the_fact else continuations.waiting_snapshot(run)
        if snapshot is not None:
            delivery = {"review": review, "content": content, "close_thread": close_thread}
            return _continue_after_review(run, snapshot, delivery, actor, tool_call, now)
        result = {**(run.result or {}), "review": review}
        if content is not None:
            result["content"] = content
        resumed = transition(
            run.pk,
            (RunStatus.AWAITING_REVIEW,),
            RunStatus.COMPLETED,
            reason=f"review: {review.get('decision')}",
            result=result,
            finished_at=now,
        )
        if not resumed and not (
            after_the_fact and run.status in (RunStatus.COMPLETED, RunStatus.FAILED)
        ):
            return Delivered.NOTHING
        _deliver(run, content, close_thread, review, resumed=resumed, now=now)
        append(
            tenant_id=run.tenant_id,
            actor=actor,
            action="run.completed" if resumed else "run.reviewed",
            target_type="run",
            target_id=run.pk,
            changes={
                "review": review.get("decision"),
                "request_id": review.get("request_id"),
                "delivered": content is not None,
                "thread_closed": close_thread,
            },
        )
        if resumed:
            run.status = RunStatus.COMPLETED
            _announce(run)
    return Delivered.COMPLETED if resumed else Delivered.FOLLOW_UP


def _deliver(
    run: Run,
    content: str | None,
    close_thread: bool,
    review: dict[str, Any],
    *,
    resumed: bool,
    now: datetime,
) -> None:
    """A review's outcome in the conversation: the answer, or the thread closed."""
    thread_id = str((run.result or {}).get("thread_id") or "")
    session_id = run.session_id  # None only if the session was erased meanwhile
    if content is not None and session_id is not None:
        Message.objects.create(
            session_id=session_id,
            # A follow-up is not the run's answer: the run keeps the one it had.
            run=run if resumed else None,
            role=MessageRole.ASSISTANT,
            content=content,
            thread_id=thread_id,
            created_at=now,
        )
    if session_id is None:
        return
    if close_thread and thread_id:
        Thread.objects.filter(pk=thread_id, session_id=session_id).update(
            status=ThreadStatus.RESOLVED,
            resolution=f"closed by review: {review.get('reason') or ''}"[:2000],
            last_active=now,
        )
    AgentSession.objects.filter(pk=session_id).update(last_active=now)


def _continue_after_review(
    run: Run,
    snapshot: dict[str, Any],
    delivery: dict[str, Any],
    actor: Actor,
    tool_call: Any,
    now: datetime,
) -> Delivered:
    """The decided run goes back to the queue with what its plan goes on with (once: the
    compare-and-set); the worker that takes it continues the plan (`settle_continuation`)."""
    grace = timedelta(seconds=setting_int("RUN_PENDING_GRACE_SECONDS"))
    moved = transition(
        run.pk,
        (RunStatus.AWAITING_REVIEW,),
        RunStatus.PENDING,
        reason=f"review: {delivery['review'].get('decision')}, the plan goes on",
        plan_snapshot=continuations.resume_state(snapshot, delivery=delivery, tool_call=tool_call),
        recover_after=now + grace,  # sent on commit: the sweep only finds it if that was lost
    )
    if not moved:
        return Delivered.NOTHING
    append(
        tenant_id=run.tenant_id,
        actor=actor,
        action="run.resumed",
        target_type="run",
        target_id=run.pk,
        changes={
            "review": delivery["review"].get("decision"),
            "request_id": delivery["review"].get("request_id"),
            "at_state": snapshot.get("node"),
        },
    )
    tenant_id, run_id = run.tenant_id, str(run.pk)
    transaction.on_commit(lambda: queueing.send(EXECUTE_RUN_TASK, tenant_id, run_id))
    return Delivered.CONTINUING


def settle_continuation(run: Run, done: continuations.ContinuedRun) -> str:
    """Settle a run whose plan went on after a review: completed with the review's text
    when the plan ends, or awaiting review again (a new request) when it asks a person."""
    continued, delivery = done.continued, done.delivery
    now = datetime.now(UTC)
    result = dict(run.result or {})
    result["plan_path"] = [*(result.get("plan_path") or []), *(s.to_dict() for s in continued.path)]
    if done.plan_error:
        result["plan_error"] = done.plan_error
    cost = run.cost_usd + done.tool_cost_usd
    with transaction.atomic():
        if continued.status == "deliver":
            settled = _complete_continued(run, result, delivery, cost, now)
        else:
            settled = _review_continued(run, result, done, cost)
    run.refresh_from_db(fields=["status"])
    return settled or run.status


def _complete_continued(
    run: Run, result: dict[str, Any], delivery: dict[str, Any], cost: Decimal, now: datetime
) -> str | None:
    review, content = delivery.get("review") or {}, delivery.get("content")
    close_thread = bool(delivery.get("close_thread"))
    if content is None and not close_thread:
        # Only tool calls were decided (no text of a reviewer's): the agent's answer stands.
        content = result.get("proposed_answer") or None
    result["review"] = review
    if content is not None:
        result["content"] = content
    won = transition(
        run.pk,
        (RunStatus.PROCESSING,),
        RunStatus.COMPLETED,
        reason="plan: ended after review",
        result=result,
        plan_snapshot=None,
        cost_usd=cost,
        progress=1.0,
        finished_at=now,
    )
    if not won:
        return None  # cancelled meanwhile
    _deliver(run, content, close_thread, review, resumed=True, now=now)
    append(
        tenant_id=run.tenant_id,
        actor=Actor.system("agent"),
        action="run.completed",
        target_type="run",
        target_id=run.pk,
        changes={"review": review.get("decision"), "delivered": content is not None},
    )
    run.status = RunStatus.COMPLETED
    _announce(run)
    return RunStatus.COMPLETED


def _review_continued(
    run: Run, result: dict[str, Any], done: continuations.ContinuedRun, cost: Decimal
) -> str | None:
    """The plan asks a person again: at a review state or a tool call that needs approval
    (it waits again, with a new snapshot), or because it could not go on (it ends there)."""
    continued, delivery = done.continued, done.delivery
    content = delivery.get("content")
    if content is not None:
        result["proposed_answer"] = content
    result["escalation_reason"] = EscalationReason.PLANNED
    snapshot = continued.snapshot
    if snapshot is not None:  # the review's text waits with it, to be delivered at the end
        snapshot = {**snapshot, "delivery": continuations.carried(delivery)}
    won = transition(
        run.pk,
        (RunStatus.PROCESSING,),
        RunStatus.AWAITING_REVIEW,
        reason=f"plan: {continued.error or 'asks a person'}"[:200],
        result=result,
        plan_snapshot=snapshot,
        cost_usd=cost,
        progress=1.0,
    )
    if not won:
        return None
    action = done.pending_action
    if action is None:
        request_review(run=run, result=result, actor=Actor.system("agent"))
    else:
        request = request_review(
            run=run,
            result={**result, "action": action},
            actor=Actor.system("agent"),
            kind="action",
            reason=f"tool call {action['tool']} needs approval",
        )
        tooling.link_approval(action["tool_call_id"], request.pk)
    run.status = RunStatus.AWAITING_REVIEW
    _announce(run)
    return RunStatus.AWAITING_REVIEW


# --- recovery -------------------------------------------------------------------------


def recover_stuck_runs(now: datetime | None = None) -> int:
    """Re-enqueue runs whose task was lost; returns how many were re-enqueued.

    Two kinds of run are stuck: ``pending`` longer than ``RUN_PENDING_GRACE_SECONDS`` (the
    broker was down when they were accepted, their task sat in a dead worker's prefetch, or
    it spent its retries), and ``processing`` while no worker holds their lease (the worker
    died: PostgreSQL dropped its session and the advisory lock with it, so this is seen on
    the next sweep, not after a timeout). Each re-enqueue backs off exponentially per run,
    so a long but healthy queue gets at most a few extra copies. Delivering twice is
    harmless: the run lease and compare-and-set transitions make execution idempotent.
    Platform-wide by design, so it reads across tenants through the loud bypass.
    """
    now = now or datetime.now(UTC)
    pending_before = now - timedelta(seconds=setting_int("RUN_PENDING_GRACE_SECONDS"))
    batch = setting_int("RUN_RECOVERY_BATCH")
    stuck = [*_stuck_pending(pending_before, now, batch), *_orphaned_processing(now, batch)]
    count = sum(_re_enqueue(tenant_id, run_id, now) for tenant_id, run_id in stuck[:batch])
    if count:
        log.warning("runs.recovered", count=count)
    return count


def _stuck_pending(before: datetime, now: datetime, limit: int) -> list[tuple[int, Any]]:
    return list(
        Run.unscoped.filter(status=RunStatus.PENDING, created_at__lt=before)
        .filter(Q(recover_after__isnull=True) | Q(recover_after__lte=now))
        .order_by("created_at")
        .values_list("tenant_id", "id")[:limit]
    )


# Processing runs whose lease (the advisory lock of _run_leases: keys (namespace,
# hashtext(id)), which pg_locks shows as classid/objid) no live session holds.
_ORPHANED_SQL = """
SELECT r.tenant_id, r.id FROM agentflow_run r
WHERE r.status = 'processing'
  AND (r.recover_after IS NULL OR r.recover_after <= %s)
  AND NOT EXISTS (
    SELECT 1 FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.classid = %s
      AND l.objid = hashtext(r.id::text)::oid
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  )
ORDER BY r.started_at
LIMIT %s
"""


def _orphaned_processing(now: datetime, limit: int) -> list[tuple[int, Any]]:
    with connection.cursor() as cursor:
        cursor.execute(_ORPHANED_SQL, [now, _RUN_LEASE, limit])
        return [(row[0], row[1]) for row in cursor.fetchall()]


def _re_enqueue(tenant_id: int, run_id: Any, now: datetime) -> int:
    """Claim the re-enqueue by compare-and-set (two sweeps never both send), then send."""
    run = Run.unscoped.filter(pk=run_id).only("recovery_attempts", "recover_after").first()
    if run is None:
        return 0
    base = setting_float("RUN_RECOVERY_BACKOFF_SECONDS")
    delay = min(base * 2**run.recovery_attempts, 3600)
    claimed = Run.unscoped.filter(
        pk=run_id, recovery_attempts=run.recovery_attempts, recover_after=run.recover_after
    ).update(
        recovery_attempts=run.recovery_attempts + 1,
        recover_after=now + timedelta(seconds=delay),
    )
    if not claimed:
        return 0
    return int(queueing.send(EXECUTE_RUN_TASK, tenant_id, str(run_id)))
