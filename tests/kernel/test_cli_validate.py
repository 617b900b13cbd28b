"""`agentflow validate` and `agentflow preflight`."""

from __future__ import annotations

import io
import json
from pathlib import Path

from agentflow.cli import main
from tests.kernel.planning_helpers import FIXTURES

BROKEN = """\
states:
  classify:
    on_success: nowhere
  lonely: {on_success: send}
initial_state: classify
final_states: [send]
"""


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), stdout=out)
    return status, out.getvalue()


def test_valid_files_print_a_summary_and_exit_0() -> None:
    status, out = run(
        "validate", str(FIXTURES / "support.yaml"), str(FIXTURES / "fraud_detection.yaml")
    )
    assert status == 0
    lines = out.splitlines()
    assert lines[0].endswith("support.yaml: ok (planner: fsm: 7 states, 8 transitions)")
    assert "fsm: 6 states, 7 transitions" in lines[1]


def test_invalid_files_print_every_error_with_its_line_and_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    status, out = run("validate", str(broken), str(FIXTURES / "urgent_triage.yaml"))
    assert status == 2
    assert out.splitlines() == [
        f"{broken}: line 3, column 17: transition `on_success: nowhere`: no state named `nowhere`",
        f"{broken}: line 4, column 3: state `lonely` is unreachable from `classify`",
        f"{broken}: 2 error(s)",
        f"{FIXTURES / 'urgent_triage.yaml'}: ok (planner: behavior_tree: 9 nodes, 5 actions)",
    ]


def test_known_actions_are_checked_when_given(tmp_path: Path) -> None:
    status, out = run(
        "validate", str(FIXTURES / "support.yaml"), "--steps", "classify,knowledge_search"
    )
    assert status == 2
    assert "unknown step `generate_response`" in out


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    status, _ = run("validate", str(tmp_path / "nope.yaml"))
    assert status == 2


def test_preflight_prints_the_estimate(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text(
        "name: helpdesk\n"
        "llm: {providers: [{kind: openai, model: gpt-4o-mini}]}\n"
        "intents: {categories: [{name: BILLING, examples: ['my invoice is wrong']}]}\n"
        "budget: {soft_usd: 0.00001, hard_usd: 1.0}\n"
    )
    status, out = run("preflight", str(config), "--message", "I was charged twice")
    assert status == 0
    estimate = json.loads(out)
    assert estimate["decision"] == "warn"
    assert [s["node"] for s in estimate["steps"]][:1] == ["classify"]
    assert estimate["tokens"] > 0
    assert estimate["max_usd"] >= estimate["usd"] > 0


def test_preflight_with_a_planner_in_the_config(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text((FIXTURES / "support.yaml").read_text() + "budget: {hard_usd: 0.0}\n")
    status, out = run("preflight", str(config), "--message", "hi")
    assert status == 0
    assert json.loads(out)["decision"] == "ok"  # offline: nothing to pay
