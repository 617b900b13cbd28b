"""BaseAgent's loop and hooks, PlannerAgent, AgentBlueprint and the registry's entry points."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentflow.kernel.agents import (
    BLUEPRINT_GROUP,
    AgentBlueprint,
    AgentState,
    BaseAgent,
    BlueprintError,
    BlueprintRegistry,
    PlannerAgent,
)
from agentflow.kernel.planning.model import Action, StepOutcome
from agentflow.kernel.planning.source import PlanValidationError
from tests.kernel.planning_helpers import FIXTURES as PLANS

FIXTURES = Path(__file__).parent / "blueprint_fixtures"


@pytest.fixture(autouse=True)
def fixture_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(FIXTURES))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("af_test_blueprints"):
            del sys.modules[name]


def make_distribution(root: Path, name: str, entries: dict[str, str]) -> None:
    info = root / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = [f"[{BLUEPRINT_GROUP}]", *(f"{k} = {v}" for k, v in entries.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


class Counter(BaseAgent):
    """The seed's custom agent: plan → execute until should_continue says stop."""

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.events: list[str] = []

    async def plan(self, state: AgentState) -> Any:
        return {"action": "count", "action_input": state.current_step}

    async def execute_step(self, state: AgentState, action: Any) -> Any:
        return {"result": action["action_input"] + 1}

    def should_continue(self, state: AgentState) -> bool:
        return state.current_step < self.config.max_iterations

    async def on_start(self, state: AgentState) -> None:
        self.events.append("start")

    async def on_message(self, state: AgentState, message: str) -> None:
        self.events.append(f"message:{message}")

    async def on_plan(self, state: AgentState, action: Any) -> None:
        self.events.append("plan")

    async def on_finish(self, state: AgentState, output: Any) -> None:
        self.events.append(f"finish:{output['result']}")


async def test_base_agent_loop_and_hooks() -> None:
    blueprint = AgentBlueprint(
        name="my_agent",
        agent_class=Counter,
        description="My custom agent",
        default_config={"max_iterations": 3},
    )
    agent = blueprint.create()
    assert isinstance(agent, Counter)
    result = await agent.run("hi")
    assert result.output == {"result": 3}
    assert agent.events == ["start", "message:hi", "plan", "plan", "plan", "finish:3"]
    assert [h["result"]["result"] for h in result.state.history] == [1, 2, 3]
    assert agent.blueprint is blueprint


def test_blueprint_config_is_merged_and_validated() -> None:
    schema = {
        "type": "object",
        "properties": {"max_iterations": {"type": "integer", "maximum": 5}},
    }
    blueprint = AgentBlueprint("my_agent", Counter, "", {"max_iterations": 3}, schema)
    assert blueprint.create({"max_iterations": 4}).config.max_iterations == 4
    with pytest.raises(BlueprintError, match="max_iterations: 50 is greater than the maximum"):
        blueprint.create({"max_iterations": 50})
    with pytest.raises(BlueprintError, match="lower_snake_case"):
        AgentBlueprint("My Agent", Counter)
    with pytest.raises(BlueprintError, match="subclass BaseAgent"):
        AgentBlueprint("plain", object)  # type: ignore[arg-type]
    with pytest.raises(BlueprintError, match="invalid config_schema"):
        AgentBlueprint("bad_schema", Counter, config_schema={"type": "nonsense"})


def test_registry_register_get_list() -> None:
    registry = BlueprintRegistry()
    first = registry.register(AgentBlueprint("b_agent", Counter))
    registry.register(AgentBlueprint("a_agent", Counter))
    assert [b.name for b in registry.list()] == ["a_agent", "b_agent"]
    assert registry.get("b_agent") is first
    with pytest.raises(BlueprintError, match="already registered"):
        registry.register(AgentBlueprint("b_agent", Counter))
    registry.register(AgentBlueprint("b_agent", Counter, "new"), replace=True)
    assert registry.get("b_agent").description == "new"
    with pytest.raises(
        BlueprintError, match=r"no blueprint named 'zzz' \(known: a_agent, b_agent\)"
    ):
        registry.get("zzz")


def test_entry_point_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(
        tmp_path,
        "af_echo",
        {
            "echo": "af_test_blueprints.echo:blueprint",
            "more": "af_test_blueprints.echo:all_blueprints",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = BlueprintRegistry()
    assert registry.discover() == ["echo_agent", "shout_agent"]
    assert registry.discover() == ["echo_agent", "shout_agent"]  # idempotent
    assert len(registry) == 2
    assert registry.get("echo_agent").describe()["config_schema"]["required"] == ["max_iterations"]


async def test_discovered_blueprint_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(tmp_path, "af_echo", {"echo": "af_test_blueprints.echo:blueprint"})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = BlueprintRegistry()
    registry.discover()
    result = await registry.get("echo_agent").create({"max_iterations": 1}).run("hello")
    assert result.output == "echo: hello"


def test_broken_entry_points_name_the_distribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_distribution(
        tmp_path,
        "af_broken",
        {
            "broken": "af_test_blueprints.broken:x",
            "thing": "af_test_blueprints.not_a_blueprint:thing",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(BlueprintError, match="entry point 'broken' of af_broken failed to load"):
        BlueprintRegistry().discover()
    lenient = BlueprintRegistry()
    assert lenient.discover(strict=False) == []
    assert len(lenient.errors) == 2
    assert "not an AgentBlueprint" in str(lenient.errors[1])


class SupportSteps(PlannerAgent):
    known_steps = frozenset(
        {"classify", "knowledge_search", "generate_response", "send_response", "escalate",
         "fallback_response", "human_review"}
    )  # fmt: skip

    async def execute_step(self, state: AgentState, action: Any) -> Any:
        assert isinstance(action, Action)
        if action.name == "knowledge_search":
            state.plan_state.response.update(confidence=0.9, data_sources=["kb-1"])
        if action.name == "generate_response":
            state.plan_state.response["content"] = f"Answer to: {state.message}"
        if action.name == "human_review":
            return StepOutcome("paused")
        return {"did": action.name}


async def test_planner_agent_runs_its_fsm_through_execute_step() -> None:
    config = {"planner": (PLANS / "support.yaml").read_text()}
    agent = AgentBlueprint("support_steps", SupportSteps).create(config)
    result = await agent.run("reset my password")
    assert result.status == "completed"
    assert result.output == "Answer to: reset my password"
    assert [h["action"] for h in result.state.history][-1] == {"step": "send_response"}
    assert result.plan is not None
    assert result.plan.nodes[-1] == "send_response"


def test_planner_agent_validates_its_plan_when_created() -> None:
    text = (
        "states:\n  classify: {on_success: teleport}\n"
        "initial_state: classify\nfinal_states: [escalate]\n"
    )
    with pytest.raises(
        PlanValidationError, match="line 2, column 26: transition `on_success: teleport`"
    ):
        SupportSteps({"planner": text})
