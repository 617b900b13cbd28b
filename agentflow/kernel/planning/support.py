"""The support pipeline's shape as an FSM (SPEC 4.1): classify → context → generate →
evaluate → deliver, or human review.

The steps are the kernel's built-in stages; ``evaluate`` decides with the reply's confidence
(its step writes ``response.confidence`` and, when the intent always escalates or the budget
refused the call, ``state.escalate``). A failing ``classify`` or ``generate_response`` goes
to a human, a failing ``context`` still answers (the pipeline degrades the same way).
"""

from __future__ import annotations

from typing import Any

__all__ = ["SUPPORT_FSM", "SUPPORT_PLANNER", "SUPPORT_STEPS"]

SUPPORT_STEPS = frozenset(
    {"classify", "context", "generate_response", "evaluate", "deliver", "human_review"}
)

SUPPORT_FSM: dict[str, Any] = {
    "states": {
        "classify": {"on_success": "context", "on_error": "human_review"},
        "context": {"on_success": "generate_response", "on_error": "generate_response"},
        "generate_response": {"on_success": "evaluate", "on_error": "human_review"},
        "evaluate": {
            "conditional_transitions": [
                {
                    "condition": "has(state.escalate) && state.escalate == true",
                    "target": "human_review",
                }
            ],
            "condition": "response.confidence >= 0.6",
            "on_true": "deliver",
            "on_false": "human_review",
        },
    },
    "initial_state": "classify",
    "final_states": ["deliver", "human_review"],
}

SUPPORT_PLANNER: dict[str, Any] = {"type": "fsm", "definition": SUPPORT_FSM}
