"""Telling an agent to run a playbook (issue 16): its FSM becomes the agent's planner.

Applying goes through the normal agent update (``agentflow.services.update_agent``): the
config is validated as any other, the agent's version goes up (cached pipelines are
dropped) and the change is audited; a ``learning.playbook.applied`` entry names the
playbook. It sits in the run orchestration layer because the agent service does.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from agentflow.core.api.exceptions import conflict
from agentflow.models import Agent
from agentflow.services import update_agent
from governance.audit import Actor, append
from learning.models import Playbook, PlaybookStatus
from learning.playbook_fsm import planner_of, planner_yaml

__all__ = ["apply"]


def apply(*, actor: Actor, playbook: Playbook) -> Agent:
    """Set the playbook's agent's ``config.planner`` to the playbook's FSM (as YAML text,
    so later errors name its lines). A retired playbook is refused (409); any version that
    is not retired may be applied. Raises ``AgentConfigInvalid`` like any update."""
    if playbook.status == PlaybookStatus.RETIRED:
        raise conflict("A retired playbook cannot be applied.", "playbook_retired")
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=playbook.agent_id)
        fsm = planner_of(playbook)
        planner = {"type": fsm["type"], "definition": planner_yaml(fsm)}
        config: dict[str, Any] = {**agent.config, "planner": planner}
        agent = update_agent(actor=actor, agent=agent, config=config)
        append(
            tenant_id=playbook.tenant_id,
            actor=actor,
            action="learning.playbook.applied",
            target_type="playbook",
            target_id=playbook.pk,
            changes={"agent_id": str(agent.pk), "agent_version": agent.version},
        )
    return agent
