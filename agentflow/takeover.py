"""Human takeover of a conversation (Intercom, Parlant): a person answers, the agent is silent.

A reviewer, operator or owner takes an end user's session over; from then on

* a customer message still starts a run (the API contract holds: 201/202), but the run's
  worker settles it without entering the pipeline (:func:`hold_for_person`, called by
  ``agentflow.services._execute_leased``): the message joins the conversation, no assistant
  message is written, the run completes with reason ``human_takeover`` and
  ``result.metadata.handled_by == "human"``;
* the taker's replies (:func:`reply`) are assistant messages authored by the person, and
  reach a channel session (one started by an event rule: Slack, Zendesk, Jira) through the
  rule's reply URL, the path the agent's own answers take (``learning.webhooks``);
* handing back (:func:`hand_back`) returns the session to the agent, which answers the next
  message again.

Mode changes are compare-and-set UPDATEs (two takers at once: one wins, 409 for the other),
audited, and announced live (``session.updated``, ``session.message``) on the tenant's socket.
Callers run inside the tenant's scope (the API base view, the dashboard's view).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import F

from agentflow.api.serializers import MessageSerializer, SessionSerializer
from agentflow.core import queueing
from agentflow.core.api.exceptions import ContractError, conflict
from agentflow.core.realtime import send_to_group_on_commit, tenant_group
from agentflow.models import AgentSession, Message, MessageRole, Run, RunStatus, SessionMode
from agentflow.run_signals import publish_settled
from governance.audit import Actor, append
from learning.services import REPLY_TASK
from tenants.models import Membership
from tenants.roles import REVIEW, is_platform_admin, roles_with

# The transition reason (and result.metadata.handled_by) of a run a person handles.
HUMAN_TAKEOVER = "human_takeover"
HANDLED_BY_HUMAN = "human"
SESSION_UPDATED = "session.updated"
SESSION_MESSAGE = "session.message"
_REVIEWING = roles_with(REVIEW)


def person_required() -> ContractError:
    """An API key is no person: taking over and replying need a signed-in user."""
    return ContractError(
        "Only a signed-in person can take over a conversation or reply in it.",
        status_code=403,
        error_type="person_required",
    )


def channel_of(session: AgentSession) -> str | None:
    """Where the end user writes from: ``slack``/``zendesk``/``jira`` for a session whose runs an
    event rule started, else None (the API)."""
    source = (
        Run.objects.filter(session=session, metadata__has_key="rule_id")
        .order_by("-created_at")
        .values_list("metadata__source", flat=True)
        .first()
    )
    return str(source) if source else None


def session_body(session: AgentSession) -> dict[str, Any]:
    """The session as ``GET /sessions/{id}`` shows it (and live events carry it)."""
    return dict(SessionSerializer(session, context={"channel": channel_of(session)}).data)


def _loaded(session_id: Any) -> AgentSession:
    return AgentSession.objects.select_related("taken_by").get(pk=session_id)


def _announce(session: AgentSession) -> None:
    body = session_body(session)
    send_to_group_on_commit(
        tenant_group(session.tenant_id), {"type": SESSION_UPDATED, "session": body}
    )


def take_over(*, actor: Actor, user: Any, session: AgentSession) -> AgentSession:
    """Put ``session`` in human mode, taken by ``user``; 409 when someone holds it already."""
    now = datetime.now(UTC)
    with transaction.atomic():
        won = AgentSession.objects.filter(pk=session.pk, mode=SessionMode.AGENT).update(
            mode=SessionMode.HUMAN, taken_by=user, taken_at=now
        )
        current = _loaded(session.pk)
        if not won:
            raise _held(current, user)
        append(
            tenant_id=current.tenant_id,
            actor=actor,
            action="session.taken_over",
            target_type="session",
            target_id=current.pk,
            changes={"agent_id": str(current.agent_id), "taken_by": user.pk},
        )
        _announce(current)
    return current


def _held(session: AgentSession, user: Any) -> ContractError:
    taker = session.taken_by_id
    if taker == user.pk:
        return conflict(
            "You have taken this conversation over already.", "already_taken", taken_by=taker
        )
    return conflict(
        "Another person has taken this conversation over.", "taken_by_another", taken_by=taker
    )


def _not_yours(session: AgentSession, user: Any) -> ContractError | None:
    """409 unless ``session`` is in human mode and taken by ``user``."""
    if session.mode != SessionMode.HUMAN:
        return conflict(
            "The agent answers this conversation: take it over first.", "session_not_taken_over"
        )
    if session.taken_by_id != user.pk:
        return conflict(
            "Another person has taken this conversation over.",
            "taken_by_another",
            taken_by=session.taken_by_id,
        )
    return None


def _taker_gone(session: AgentSession) -> bool:
    """Whether the taker left (deleted, or no longer a reviewing member of the tenant): then
    any person who may take over hands the session back, or it would stay silent for good."""
    taker = session.taken_by
    if taker is None:
        return True
    if is_platform_admin(taker):
        return False
    return not Membership.objects.filter(user_id=taker.pk, role__in=_REVIEWING).exists()


def hand_back(*, actor: Actor, user: Any, session: AgentSession) -> AgentSession:
    """Return ``session`` to the agent; only its taker may (409 otherwise), or anyone allowed
    to take over once the taker left."""
    with transaction.atomic():
        before = _loaded(session.pk)
        holder = before.taken_by_id
        expected = holder if holder != user.pk and _taker_gone(before) else user.pk
        won = AgentSession.objects.filter(
            pk=session.pk, mode=SessionMode.HUMAN, taken_by=expected
        ).update(mode=SessionMode.AGENT, taken_by=None, taken_at=None)
        current = _loaded(session.pk)
        if not won:
            refusal = _not_yours(current, user)
            assert refusal is not None  # the UPDATE matched nothing for one of its reasons
            raise refusal
        append(
            tenant_id=current.tenant_id,
            actor=actor,
            action="session.handed_back",
            target_type="session",
            target_id=current.pk,
            changes={"agent_id": str(current.agent_id), "taken_by": holder},
        )
        _announce(current)
    return current


def reply(*, actor: Actor, user: Any, session: AgentSession, content: str) -> Message:
    """The taker's answer to the end user: an assistant message authored by ``user``, sent
    down the channel's reply path for a channel session. 409 unless ``user`` holds it."""
    now = datetime.now(UTC)
    with transaction.atomic():
        # The lock orders a reply against a concurrent hand-back: no reply after it.
        locked = AgentSession.objects.select_for_update(no_key=True).get(pk=session.pk)
        if (refusal := _not_yours(locked, user)) is not None:
            raise refusal
        message = Message.objects.create(
            session=locked,
            role=MessageRole.ASSISTANT,
            content=content,
            author=user,
            thread_id=locked.active_thread_id,
            created_at=now,
        )
        AgentSession.objects.filter(pk=locked.pk).update(last_active=now)
        delivered_by = _send_to_channel(locked, message)
        append(
            tenant_id=locked.tenant_id,
            actor=actor,
            action="session.replied",
            target_type="session",
            target_id=locked.pk,
            # Not the text: it may quote the end user.
            changes={"message_id": str(message.pk), "chars": len(content), "via": delivered_by},
        )
        _publish_message(locked, message)
    return message


