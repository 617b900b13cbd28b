"""code_review_agent through the API: created, misconfigured, run end to end, isolated."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from agentflow.blueprints.code_review import CodeReviewConfig, RuleId
from agentflow.kernel.blueprints.code_review import RULE_IDS
from governance.audit import Actor
from hitl.models import HITLRequest
from learning.loop import record_review_outcome
from learning.models import GoldenPath
from tenants.context import tenant_scope
from tests.kernel.blueprints.test_code_review import RISKY
from tests.platform.api.conftest import Persona

pytestmark = pytest.mark.django_db(transaction=True)


def _create(owner: Persona, config: dict[str, Any]) -> Any:
    return owner.post(
        "/api/v1/agents",
        {"name": "reviewer", "blueprint": "code_review_agent", "config": config},
    )


def test_the_config_names_every_kernel_rule() -> None:
    assert set(typing.get_args(RuleId)) == set(RULE_IDS)
    assert CodeReviewConfig.model_validate({}).escalate_on == "high"


def test_the_blueprint_is_listed_with_its_schema_and_defaults(owner: Persona) -> None:
    listed = {b["name"]: b for b in owner.get("/api/v1/blueprints").json()["results"]}
    review = listed["code_review_agent"]
    assert review["default_config"]["escalate_on"] == "high"
    assert "disabled_rules" in review["config_schema"]["properties"]
    assert review["default_planner"]["definition"]["initial_state"] == "parse"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"disabled_rules": ["no_such_rule"]}, "disabled_rules[0]"),
        ({"escalate_on": "sometimes"}, "escalate_on"),
        ({"max_diff_chars": 0}, "max_diff_chars"),
        ({"intent_categories": []}, "intent_categories"),
    ],
)
def test_a_bad_config_is_a_422_naming_the_field(
    owner: Persona, config: dict[str, Any], field: str
) -> None:
    response = _create(owner, config)
    assert response.status_code == 422, response.json()
    assert field in str(response.json()), response.json()


def test_a_risky_diff_runs_end_to_end_and_goes_to_review(
    owner: Persona, outsider: Persona, celery_worker_app: object
) -> None:
    created = _create(owner, {"disabled_rules": ["tests_missing"]})
    assert created.status_code == 201, created.json()
    agent_id = created.json()["id"]
    response = owner.post(
        f"/api/v1/agents/{agent_id}/runs",
        {"user_id": "ci-bot", "message": RISKY},
        headers={"Prefer": "wait=20"},
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "awaiting_review"
    output = body["result"]["metadata"]["output"]
    assert output["verdict"] == "request_changes"
    assert {(f["rule"], f["line"]) for f in output["findings"]} >= {
        ("secret", 13),
        ("sql_from_strings", 18),
        ("eval_exec", 24),
    }
    assert "tests_missing" not in {f["rule"] for f in output["findings"]}
    steps = owner.get(f"/api/v1/runs/{body['id']}/steps").json()["steps"]
    assert [s["node"] for s in steps] == ["parse", "scan", "report"]
    # Another tenant sees neither the agent nor its run.
    assert outsider.get(f"/api/v1/agents/{agent_id}").status_code == 404
    assert outsider.get(f"/api/v1/runs/{body['id']}").status_code == 404
    foreign = outsider.post(f"/api/v1/agents/{agent_id}/runs", {"user_id": "x", "message": RISKY})
    assert foreign.status_code == 404


SCAN_ONLY_RISKY = """\
initial_state: parse
final_states: [report, not_a_diff]
states:
  parse: {on_success: scan, on_error: not_a_diff}
  scan:
    on_success: report
"""


def test_a_tenant_planner_over_the_blueprints_steps_is_followed(
    owner: Persona, celery_worker_app: object
) -> None:
    created = _create(owner, {"planner": {"type": "fsm", "definition": SCAN_ONLY_RISKY}})
    assert created.status_code == 201, created.json()
    run = owner.post(
        f"/api/v1/agents/{created.json()['id']}/runs",
        {"user_id": "ci", "message": "this is not a diff"},
        headers={"Prefer": "wait=20"},
    ).json()
    steps = owner.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
    assert [(s["node"], s["outcome"]) for s in steps] == [
        ("parse", "error"),
        ("not_a_diff", "success"),
    ]


def test_a_planner_naming_a_step_the_blueprint_lacks_is_a_422_with_its_line(
    owner: Persona,
) -> None:
    definition = SCAN_ONLY_RISKY.replace("on_success: report", "on_success: classify")
    response = _create(owner, {"planner": {"type": "fsm", "definition": definition}})
    assert response.status_code == 422, response.json()
    assert "line 6" in str(response.json())
    assert "classify" in str(response.json())


def test_an_llm_provider_outside_the_operators_allowlist_is_a_422(owner: Persona) -> None:
    provider = {
        "kind": "openai",
        "base_url": "http://evil.example/v1",
        "api_key": "${OPENAI_API_KEY}",
    }
    response = _create(owner, {"llm": {"providers": [provider]}})
    assert response.status_code == 422, response.json()
    assert "llm.providers[0].base_url" in str(response.json())


def test_a_reviewed_code_review_never_becomes_a_golden_path(
    owner: Persona, celery_worker_app: object
) -> None:
    """Support agents that share the tenant's golden paths must never quote a diff review."""
    agent_id = _create(owner, {}).json()["id"]
    run = owner.post(
        f"/api/v1/agents/{agent_id}/runs",
        {"user_id": "ci-bot", "message": RISKY},
        headers={"Prefer": "wait=20"},
    ).json()
    assert run["status"] == "awaiting_review"
    with tenant_scope(owner.tenant.pk):
        request = HITLRequest.objects.get(run_id=run["id"])
        request.response = "Looks fine to me."
        for decision in ("approve", "edit"):
            assert record_review_outcome(request, decision, actor=Actor.system("t")) is None
        assert not GoldenPath.objects.exists()
