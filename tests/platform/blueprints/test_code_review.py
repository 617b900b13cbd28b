"""code_review_agent through the API: created, misconfigured, run end to end, isolated."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from agentflow.blueprints.code_review import CodeReviewConfig, RuleId
from agentflow.kernel.blueprints.code_review import RULE_IDS
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
