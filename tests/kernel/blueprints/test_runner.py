"""BlueprintRunner: a StepAgent's reply, with what its LLM calls spent metered into the run."""

from __future__ import annotations

from typing import Any, ClassVar

from agentflow.kernel.agents import AgentState
from agentflow.kernel.blueprints import BlueprintRunner, StepAgent, finish
from agentflow.kernel.config import ConfigLoader
from agentflow.kernel.llm.base import ChatMessage
from agentflow.kernel.llm_chain import guarded_chain
from agentflow.kernel.planning.model import StepOutcome
from tests.kernel.pipeline_fakes import ScriptedLLM


class Summariser(StepAgent):
    default_planner: ClassVar[dict[str, Any]] = {
        "type": "fsm",
        "definition": {
            "initial_state": "summarise",
            "final_states": ["summarise"],
            "states": {"summarise": {}},
        },
    }

    async def step_summarise(self, state: AgentState) -> StepOutcome:
        if self.llm is None:
            finish(state, content=state.message[:20], output={"by": "offline"})
        else:
            answer = await self.llm.chat([ChatMessage("user", state.message)])
            finish(state, content=answer.content, output={"by": "llm"}, confidence=0.8)
        return StepOutcome.ok()


async def test_the_llm_calls_of_a_step_are_metered_into_the_reply() -> None:
    framework = ConfigLoader.load({"name": "summariser"})
    llm, _ = guarded_chain([ScriptedLLM("A short summary.", cost_usd=0.002)], framework)
    runner = BlueprintRunner(Summariser({}, llm=llm))
    reply = await runner.process_message(
        user_id="u1", message="a long text to summarise", context={"run_id": "r1"}
    )
    assert reply.content == "A short summary."
    assert reply.metadata["output"] == {"by": "llm"}
    assert reply.usage.total_tokens == 20  # the scripted provider reports 12 + 8
    assert reply.cost_usd == 0.002
    assert reply.metadata["offline"] is False
    assert [s.node for s in reply.plan_path] == ["summarise"]


async def test_without_a_model_the_step_does_the_work_offline() -> None:
    runner = BlueprintRunner(Summariser({}))
    reply = await runner.process_message(user_id="u1", message="a long text to summarise")
    assert reply.content == "a long text to summa"
    assert reply.metadata == {"output": {"by": "offline"}, "offline": True}
    assert reply.cost_usd == 0.0
