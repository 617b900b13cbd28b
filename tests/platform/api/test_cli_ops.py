"""`agentflow init` (an agent's file from a blueprint's catalog entry, valid as the API
validates it) and `agentflow costs` (tokens and dollars per agent and day, read from the
live server through agentflow.client), with the usage endpoints behind it."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentflow.cli import main
from agentflow.client import AgentFlowClient, AsyncAgentFlowClient, NotFoundError, ValidationError
from agentflow.client.types import AgentUsage
from agentflow.models import Agent, Run, RunStatus
from agentflow.pipelines import BLUEPRINTS, validate_agent_config
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, make_agent, make_persona


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(list(argv), stdout=out)
    return status, out.getvalue()


# ------------------------------------------------------------------------------- init


@pytest.mark.parametrize("blueprint", list(BLUEPRINTS))
def test_init_writes_a_file_the_api_validation_accepts_as_it_is(
    blueprint: str, tmp_path: Path
) -> None:
    for name, loader in (("agent.yaml", yaml.safe_load), ("agent.json", json.loads)):
        path = tmp_path / f"{blueprint}-{name}"
        status, out = run("init", blueprint, "--name", "My agent", "-o", str(path))
        assert status == 0, out
        document = loader(path.read_text(encoding="utf-8"))
        assert document["name"] == "My agent"
        assert document["blueprint"] == blueprint
        # Valid by construction: the API's validation takes it unchanged (no default added).
        assert validate_agent_config(blueprint, document["config"]) == document["config"]
        assert document["config"] == BLUEPRINTS[blueprint].default_config
        status, out = run("validate", str(path))
        assert (status, out) == (0, f"{path}: ok ({blueprint} agent 'My agent')\n")


def test_init_yaml_says_what_each_key_is_for_and_prints_to_stdout() -> None:
    status, out = run("init", "triage_agent")
    assert status == 0
    assert out.startswith("# Category, priority")  # the blueprint's description
    lines = out.splitlines()
    assert "name: triage" in lines
    index = lines.index("  default_queue: general")
    assert lines[index - 1].startswith("  # ")  # the schema's description of the key


@pytest.mark.django_db
def test_an_init_file_is_the_create_body_of_the_api(owner: Persona, tmp_path: Path) -> None:
    path = tmp_path / "monitor.json"
    assert run("init", "sentiment_monitor_agent", "-o", str(path))[0] == 0

    response = owner.post("/api/v1/agents", json.loads(path.read_text(encoding="utf-8")))

    assert response.status_code == 201, response.json()
    assert response.json()["name"] == "sentiment_monitor"
    assert response.json()["config"] == BLUEPRINTS["sentiment_monitor_agent"].default_config


def test_init_refuses_an_unknown_blueprint_and_an_existing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("init", "helpdesk_agent") == (2, "")
    assert "no blueprint 'helpdesk_agent'; available: support_agent" in capsys.readouterr().err

    existing = tmp_path / "agent.yaml"
    existing.write_text("mine\n")
    assert run("init", "support_agent", "-o", str(existing)) == (2, "")
    assert "cannot create" in capsys.readouterr().err
    assert existing.read_text() == "mine\n"
    assert run("init", "support_agent", "--name", "") == (2, "")


def test_validate_names_each_bad_field_of_an_agent_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    assert run("init", "triage_agent", "-o", str(path))[0] == 0
    document = yaml.safe_load(path.read_text())
    document["config"]["duplicate_threshold"] = 7
    document["config"]["colour"] = "blue"
    path.write_text(yaml.safe_dump(document))

    status, out = run("validate", str(path))

    assert status == 2
    lines = out.splitlines()
    assert any(line.startswith(f"{path}: config.duplicate_threshold: ") for line in lines)
    assert any(line.startswith(f"{path}: config.colour: unknown key") for line in lines)
    assert lines[-1] == f"{path}: 2 error(s)"


# ------------------------------------------------------------------------------ costs

TODAY = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


def _runs(persona: Persona, agent: Agent, *spent: tuple[int, int, str]) -> None:
    """Settled runs of ``agent``: (days ago, tokens, dollars) each."""
    with tenant_scope(persona.tenant.pk):
        for days_ago, tokens, usd in spent:
            Run.objects.create(
                agent=agent,
                user_id="customer",
                input="hello",
                status=RunStatus.COMPLETED,
                tokens=tokens,
                cost_usd=Decimal(usd),
                created_at=TODAY - timedelta(days=days_ago),
            )


@pytest.fixture
def spend(live_server: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    owner = make_persona("Acme", tier="professional")
    outsider = make_persona("Globex", tier="professional")
    alpha, beta = make_agent(owner, "alpha"), make_agent(owner, "beta")
    foreign = make_agent(outsider, "foreign")
    _runs(owner, alpha, (0, 100, "0.001000"), (0, 50, "0.000500"), (1, 10, "0.000100"))
    _runs(owner, beta, (0, 7, "0.000007"), (9, 1000, "0.010000"))  # 9 days ago: outside 7
    _runs(outsider, foreign, (0, 999, "9.000000"))
    monkeypatch.setenv("AGENTFLOW_URL", live_server.url)
    monkeypatch.setenv("AGENTFLOW_API_KEY", owner.key)
    return {"alpha": str(alpha.pk), "beta": str(beta.pk), "foreign": str(foreign.pk)}


@pytest.mark.django_db(transaction=True)
def test_costs_prints_tokens_and_dollars_per_agent_and_day(spend: dict[str, Any]) -> None:
    status, out = run("costs", "--json")

    assert status == 0
    usage = json.loads(out)
    today, yesterday = TODAY.date().isoformat(), (TODAY - timedelta(days=1)).date().isoformat()
    assert usage["days"] == 7
    assert usage["until"] == today
    rows = [
        (r["day"], r["agent_name"], r["runs"], r["tokens"], r["cost_usd"]) for r in usage["results"]
    ]
    assert rows == [
        (yesterday, "alpha", 1, 10, "0.000100"),
        (today, "alpha", 2, 150, "0.001500"),
        (today, "beta", 1, 7, "0.000007"),
    ]
    assert usage["totals"] == {"runs": 4, "tokens": 167, "cost_usd": "0.001607"}

    status, out = run("costs", "--days", "10", "--agent", spend["beta"])
    assert status == 0
    lines = out.splitlines()
    assert lines[1].split() == ["day", "agent", "runs", "tokens", "usd"]
    assert len(lines) == 5  # the period, the header, two days of beta, the total
    assert lines[-1].split() == ["total", "2", "1007", "0.010007"]


@pytest.mark.django_db(transaction=True)
def test_costs_of_another_tenants_agent_is_a_404_and_exit_2(
    spend: dict[str, Any], live_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("costs", "--agent", spend["foreign"]) == (2, "")
    assert "404 not_found" in capsys.readouterr().err

    with AgentFlowClient(live_server.url, os.environ["AGENTFLOW_API_KEY"]) as client:
        with pytest.raises(NotFoundError):
            client.agent_usage(agent_id=spend["foreign"])
        with pytest.raises(ValidationError) as raised:
            client.agent_usage(days=91)
        assert list(raised.value.errors) == ["days"]
        everyone = client.agent_usage(days=1)
    assert {row["agent_name"] for row in everyone["results"]} == {"alpha", "beta"}

    async def beta_usage() -> AgentUsage:
        async with AsyncAgentFlowClient(live_server.url, os.environ["AGENTFLOW_API_KEY"]) as af:
            return await af.agent_usage(days=10, agent_id=spend["beta"])

    assert asyncio.run(beta_usage())["totals"]["tokens"] == 1007


def test_costs_usage_errors_and_an_unreachable_platform(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AGENTFLOW_API_KEY", raising=False)
    assert run("costs") == (2, "")
    assert "AGENTFLOW_API_KEY" in capsys.readouterr().err

    monkeypatch.setenv("AGENTFLOW_API_KEY", "af_anything")
    assert run("costs", "--days", "0") == (2, "")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert run("costs", "--url", f"http://127.0.0.1:{port}") == (1, "")
    assert f"cannot reach http://127.0.0.1:{port}" in capsys.readouterr().err
