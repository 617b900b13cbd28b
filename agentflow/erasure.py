"""The agents app's GDPR erasers (registered from ``AgentsConfig.ready``).

What an end user leaves here: their sessions (with the conversation threads and the
thread centroids, i.e. vectors), messages, episodic memory cases (with their pgvector
embeddings) and the input and output of their runs. What is theirs alone is deleted;
a run's row stays for accounting (status, tokens and cost) with its content emptied.
"""

from __future__ import annotations

from agentflow.core.api.exceptions import ContractError
from agentflow.models import AgentSession, MemoryCase, Message, Run, Step, Thread, ToolCall
from agentflow.services import CANCELLABLE, cancel_run
from tenants.erasers import ERASED, ErasureSubject, Stage, register_eraser


def cancel_active_runs(subject: ErasureSubject) -> dict[str, int]:
    """Stop the user's unfinished runs first (audited, through the run service): nothing may
    deliver an answer into a conversation that is about to disappear."""
    cancelled = 0
    for run in Run.objects.filter(user_id=subject.user_id, status__in=CANCELLABLE):
        try:
            cancel_run(actor=subject.actor, run=run)
        except ContractError:
            continue  # it finished meanwhile: its content is erased below all the same
        cancelled += 1
    return {"cancelled_runs": cancelled}


def erase_agent_data(subject: ErasureSubject) -> dict[str, int]:
    """The conversations, memory and run content; renames the runs' user, so it runs last."""
    user_id = subject.user_id
    sessions = AgentSession.objects.filter(user_id=user_id)
    runs = Run.objects.filter(user_id=user_id)
    counts = {
        "messages": Message.objects.filter(session__in=sessions).delete()[0]
        + Message.objects.filter(run__in=runs).delete()[0],
        "threads": Thread.objects.filter(session__in=sessions).delete()[0],
        "memory_cases": MemoryCase.objects.filter(user_id=user_id).delete()[0],
        "step_details": Step.objects.filter(run__in=runs).exclude(detail={}).update(detail={}),
        # A run's tool calls carry what the user asked for (order ids, addresses).
        "tool_calls": ToolCall.objects.filter(run__in=runs).update(
            arguments={}, pending_arguments=None, result=None, error=""
        ),
    }
    counts["sessions"] = sessions.delete()[0]
    # Runs stay (usage, quotas and the audit trail refer to them); their content goes.
    counts["runs"] = runs.update(
        user_id=ERASED,
        input="",
        result=None,
        plan_snapshot=None,
        metadata={},
        error="",
        session=None,
    )
    return counts


def register() -> None:
    register_eraser("agentflow.cancel_runs", Stage.STOP, cancel_active_runs)
    register_eraser("agentflow", Stage.OWNER, erase_agent_data)
