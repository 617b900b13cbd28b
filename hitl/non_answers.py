"""The hand-off messages of HITL's review settings, for :mod:`agentflow.non_answers`.

What is not an answer is judged in :mod:`agentflow.non_answers` (HITL and learning both
ask); the hand-off messages configured for an agent and its tenant are HITL's data, read
here and registered there from ``HitlConfig.ready``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.db.models import Q

from agentflow import non_answers
from hitl.models import ReviewSettings


def handoff_messages(agent: Any) -> Iterator[str]:
    """The hand-off messages configured for ``agent`` and its tenant (read when iterated)."""
    # Explicitly the agent's tenant: callers may be outside a tenant scope (or another's).
    rows = ReviewSettings.unscoped.filter(
        Q(agent_id=agent.pk) | Q(agent__isnull=True), tenant_id=agent.tenant_id
    ).values_list("handoff_message", flat=True)
    yield from (text for text in rows if text)


def register() -> None:
    non_answers.register_handoff_messages(handoff_messages)
