"""Replanning rules in a support agent's planner config (issue 16): stored with the planner,
refused with a 422 naming `planner.replanning` when they cannot be followed, nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.models import Agent
from tests.platform.api.conftest import Persona
from tests.platform.api.test_bad_input import assert_field_errors
from tests.platform.api.test_planner_config import FSM_TEXT, LLM_TEXT, _config, _create

RULES = {
    "timeout": {"strategy": "retry", "max_attempts": 2, "backoff_s": 0.1},
    "budget": {"strategy": "escalate"},
}


def test_rules_are_stored_with_the_planner(owner: Persona) -> None:
    planner = {"type": "fsm", "definition": FSM_TEXT, "replanning": RULES}

    response = _create(owner, "replans", _config(planner))

    assert response.status_code == 201, response.json()
    stored = Agent.unscoped.get(pk=response.json()["id"]).config["planner"]
    assert stored["replanning"] == RULES


@pytest.mark.parametrize(
    ("planner", "says"),
    [
        ({"type": "fsm", "definition": FSM_TEXT, "replanning": {"slow": {}}}, "unknown trigger"),
        (
            {"type": "fsm", "definition": FSM_TEXT, "replanning": {"failure": {"strategy": "x"}}},
            "strategy `x`",
        ),
        ({"type": "llm", "definition": LLM_TEXT, "replanning": RULES}, "llm planner"),
    ],
    ids=["trigger", "strategy", "llm"],
)
def test_rules_that_cannot_be_followed_are_422(
    owner: Persona, planner: dict[str, Any], says: str
) -> None:
    before = Agent.unscoped.count()

    body = assert_field_errors(_create(owner, "bad", _config(planner)), "planner.replanning")

    assert says in str(body["errors"]["planner.replanning"])
    assert Agent.unscoped.count() == before
