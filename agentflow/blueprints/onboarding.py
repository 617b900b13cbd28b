"""``onboarding_agent`` on the platform: its checklist config, progress store and stall list.

Progress is kept in the end user's `AgentSession` row (``state["onboarding"]``) by
`DjangoProgressStore`: one row per agent and user, tenant-owned, created by the run service
before the agent runs, kept across conversations and erased with the user (GDPR). No new
table is needed. A save locks the row and checks the revision it loaded (compare-and-set),
so two messages of one user handled at once by two workers cannot lose a completed step.

`stalled_users` lists the users of an onboarding agent whose current step has not
changed for ``nudge_after_hours``; the beat records each stall once as an activity event
(`agentflow.blueprints.onboarding_nudges`). The user who comes back meanwhile gets the
nudge in the reply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from asgiref.sync import sync_to_async
from django.db import IntegrityError, transaction
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator

from agentflow.blueprints import BlueprintConfig, BlueprintSpec
from agentflow.kernel.blueprints.onboarding import CONFIRM, PROGRESS_KEY, OnboardingAgent, stalled
from agentflow.kernel.config import ConfigIssue
from agentflow.models import Agent, AgentSession

__all__ = [
    "BLUEPRINT",
    "SPEC",
    "ChecklistStep",
    "DjangoProgressStore",
    "OnboardingConfig",
    "StalledUser",
    "stalled_users",
]

BLUEPRINT = "onboarding_agent"
_MAX_KEYWORDS = 20
_DONE_WHEN_SCHEMA = {
    "description": '"confirm": the user says the step is done; or keywords, any of which in '
    "the user's message marks it done (all of its words, whole, in any order, any case).",
    "oneOf": [
        {"const": CONFIRM},
        {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 100},
            "minItems": 1,
            "maxItems": _MAX_KEYWORDS,
        },
    ],
}


class ChecklistStep(BaseModel):
    """One checklist step."""

    model_config = ConfigDict(extra="forbid", title="onboarding step")

    id: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,63}$", description="The step's id (lower_snake_case)."
    )
    title: str = Field(min_length=1, max_length=200, description="What the step is called.")
    instructions: str = Field(
        min_length=1, max_length=4000, description="How to do it; questions are answered from it."
    )
    done_when: Annotated[Any, WithJsonSchema(_DONE_WHEN_SCHEMA)] = CONFIRM

    @field_validator("done_when")
    @classmethod
    def _done_when(cls, value: Any) -> Any:
        if value == CONFIRM:
            return value
        if (
            isinstance(value, list)
            and 0 < len(value) <= _MAX_KEYWORDS
            and all(isinstance(item, str) and re.search(r"[A-Za-z0-9]", item) for item in value)
            and all(len(item) <= 100 for item in value)
        ):
            return [item.strip() for item in value]
        raise ValueError(
            f'must be "{CONFIRM}" or a list of 1 to {_MAX_KEYWORDS} keywords '
            "(each with a letter or digit, at most 100 characters)"
        )


def _step(step_id: str, title: str, instructions: str, done_when: Any) -> ChecklistStep:
    return ChecklistStep(id=step_id, title=title, instructions=instructions, done_when=done_when)


def default_steps() -> list[ChecklistStep]:
    """Getting started with AgentFlow itself: the checklist `{}` runs."""
    return [
        _step(
            "create_api_key",
            "Create an API key",
            "In the dashboard open Settings, then API keys, and click 'Create key'. Copy the "
            "key right away: it is shown only once. Send it as 'Authorization: Bearer af_...'.",
            CONFIRM,
        ),
        _step(
            "create_agent",
            "Create your support agent",
            "Open Agents and click 'New agent', choose the support_agent blueprint and give it "
            "your intent categories. The defaults are a good start.",
            ["agent created", "created the agent", "created an agent", "created my agent"],
        ),
        _step(
            "upload_knowledge",
            "Add your help articles",
            "Open the agent, choose Knowledge and upload your FAQ or help-centre articles as "
            "Markdown, text or PDF. The agent answers only from what it can find there.",
            ["uploaded", "articles added", "knowledge added"],
        ),
        _step(
            "send_test_message",
            "Ask a test question",
            "Open the agent's chat and ask a question one of your articles answers. Check "
            "the answer and its sources; a low-confidence answer goes to review instead.",
            CONFIRM,
        ),
        _step(
            "invite_reviewer",
            "Invite a reviewer",
            "Under Members click Invite, enter a teammate's email and give them the reviewer "
            "role. Reviewers approve or edit escalated answers in the review queue.",
            CONFIRM,
        ),
    ]


class OnboardingConfig(BlueprintConfig):
    """Config of the `onboarding_agent` blueprint; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, title="onboarding_agent config")

    steps: list[ChecklistStep] = Field(
        default_factory=default_steps,
        min_length=1,
        max_length=50,
        description="The checklist, in order.",
    )
    nudge_after_hours: float = Field(
        48.0,
        gt=0,
        le=24 * 90,
        description="A step unchanged this long is stalled: the user's next reply nudges.",
    )


