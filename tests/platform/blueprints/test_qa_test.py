"""qa_test_agent through the API: created with its config, run on a real worker against the
tenant's real support agent (offline provider), never reaching another tenant's agents."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.models import Agent, AgentSession, Run
from hitl.models import HITLRequest
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, make_agent

pytestmark = pytest.mark.django_db(transaction=True)

SUITE = """\
# Regression suite of the support agent (docs/blueprints.md)
agent: support
scenarios:
  - name: password reset is answered from the knowledge base
    turns:
      - user: How do I reset my password?
        expect:
          intent: PASSWORD_RESET
          contains: [Reset password, 30 minutes]
          escalated: false
  - name: refunds point to the Billing page
    turns:
      - user: How do I request a refund?
        expect: {intent: BILLING, contains: [Billing page], not_contains: [colleague]}
  - name: asking for a person reaches a person
    turns:
      - user: I want to talk to a human please
        expect: {intent: HUMAN_AGENT, escalated: true}
"""

FAILING = SUITE.replace("contains: [Billing page]", "contains: [within 24 hours]")


def _create(persona: Persona, name: str, config: dict[str, Any]) -> Any:
    return persona.post(
        "/api/v1/agents", {"name": name, "blueprint": "qa_test_agent", "config": config}
    )


def _run(persona: Persona, agent_id: str, message: str, **extra: Any) -> dict[str, Any]:
    response = persona.post(
        f"/api/v1/agents/{agent_id}/runs",
        {"user_id": "ci", "message": message, **extra},
        headers={"Prefer": "wait=60"},
    )
    assert response.status_code == 201, response.json()
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def support(owner: Persona) -> Agent:
    return make_agent(owner)


@pytest.fixture
def tester(owner: Persona, support: Agent) -> str:
    response = _create(owner, "qa", {"target_agent": str(support.pk)})
    assert response.status_code == 201, response.json()
    return str(response.json()["id"])


def test_the_blueprint_is_listed_with_its_schema(owner: Persona) -> None:
    listed = {b["name"]: b for b in owner.get("/api/v1/blueprints").json()["results"]}
    qa = listed["qa_test_agent"]
    assert qa["default_config"]["max_turns"] == 200
    assert qa["default_config"]["target_agent"] is None
    assert "target_agent" in qa["config_schema"]["properties"]
    assert qa["default_planner"]["definition"]["initial_state"] == "parse"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"target_agent": "support"}, "target_agent"),
        ({"max_turns": 0}, "max_turns"),
        ({"turn_timeout_seconds": 900}, "turn_timeout_seconds"),
        ({"case_sensitve": True}, "case_sensitve"),
    ],
)
def test_bad_configs_are_422_naming_the_field(
    owner: Persona, config: dict[str, Any], field: str
) -> None:
    response = _create(owner, "qa-bad", config)
    assert response.status_code == 422, response.json()
    assert list(response.json()["errors"]) == [field]
    with tenant_scope(owner.tenant.pk):
        assert not Agent.objects.filter(name="qa-bad").exists()


def test_a_target_of_another_tenant_is_422_like_an_unknown_one(
    owner: Persona, outsider: Persona
) -> None:
    foreign = make_agent(outsider)
    response = _create(owner, "qa-foreign", {"target_agent": str(foreign.pk)})
    assert response.status_code == 422, response.json()
    assert response.json()["errors"] == {
        "target_agent": [f"no agent '{foreign.pk}' in this tenant"]
    }
    tester = _create(owner, "qa", {}).json()["id"]
    response = owner.patch(f"/api/v1/agents/{tester}", {"config": {"target_agent": tester}})
    assert response.status_code == 422
    assert "is a qa_test_agent" in response.json()["errors"]["target_agent"][0]


def test_a_passing_suite_runs_end_to_end(
    owner: Persona, support: Agent, tester: str, celery_worker_app: object
) -> None:
    body = _run(owner, tester, SUITE)
    assert body["status"] == "completed"
    result = body["result"]
    assert result["escalated"] is False
    assert result["intent"] == "QA_PASSED"
    report = result["metadata"]["output"]
    assert (report["passed"], report["failed"], report["total"]) == (3, 0, 3)
    assert report["target_agent"] == {"id": str(support.pk), "name": "support"}
    assert [s["name"] for s in report["scenarios"]] == [
        "password reset is answered from the knowledge base",
        "refunds point to the Billing page",
        "asking for a person reaches a person",
    ]
    assert result["content"].startswith("3 of 3 scenario(s) passed against 'support'")
    steps = owner.get(f"/api/v1/runs/{body['id']}/steps").json()
    # What the agent under test spent is on the step that ran the scenarios.
    used = sum(turn["actual"]["tokens"] for s in report["scenarios"] for turn in s["turns"])
    assert report["usage"]["tokens"] == used > 0
    assert steps["steps"][2]["tokens"] == used
    assert [s["node"] for s in steps["steps"]] == [
        "parse",
        "resolve_target",
        "run_scenarios",
        "report",
    ]
    with tenant_scope(owner.tenant.pk):
        # Test turns are no runs (the escalated one is no review item either), and their
        # conversations are erased after each scenario.
        assert not Run.objects.filter(agent=support).exists()
        assert not HITLRequest.objects.exists()
        assert not AgentSession.objects.filter(user_id__startswith="qa-test:").exists()


def test_a_failing_suite_completes_with_its_diff_not_a_review(
    owner: Persona, support: Agent, tester: str, celery_worker_app: object
) -> None:
    body = _run(owner, tester, FAILING)
    assert body["status"] == "completed"
    assert body["result"]["escalated"] is False
    report = body["result"]["metadata"]["output"]
    assert (report["passed"], report["failed"]) == (2, 1)
    failing = report["scenarios"][1]
    assert failing["passed"] is False
    [entry] = failing["turns"][0]["diff"]
    assert entry["field"] == "contains"
    assert entry["expected"] == "within 24 hours"
    assert "Billing page" in entry["actual"]
    assert body["result"]["intent"] == "QA_FAILED"


def test_bad_yaml_in_a_run_is_reported_with_its_line(
    owner: Persona, tester: str, celery_worker_app: object
) -> None:
    broken = SUITE.replace("escalated: false", "escalated: nope")
    body = _run(owner, tester, broken)
    assert body["status"] == "completed"
    report = body["result"]["metadata"]["output"]
    assert report["valid"] is False
    assert report["errors"] == [
        {
            "line": 10,
            "field": "scenarios[0].turns[0].expect.escalated",
            "reason": "Input should be a valid boolean",
        }
    ]


def test_suites_in_metadata_and_without_an_agent_use_the_config(
    owner: Persona, support: Agent, tester: str, celery_worker_app: object
) -> None:
    suite = {
        "scenarios": [
            {
                "name": "reset",
                "turns": [
                    {"user": "Where do I reset my password?", "expect": {"contains": ["Settings"]}}
                ],
            }
        ]
    }
    body = _run(owner, tester, "nightly regression", metadata={"scenarios": suite})
    report = body["result"]["metadata"]["output"]
    assert report["target_agent"]["id"] == str(support.pk)
    assert report["passed"] == 1


def test_another_tenants_agent_is_never_reached(
    owner: Persona, outsider: Persona, tester: str, celery_worker_app: object
) -> None:
    foreign = make_agent(outsider, name="globex-support")
    for ref, line_text in ((str(foreign.pk), str(foreign.pk)), ("globex-support", "globex")):
        suite = SUITE.replace("agent: support", f"agent: {ref}")
        report = _run(owner, tester, suite)["result"]["metadata"]["output"]
        assert report["errors"] == [
            {"line": 2, "field": "agent", "reason": f"no agent {ref!r} in this tenant"}
        ], line_text
    with tenant_scope(outsider.tenant.pk):
        assert not AgentSession.objects.filter(agent=foreign).exists()
    # And the owner's tester is invisible to the outsider.
    response = outsider.post(f"/api/v1/agents/{tester}/runs", {"user_id": "x", "message": SUITE})
    assert response.status_code == 404


REVIEW_SUITE = """\
agent: reviewer
scenarios:
  - name: a parameterised query is approved
    turns:
      - user: |
          diff --git a/billing/export.py b/billing/export.py
          --- a/billing/export.py
          +++ b/billing/export.py
          @@ -10,3 +10,4 @@ def export(cursor, customer_id):
               rows = []
          +    cursor.execute("SELECT * FROM invoices WHERE customer = %s", [customer_id])
               return rows
        expect: {intent: code_review, escalated: false, contains: [No risky patterns]}
  - name: SQL built from an f-string goes to a person
    turns:
      - user: |
          diff --git a/billing/export.py b/billing/export.py
          --- a/billing/export.py
          +++ b/billing/export.py
          @@ -10,3 +10,4 @@ def export(cursor, customer_id):
               rows = []
          +    cursor.execute(f"SELECT * FROM invoices WHERE customer = {customer_id}")
               return rows
        expect: {intent: code_review, escalated: true}
"""


def test_any_blueprint_can_be_the_agent_under_test(
    owner: Persona, tester: str, celery_worker_app: object
) -> None:
    created = owner.post(
        "/api/v1/agents",
        {
            "name": "reviewer",
            "blueprint": "code_review_agent",
            "config": {"disabled_rules": ["tests_missing"]},
        },
    )
    assert created.status_code == 201, created.json()
    body = _run(owner, tester, REVIEW_SUITE)
    report = body["result"]["metadata"]["output"]
    assert (report["passed"], report["failed"]) == (2, 0), report
    risky = report["scenarios"][1]["turns"][0]["actual"]
    assert risky["escalation_reason"] == "risky_change"
    assert "sql_from_strings" in risky["proposed_answer"]
    with tenant_scope(owner.tenant.pk):
        assert not Run.objects.filter(agent_id=created.json()["id"]).exists()