def _send_to_channel(session: AgentSession, message: Message) -> str:
    """Enqueue the reply to the rule's reply URL (on commit) for a channel session; where it
    goes: ``api`` (the conversation only) or the channel's name."""
    rule_run = (
        Run.objects.filter(session=session, metadata__has_key="rule_id")
        .order_by("-created_at")
        .values_list("pk", "metadata__source")
        .first()
    )
    if rule_run is None:
        return "api"
    tenant_id, run_id, message_id = session.tenant_id, str(rule_run[0]), str(message.pk)
    transaction.on_commit(
        lambda: queueing.by_name(REPLY_TASK).delay(tenant_id, run_id, message_id), robust=True
    )
    return str(rule_run[1] or "channel")


def _publish_message(session: AgentSession, message: Message) -> None:
    event = {
        "type": SESSION_MESSAGE,
        "session": {"id": str(session.pk), "agent_id": str(session.agent_id)},
        "message": dict(MessageSerializer(message).data),
    }
    send_to_group_on_commit(tenant_group(session.tenant_id), event)


# --- the run path ------------------------------------------------------------------------------


def in_human_mode(run: Run) -> bool:
    """Whether a person answers ``run``'s session (the run was read with its session)."""
    session = run.session
    return session is not None and session.mode == SessionMode.HUMAN


def hold_for_person(run: Run, *, transition: Callable[..., bool]) -> str:
    """Settle a PROCESSING run of a session in human mode without the agent: the customer's
    message joins the conversation, no answer is written, the taker sees it live.

    ``transition`` is the run service's compare-and-set (``agentflow.services.transition``),
    handed in by its caller: the run service imports this module, not the other way round.

    The run completes (reason ``human_takeover``): the POST that started it answers 201 and
    a channel rule's reply finds no answer to send; ``result.metadata.handled_by`` says why.
    """
    session = run.session
    assert session is not None  # in_human_mode checked it
    now = datetime.now(UTC)
    with transaction.atomic():
        won = transition(
            run.pk,
            (RunStatus.PROCESSING,),
            RunStatus.COMPLETED,
            reason=HUMAN_TAKEOVER,
            row=run,
            result=_held_result(session),
            progress=1.0,
            finished_at=now,
        )
        if not won:
            run.refresh_from_db()
            return str(run.status)  # cancelled meanwhile, or another delivery settled it
        message = Message.objects.create(
            session=session,
            run=run,
            role=MessageRole.USER,
            content=run.input,
            thread_id=session.active_thread_id,
            created_at=run.created_at,
        )
        AgentSession.objects.filter(pk=session.pk).update(
            last_active=now, message_count=F("message_count") + 1
        )
        append(
            tenant_id=run.tenant_id,
            actor=Actor.system("agent"),
            action="run.completed",
            target_type="run",
            target_id=run.pk,
            changes={"handled_by": HANDLED_BY_HUMAN, "taken_by": session.taken_by_id},
            seal_now=False,  # the run path takes no chain lock: the sealer chains it
        )
        _publish_message(session, message)
        run_id = run.pk
        transaction.on_commit(lambda: publish_settled(run_id))
    return RunStatus.COMPLETED


def _held_result(session: AgentSession) -> dict[str, Any]:
    return {
        "content": "",
        "intent": "",
        "confidence": 0.0,
        "escalated": False,
        "escalation_reason": None,
        "proposed_answer": None,
        "thread_id": session.active_thread_id,
        "transition": "",
        "sources": [],
        "metadata": {"handled_by": HANDLED_BY_HUMAN, "taken_by": session.taken_by_id},
        "plan_path": [],
    }


__all__ = [
    "HANDLED_BY_HUMAN",
    "HUMAN_TAKEOVER",
    "channel_of",
    "hand_back",
    "hold_for_person",
    "in_human_mode",
    "person_required",
    "reply",
    "session_body",
    "take_over",
]
