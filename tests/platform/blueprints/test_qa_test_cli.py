"""`agentflow test SCENARIOS --agent ...`: the qa_test_agent's suites from the terminal, against
the local database's agents; exit 0 when every scenario passes, 1 when one fails, 2 when the
file or the agent is wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentflow.cli import main
from agentflow.models import Agent, AgentSession
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, make_agent, make_persona
from tests.platform.blueprints.test_qa_test import FAILING, SUITE

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def support(owner: Persona) -> Agent:
    return make_agent(owner)


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "support.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_passing_suite_exits_0_with_a_text_report(
    tmp_path: Path, support: Agent, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["test", str(_file(tmp_path, SUITE)), "--agent", str(support.pk)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert out.splitlines() == [
        "3 of 3 scenario(s) passed against 'support' (0 failing turn(s))",
        "PASS password reset is answered from the knowledge base",
        "PASS refunds point to the Billing page",
        "PASS asking for a person reaches a person",
    ]
    with tenant_scope(support.tenant_id):
        assert not AgentSession.objects.filter(agent=support).exists()


def test_a_failing_suite_exits_1_with_its_diff_as_json(
    tmp_path: Path, owner: Persona, support: Agent, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _file(tmp_path, FAILING)
    status = main(
        ["test", str(path), "--agent", "support", "--tenant", owner.tenant.slug, "--json"]
    )
    assert status == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["passed"], report["failed"]) == (2, 1)
    [entry] = report["scenarios"][1]["turns"][0]["diff"]
    assert (entry["field"], entry["expected"]) == ("contains", "within 24 hours")


def test_the_text_report_shows_each_broken_expectation(
    tmp_path: Path, support: Agent, capsys: pytest.CaptureFixture[str]
) -> None:
    # No --agent: the file's `agent: support`, resolved in --tenant.
    status = main(["test", str(_file(tmp_path, FAILING)), "--tenant", "acme"])
    out = capsys.readouterr().out.splitlines()
    assert status == 1
    assert out[0] == "2 of 3 scenario(s) passed against 'support' (1 failing turn(s))"
    assert out[2] == "FAIL refunds point to the Billing page"
    assert out[3].startswith("  turn 1 contains: expected 'within 24 hours', got 'Refunds are")


def test_scenario_runs_only_the_named_scenarios(
    tmp_path: Path, support: Agent, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(_file(tmp_path, FAILING))
    only = "asking for a person reaches a person"
    status = main(["test", path, "--agent", str(support.pk), "--scenario", only])
    assert status == 0  # the failing scenario was not run
    assert capsys.readouterr().out.splitlines() == [
        "1 of 1 scenario(s) passed against 'support' (0 failing turn(s))",
        f"PASS {only}",
    ]
    status = main(["test", path, "--agent", str(support.pk), "--scenario", "angry customer"])
    assert status == 2
    assert "--scenario: no scenario 'angry customer'; the file has: password reset" in (
        capsys.readouterr().err
    )


def test_bad_yaml_exits_2_naming_the_line(
    tmp_path: Path, support: Agent, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _file(
        tmp_path,
        SUITE.replace(
            "    turns:\n      - user: How do I reset", "    turns:\n      - usr: How do I reset"
        ),
    )
    status = main(["test", str(path), "--agent", str(support.pk)])
    assert status == 2
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{path}: invalid suite: 2 error(s)",
        "line 6, scenarios[0].turns[0].user: Field required",
        "line 6, scenarios[0].turns[0].usr: unknown key",
    ]


def test_an_agent_of_another_tenant_exits_2(
    tmp_path: Path, support: Agent, capsys: pytest.CaptureFixture[str]
) -> None:
    outsider = make_persona("Globex", tier="professional")
    path = _file(tmp_path, SUITE)
    status = main(["test", str(path), "--agent", str(support.pk), "--tenant", outsider.tenant.slug])
    assert status == 2
    assert capsys.readouterr().err.strip() == (
        f"agentflow test: error: --agent: no agent '{support.pk}' in this tenant"
    )
    status = main(["test", str(path), "--tenant", "no-such-tenant"])
    assert status == 2
    assert "--tenant: no tenant 'no-such-tenant'" in capsys.readouterr().err
    status = main(["test", str(path)])  # a name without a tenant
    assert status == 2
    assert "is a name; give --tenant" in capsys.readouterr().err


def test_the_console_command_exits_2_on_a_missing_or_invalid_file(tmp_path: Path) -> None:
    """As a user runs it: a process of its own (neither needs the database)."""
    root = Path(__file__).resolve().parents[3]
    command = [sys.executable, "-m", "agentflow.cli", "test"]
    missing = subprocess.run(
        [*command, str(tmp_path / "nope.yaml"), "--agent", "support"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 2
    assert "scenario file" in missing.stderr
    assert "does not exist" in missing.stderr
    path = _file(
        tmp_path,
        "agent: support\nscenarios:\n  - name: a\n"
        "    turns: [{user: hi, expect: {escalated: maybe}}]\n",
    )
    invalid = subprocess.run(
        [*command, str(path), "--json"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert invalid.returncode == 2, invalid.stderr
    assert json.loads(invalid.stdout)["errors"] == [
        {
            "line": 4,
            "field": "scenarios[0].turns[0].expect.escalated",
            "reason": "Input should be a valid boolean",
        }
    ]