def _check(model: BaseModel) -> list[ConfigIssue]:
    assert isinstance(model, OnboardingConfig)
    seen: set[str] = set()
    issues = []
    for index, step in enumerate(model.steps):
        if step.id in seen:
            issues.append(ConfigIssue(f"steps[{index}].id", f"duplicate step id {step.id!r}"))
        seen.add(step.id)
    return issues


def _load(agent_id: Any, user_id: str) -> dict[str, Any] | None:
    rows = AgentSession.objects.filter(agent_id=agent_id, user_id=user_id)
    state = rows.values_list("state", flat=True).first()
    found = (state or {}).get(PROGRESS_KEY)
    return dict(found) if isinstance(found, dict) and found else None


def _save(agent_id: Any, user_id: str, progress: Mapping[str, Any], revision: int) -> bool:
    stored = {**progress, "revision": revision + 1}
    with transaction.atomic():
        rows = AgentSession.objects.select_for_update().filter(agent_id=agent_id, user_id=user_id)
        row = rows.first()
        if row is None:  # the run service makes the row first; a user erased meanwhile
            return revision == 0 and _create(agent_id, user_id, stored)
        state = dict(row.state or {})
        if int((state.get(PROGRESS_KEY) or {}).get("revision") or 0) != revision:
            return False  # another message of this user saved first: the agent reloads
        state[PROGRESS_KEY] = stored
        AgentSession.objects.filter(pk=row.pk).update(state=state)
        return True


def _create(agent_id: Any, user_id: str, stored: dict[str, Any]) -> bool:
    try:
        with transaction.atomic():  # a savepoint: a concurrent first save wins, this reloads
            AgentSession.objects.create(
                agent_id=agent_id, user_id=user_id, state={PROGRESS_KEY: stored}
            )
    except IntegrityError:
        return False
    return True


class DjangoProgressStore:
    """The kernel's `ProgressStore` in `AgentSession.state`, for one agent (tenant-scoped)."""

    def __init__(self, agent_id: Any) -> None:
        self.agent_id = agent_id

    async def load(self, user_id: str) -> dict[str, Any] | None:
        return await sync_to_async(_load)(self.agent_id, user_id)

    async def save(self, user_id: str, progress: Mapping[str, Any], *, revision: int) -> bool:
        return await sync_to_async(_save)(self.agent_id, user_id, progress, revision)


def _ports(agent: Agent, config: dict[str, Any]) -> Mapping[str, Any]:
    return {"progress": DjangoProgressStore(agent.pk)}


@dataclass(frozen=True)
class StalledUser:
    user_id: str
    step: str
    stalled_hours: float
    step_started_at: float  # epoch seconds: with the user and step, which stall this is


def stalled_users(agent: Agent, *, now: datetime | None = None) -> list[StalledUser]:
    """The users of ``agent`` stalled on a step, longest-stalled first (caller's tenant scope).

    The database narrows to journeys whose step started before the cutoff; `stalled`
    decides (it also counts from the last nudge).
    """
    hours = float((agent.config or {}).get("nudge_after_hours", 48.0))
    moment = (now or timezone.now()).timestamp()
    cutoff = moment - hours * 3600
    rows = AgentSession.objects.filter(
        agent=agent, **{f"state__{PROGRESS_KEY}__step_started_at__lte": cutoff}
    ).values_list("user_id", f"state__{PROGRESS_KEY}")
    found = [
        StalledUser(
            user_id=user_id,
            step=str(progress["current"]),
            stalled_hours=round((moment - float(progress["step_started_at"])) / 3600, 1),
            step_started_at=float(progress["step_started_at"]),
        )
        for user_id, progress in rows
        if isinstance(progress, dict) and stalled(progress, moment, hours)
    ]
    return sorted(found, key=lambda user: (-user.stalled_hours, user.user_id))


SPEC = BlueprintSpec(
    name=BLUEPRINT,
    description="Walks each new customer through your onboarding checklist, remembers where "
    "every user is across sessions, answers questions about the current step and nudges "
    "when a step stalls.",
    config_model=OnboardingConfig,
    agent_class=OnboardingAgent,
    ports=_ports,
    check=_check,
)
