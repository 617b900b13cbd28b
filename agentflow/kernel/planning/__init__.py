"""Planners (SPEC 4.8): FSM, behavior tree and LLM, over one runtime, with CEL conditions.

    from agentflow.kernel.planning import load_plan, PlanState
    plan = load_plan(yaml_text, known=Known(steps={"classify", ...}))   # every error at once
    result = await plan.run(PlanState(message="..."), executor, tools=invoker)

See docs/planners.md.
"""

from agentflow.kernel.planning.behavior_tree import BehaviorTreePlan, load_behavior_tree
from agentflow.kernel.planning.expressions import (
    CompiledExpression,
    ExpressionError,
    ExpressionEvalError,
    compile_expression,
)
from agentflow.kernel.planning.fsm import FSMPlan, load_fsm
from agentflow.kernel.planning.llm_planner import LLMPlanner
from agentflow.kernel.planning.model import (
    Action,
    PlanResult,
    PlanState,
    Snapshot,
    StepExecutor,
    StepOutcome,
    StepRecord,
    ToolInvoker,
)
from agentflow.kernel.planning.parsing import Known
from agentflow.kernel.planning.preflight import (
    CostProfile,
    PreflightEstimate,
    PreflightLedger,
    PreflightRefused,
    enforce,
    preflight,
)
from agentflow.kernel.planning.replanning import ReplanPolicy, run_with_replanning
from agentflow.kernel.planning.runtime import (
    AlreadyResumed,
    InMemoryResumeLedger,
    ResumeError,
    ResumeLedger,
)
from agentflow.kernel.planning.source import PlanError, PlanValidationError
from agentflow.kernel.planning.validation import (
    LoadedPlan,
    load_document,
    load_llm_planner,
    load_plan,
)

__all__ = [
    "Action",
    "AlreadyResumed",
    "BehaviorTreePlan",
    "CompiledExpression",
    "CostProfile",
    "ExpressionError",
    "ExpressionEvalError",
    "FSMPlan",
    "InMemoryResumeLedger",
    "Known",
    "LLMPlanner",
    "LoadedPlan",
    "PlanError",
    "PlanResult",
    "PlanState",
    "PlanValidationError",
    "PreflightEstimate",
    "PreflightLedger",
    "PreflightRefused",
    "ReplanPolicy",
    "ResumeError",
    "ResumeLedger",
    "Snapshot",
    "StepExecutor",
    "StepOutcome",
    "StepRecord",
    "ToolInvoker",
    "compile_expression",
    "enforce",
    "load_behavior_tree",
    "load_document",
    "load_fsm",
    "load_llm_planner",
    "load_plan",
    "preflight",
    "run_with_replanning",
]
