"""code_review_agent on the platform: its config (what a tenant may set) and its spec."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from agentflow.blueprints import BlueprintSpec
from agentflow.kernel.blueprints.code_review import RULE_IDS, CodeReviewAgent

RuleId = Literal[
    "secret",
    "sql_from_strings",
    "eval_exec",
    "tls_disabled",
    "shell_injection",
    "unsafe_deserialization",
    "broad_except",
    "tests_missing",
]


class CodeReviewConfig(BaseModel):
    """Config of the `code_review_agent` blueprint; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, title="code_review_agent config")

    escalate_on: Literal["high", "medium", "low", "never"] = Field(
        "high",
        description="A finding of this severity or worse sends the review to a person.",
    )
    disabled_rules: list[RuleId] = Field(
        default_factory=list, max_length=len(RULE_IDS), description="Rules not to apply."
    )
    test_path_patterns: list[str] = Field(
        default_factory=lambda: ["test_", "_test.", "tests/", ".spec.", ".test."],
        max_length=50,
        description="A changed path containing one of these is a test (for tests_missing).",
    )
    # A run's message holds at most 20,000 characters (the API's limit), diff included.
    max_diff_chars: int = Field(
        20_000, ge=1, le=20_000, description="Longer diffs are refused, not reviewed."
    )


SPEC = BlueprintSpec(
    name="code_review_agent",
    description="Reviews a unified diff for risky patterns (secrets, SQL built from strings, "
    "eval/exec, disabled TLS checks, swallowed exceptions, missing tests), each finding "
    "anchored to its file and line; risky changes go to a person.",
    config_model=CodeReviewConfig,
    agent_class=CodeReviewAgent,
)
