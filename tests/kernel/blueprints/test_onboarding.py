"""onboarding_agent offline: a checklist journey per user, remembered, answered, nudged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentflow.kernel.blueprints.onboarding import (
    PROGRESS_KEY,
    OnboardingAgent,
    SessionProgressStore,
    Step,
    answer_question,
    interpret,
    stalled,
)
from agentflow.kernel.inmemory import InMemorySessionStore
from agentflow.kernel.stores import Session

HOUR = 3600.0
STEPS: list[dict[str, Any]] = [
    {
        "id": "api_key",
        "title": "Create an API key",
        "instructions": "Open Settings, then API keys, and click 'New key'. "
        "Copy the key right away: it is shown only once. "
        "Store it in your secret manager, never in source code.",
        "done_when": "confirm",
    },
    {
        "id": "connect_zendesk",
        "title": "Connect Zendesk",
        "instructions": "In Integrations choose Zendesk and paste your Zendesk subdomain. "
        "Then add the webhook URL we show you as a Zendesk trigger target.",
        "done_when": ["zendesk connected", "webhook added", "trigger created"],
    },
    {
        "id": "invite_team",
        "title": "Invite your team",
        "instructions": "Under Members, click Invite and enter your teammates' emails. "
        "Give reviewers the reviewer role so they can answer escalations.",
        "done_when": "confirm",
    },
]


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> InMemorySessionStore:
    return InMemorySessionStore(ttl_seconds=30 * 24 * HOUR, clock=clock)


def _agent(store: InMemorySessionStore, clock: Clock, **config: Any) -> OnboardingAgent:
    return OnboardingAgent(
        {"steps": STEPS, **config}, progress=SessionProgressStore(store), clock=clock
    )


async def _say(agent: OnboardingAgent, message: str, user: str = "maria") -> dict[str, Any]:
    result = await agent.run(message, user_id=user)
    assert result.status == "completed"
    plan = result.state.plan_state
    return {"content": plan.response["content"], **plan.state["output"]}


@pytest.mark.parametrize(
    ("message", "step", "meaning"),
    [
        ("Done!", "api_key", "done"),
        ("ok I created the key, what's next?", "api_key", "question"),
        ("I've done it, next step please", "api_key", "done"),
        ("I'm not done yet", "api_key", "other"),
        ("How do I copy the key?", "api_key", "question"),
        ("where do I find the API keys page", "api_key", "question"),
        ("Zendesk connected and the webhook added", "connect_zendesk", "done"),
        ("I connected zendesk", "connect_zendesk", "done"),
        ("zendesk is not connected", "connect_zendesk", "other"),
        ("done", "connect_zendesk", "other"),  # this step asks for one of its keywords
        ("I haven't connected zendesk, the webhook added failed", "connect_zendesk", "other"),
        ("what's my progress?", "connect_zendesk", "status"),
        ("show my progress", "connect_zendesk", "status"),
        ("let's start over", "invite_team", "restart"),
        ("hello there", "invite_team", "other"),
    ],
)
def test_messages_are_interpreted_for_the_current_step(
    message: str, step: str, meaning: str
) -> None:
    steps = {item["id"]: Step.of(item) for item in STEPS}
    assert interpret(message, steps[step]) == meaning


def test_a_question_is_answered_from_the_best_step_and_sentence() -> None:
    steps = [Step.of(item) for item in STEPS]
    found = answer_question("Where do I store the key?", steps, steps[0])
    assert found == {
        "step": "api_key",
        "title": "Create an API key",
        "answer": "Store it in your secret manager, never in source code.",
    }
    later = answer_question("how do I give reviewers the reviewer role?", steps, steps[0])
    assert later["step"] == "invite_team"
    assert later["answer"].startswith("Give reviewers the reviewer role")


async def test_a_new_user_is_welcomed_with_the_first_step(
    store: InMemorySessionStore, clock: Clock
) -> None:
    out = await _say(_agent(store, clock), "hi")

    assert out["event"] == "shown"
    assert out["status"] == "in_progress"
    assert out["current_step"]["id"] == "api_key"
    assert out["progress"] == {"done": 0, "total": 3}
    assert out["nudge"] is False
    assert out["content"].startswith("Welcome! Let's get you set up in 3 steps. Step 1 of 3:")


async def test_the_journey_advances_to_completion(
    store: InMemorySessionStore, clock: Clock
) -> None:
    agent = _agent(store, clock)
    await _say(agent, "hi")

    first = await _say(agent, "Done, I copied the key")
    assert first["event"] == "advanced"
    assert first["completed_steps"] == ["api_key"]
    assert first["current_step"]["id"] == "connect_zendesk"
    assert "Great, 'Create an API key' is done. Step 2 of 3: Connect Zendesk." in first["content"]
    assert 'for example: "zendesk connected"' in first["content"]

    unchanged = await _say(agent, "done")  # a keyword step needs its evidence
    assert unchanged["current_step"]["id"] == "connect_zendesk"
    assert unchanged["event"] == "reminded"

    second = await _say(agent, "The trigger created fine and Zendesk connected")
    assert second["current_step"]["id"] == "invite_team"
    last = await _say(agent, "finished inviting everyone")
    assert last["status"] == "completed"
    assert last["event"] == "finished"
    assert last["current_step"] is None
    assert last["remaining_steps"] == []
    assert "You have completed every onboarding step" in last["content"]


async def test_progress_is_remembered_across_sessions_and_agent_builds(
    store: InMemorySessionStore, clock: Clock
) -> None:
    await _say(_agent(store, clock), "hi")
    await _say(_agent(store, clock), "done")
    clock.now += 5 * HOUR

    again = await _say(_agent(store, clock), "hello again")  # a new build, same store
    assert again["current_step"]["id"] == "connect_zendesk"
    assert again["completed_steps"] == ["api_key"]
    other = await _say(_agent(store, clock), "hello", user="li")  # users are separate
    assert other["current_step"]["id"] == "api_key"
    session = await store.get("maria")
    assert session is not None
    assert session.metadata[PROGRESS_KEY]["completed"] == ["api_key"]


async def test_questions_about_the_current_step_keep_the_user_on_it(
    store: InMemorySessionStore, clock: Clock
) -> None:
    agent = _agent(store, clock)
    await _say(agent, "hi")

    out = await _say(agent, "How long is the key shown?")
    assert out["event"] == "question"
    assert out["answer"]["step"] == "api_key"
    assert out["content"] == (
        "Copy the key right away: it is shown only once. You are on step 1 of 3: Create an API key."
    )
    ahead = await _say(agent, "how do I paste the zendesk subdomain?")
    assert ahead["answer"]["step"] == "connect_zendesk"
    assert "That is part of 'Connect Zendesk', a later step:" in ahead["content"]
    assert ahead["current_step"]["id"] == "api_key"


async def test_a_stalled_step_nudges_once_when_the_user_returns(
    store: InMemorySessionStore, clock: Clock
) -> None:
    agent = _agent(store, clock, nudge_after_hours=24)
    await _say(agent, "hi")
    await _say(agent, "done")
    clock.now += 23 * HOUR
    assert (await _say(agent, "hello"))["nudge"] is False

    clock.now += 2 * HOUR  # 25 h on "Connect Zendesk"
    back = await _say(agent, "hello")
    assert back["nudge"] is True
    assert back["content"].startswith(
        "Welcome back! You have been on 'Connect Zendesk' for about 25 hours"
    )
    assert (await _say(agent, "what was it again?"))["nudge"] is False  # not at every message

    clock.now += 25 * HOUR
    moved = await _say(agent, "zendesk connected")  # finishing the step is no stall
    assert moved["nudge"] is False
    assert moved["current_step"]["id"] == "invite_team"


def test_stalled_reads_stored_progress(clock: Clock) -> None:
    base = {"current": "connect_zendesk", "step_started_at": clock.now, "finished_at": None}
    assert not stalled(base, clock.now + 47 * HOUR, 48)
    assert stalled(base, clock.now + 48 * HOUR, 48)
    nudged = {**base, "nudged_at": clock.now + 48 * HOUR}
    assert not stalled(nudged, clock.now + 50 * HOUR, 48)
    finished = {**base, "current": None, "finished_at": clock.now}
    assert not stalled(finished, clock.now + 500 * HOUR, 48)


async def test_restart_and_an_edited_checklist(store: InMemorySessionStore, clock: Clock) -> None:
    agent = _agent(store, clock)
    await _say(agent, "hi")
    await _say(agent, "done")
    restarted = await _say(agent, "Please start over")
    assert restarted["event"] == "restarted"
    assert restarted["completed_steps"] == []
    assert restarted["current_step"]["id"] == "api_key"

    await _say(agent, "done")
    fewer = OnboardingAgent({"steps": STEPS[1:]}, progress=SessionProgressStore(store), clock=clock)
    out = await _say(fewer, "hello")  # api_key left the checklist: progress follows it
    assert out["completed_steps"] == []
    assert out["current_step"]["id"] == "connect_zendesk"
    assert out["progress"] == {"done": 0, "total": 2}


async def test_the_planner_path_is_the_journey(store: InMemorySessionStore, clock: Clock) -> None:
    agent = _agent(store, clock)
    await _say(agent, "hi")
    result = await agent.run("done", user_id="maria")
    assert result.plan is not None
    assert [step.node for step in result.plan.path] == [
        "load_progress",
        "detect_stall",
        "interpret_message",
        "complete_step",
        "save_progress",
        "respond",
    ]


class YieldingStore(InMemorySessionStore):
    """Gives the event loop away at every read and write, as a database store does."""

    async def get(self, user_id: str) -> Session | None:
        await asyncio.sleep(0)
        found = await super().get(user_id)
        # A copy, as a row read from a database is: runs must not share one object.
        return (
            None
            if found is None
            else Session(**{**vars_of(found), "metadata": dict(found.metadata)})
        )

    async def save(self, session: Session) -> None:
        await asyncio.sleep(0)
        await super().save(session)


def vars_of(session: Session) -> dict[str, Any]:
    return {name: getattr(session, name) for name in Session.__dataclass_fields__}


async def test_concurrent_messages_of_one_user_keep_each_others_completion(clock: Clock) -> None:
    store = YieldingStore(ttl_seconds=30 * 24 * HOUR, clock=clock)
    agent = _agent(store, clock)
    await _say(agent, "hi")

    done, question = await asyncio.gather(
        agent.run("done", user_id="maria"), agent.run("where do I store the key?", user_id="maria")
    )
    assert done.state.plan_state.state["output"]["event"] == "advanced"
    # The question loaded before the completion was saved: its save lost the race, and it
    # was applied again to the saved progress instead of overwriting it.
    assert question.plan is not None
    nodes = [step.node for step in question.plan.path]
    assert nodes.count("load_progress") == 2
    assert [s.status for s in question.plan.path if s.node == "save_progress"] == [
        "error",
        "ok",
    ]
    assert question.state.plan_state.response["content"] == (
        "That is part of 'Create an API key', an earlier step: Store it in your secret "
        "manager, never in source code. You are on step 2 of 3: Connect Zendesk."
    )
    session = await store.get("maria")
    assert session is not None
    assert session.metadata[PROGRESS_KEY]["completed"] == ["api_key"]
    assert session.metadata[PROGRESS_KEY]["current"] == "connect_zendesk"
    assert session.metadata[PROGRESS_KEY]["revision"] == 3
