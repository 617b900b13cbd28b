"""A third-party blueprint: an agent that echoes the message once per iteration."""

from __future__ import annotations

from typing import Any

from agentflow.kernel.agents import AgentBlueprint, AgentState, BaseAgent


class EchoAgent(BaseAgent):
    async def plan(self, state: AgentState) -> Any:
        return {"action": "echo", "action_input": state.message}

    async def execute_step(self, state: AgentState, action: Any) -> Any:
        return f"{self.config.prefix}{action['action_input']}"

    def should_continue(self, state: AgentState) -> bool:
        return state.current_step < self.config.max_iterations


blueprint = AgentBlueprint(
    name="echo_agent",
    agent_class=EchoAgent,
    description="Echoes the message",
    default_config={"max_iterations": 2, "prefix": "echo: "},
    config_schema={
        "type": "object",
        "properties": {
            "max_iterations": {"type": "integer", "minimum": 1, "maximum": 5},
            "prefix": {"type": "string"},
        },
        "required": ["max_iterations"],
    },
)


def all_blueprints() -> list[AgentBlueprint]:
    shout = AgentBlueprint("shout_agent", EchoAgent, "Shouts", {"max_iterations": 1, "prefix": "!"})
    return [shout]
