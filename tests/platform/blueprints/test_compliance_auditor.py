"""compliance_auditor_agent through the API on a real worker: create (and 422 on bad
configs), audit one answer (escalated, findings in the audit log), audit a period of the
tenant's stored answers (never another tenant's), and the period report as JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from agentflow.blueprints.compliance_schedule import SCHEDULE_USER, start_due_audits
from agentflow.models import Agent, AgentSession, Message, MessageRole, Run, RunStatus
from agentflow.server.celery import app
from governance.models import AuditEvent
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, make_agent, make_persona
from tests.platform.api.test_bad_input import assert_field_errors, nothing_written

pytestmark = pytest.mark.django_db(transaction=True)

AGENTS = "/api/v1/agents"
CONFIG: dict[str, Any] = {
    "forbidden_phrases": [{"id": "blame", "phrase": "your fault", "severity": "medium"}],
    "disclaimers": [
        {"id": "tax", "text": "not tax advice", "intents": ["TAX"], "keywords": ["tax"]}
    ],
    "max_refund": 100,
}


@pytest.fixture
def owner(db: None) -> Persona:
    return make_persona("Acme", tier="professional")


@pytest.fixture
def outsider(db: None) -> Persona:
    return make_persona("Globex", tier="professional")


def _create(persona: Persona, config: dict[str, Any] | None = None) -> Any:
    body = {"name": "auditor", "blueprint": "compliance_auditor_agent", "config": config or {}}
    return persona.post(AGENTS, body)


def _stored_answer(agent: Agent, text: str, intent: str, at: datetime) -> Message:
    """An answer the support agent delivered earlier (as complete_run leaves it)."""
    with tenant_scope(agent.tenant_id):
        session, _ = AgentSession.objects.get_or_create(agent=agent, user_id="customer-7")
        run = Run.objects.create(
            agent=agent,
            session=session,
            user_id="customer-7",
            input="question",
            status=RunStatus.COMPLETED,
            result={"intent": intent, "content": text},
        )
        return Message.objects.create(
            session=session, run=run, role=MessageRole.ASSISTANT, content=text, created_at=at
        )


def _run(persona: Persona, agent_id: str, message: str, metadata: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": "compliance-officer", "message": message}
    if metadata is not None:
        body["metadata"] = metadata
    response = persona.post(f"{AGENTS}/{agent_id}/runs", body, headers={"Prefer": "wait=30"})
    assert response.status_code == 201, response.json()
    result: dict[str, Any] = response.json()
    return result


def test_blueprint_is_listed_with_its_schema_and_defaults(owner: Persona) -> None:
    listed = {b["name"]: b for b in owner.get("/api/v1/blueprints").json()["results"]}
    blueprint = listed["compliance_auditor_agent"]
    assert blueprint["default_config"]["max_refund"] == 100.0
    assert "forbidden_phrases" in blueprint["config_schema"]["properties"]
    assert blueprint["default_planner"]["definition"]["initial_state"] == "load"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"max_refnd": 50}, "max_refnd"),
        ({"max_refund": -1}, "max_refund"),
        ({"escalate_on": "urgent"}, "escalate_on"),
        (
            {"forbidden_phrases": [{"id": "x", "phrase": "ok", "severity": "dire"}]},
            "forbidden_phrases[0].severity",
        ),
        ({"forbidden_phrases": [{"id": "Bad Id", "phrase": "rude"}]}, "forbidden_phrases[0].id"),
        (
            {"forbidden_phrases": [{"id": "a", "phrase": "rude"}, {"id": "a", "phrase": "mean"}]},
            "forbidden_phrases[1].id",
        ),
        ({"disclaimers": [{"id": "d", "text": "not advice"}]}, "disclaimers[0]"),
        ({"pii_kinds": ["SSN"]}, "pii_kinds[0]"),
        ({"policy_checks": ["astrology"]}, "policy_checks[0]"),
    ],
)
def test_bad_configs_are_422_naming_the_field(
    owner: Persona, config: dict[str, Any], field: str
) -> None:
    with nothing_written(owner.tenant):
        assert_field_errors(_create(owner, config), field)


def test_auditing_one_answer_escalates_and_records_audit_events(
    owner: Persona, celery_worker_app: object
) -> None:
    created = _create(owner, CONFIG)
    assert created.status_code == 201, created.json()
    answer = (
        "It's your fault the card expired, but we will refund $450 and you can reach "
        "our billing lead at maria.lopez@acme.example."
    )
    body = _run(owner, created.json()["id"], answer)
    assert body["status"] == "awaiting_review"
    result = body["result"]
    assert result["escalated"] is True
    assert result["escalation_reason"] == "compliance: high severity finding"
    output = result["metadata"]["output"]
    assert [f["rule_id"] for f in output["findings"]] == [  # worst first (docs/blueprints.md)
        "pii.email",
        "policy.refund_above_max",
        "forbidden.blame",
    ]
    assert output["summary"]["listed"] == 3
    assert output["summary"]["by_severity"] == {"high": 2, "medium": 1, "low": 0}
    assert all(f["run_id"] == body["id"] for f in output["findings"])
    assert "maria.lopez" not in json.dumps(output)
    steps = [s["node"] for s in owner.get(f"/api/v1/runs/{body['id']}/steps").json()["steps"]]
    assert steps == ["load", "audit", "record", "report"]
    with tenant_scope(owner.tenant.pk):
        events = list(AuditEvent.objects.filter(action="compliance.finding"))
    assert sorted(e.changes["rule_id"] for e in events) == [
        "forbidden.blame",
        "pii.email",
        "policy.refund_above_max",
    ]
    assert {(e.target_type, e.target_id) for e in events} == {("run", body["id"])}


def test_period_audit_reads_only_this_tenants_answers_and_reports_them(
    owner: Persona, outsider: Persona, celery_worker_app: object
) -> None:
    support = make_agent(owner)
    foreign = make_agent(outsider)
    now = datetime.now(UTC)
    clean = _stored_answer(support, "Your invoice is under Billing > Invoices.", "BILLING", now)
    leaky = _stored_answer(support, "Call our agent on +44 20 7946 0958 today.", "BILLING", now)
    taxed = _stored_answer(support, "Your tax invoice is attached.", "TAX", now)
    _stored_answer(
        support, "We guarantee it, also mail x@y.example.", "BILLING", now - timedelta(days=40)
    )
    _stored_answer(foreign, "Reach me at ceo@globex.example.", "BILLING", now)
    auditor = _create(owner, CONFIG).json()["id"]
    with tenant_scope(owner.tenant.pk):  # staff-facing: not audited by default
        reviewer = Agent.objects.create(name="reviewer", blueprint="code_review_agent")
    _stored_answer(reviewer, "Key in diff: ops@acme.example", "", now)
    period = {
        "since": (now - timedelta(days=7)).isoformat(),
        "until": (now + timedelta(minutes=5)).isoformat(),
    }
    body = _run(owner, auditor, "weekly audit", {"audit": period})
    output = body["result"]["metadata"]["output"]
    assert output["mode"] == "period"
    assert output["summary"]["audited"] == 3, "the older answer and the other tenant's are out"
    found = {(f["rule_id"], f["message_id"]) for f in output["findings"]}
    assert found == {("pii.phone", str(leaky.pk)), ("disclaimer.tax", str(taxed.pk))}
    assert str(clean.pk) not in json.dumps(output)
    assert "globex" not in json.dumps(output)

    listed = owner.get(
        "/api/v1/governance/audit", data={"action": "compliance.finding", **period}
    ).json()["results"]
    assert sorted((e["changes"]["rule_id"], e["target_id"]) for e in listed) == [
        ("disclaimer.tax", str(taxed.pk)),
        ("pii.phone", str(leaky.pk)),
    ]
    assert (
        outsider.get("/api/v1/governance/audit", data={"action": "compliance.*"}).json()["results"]
        == []
    )

    out = io.StringIO()
    call_command(
        "compliance_report",
        tenant=owner.tenant.slug,
        since=period["since"],
        until=period["until"],
        format="csv",
        stdout=out,
    )
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert sorted(r["rule_id"] for r in rows) == ["disclaimer.tax", "pii.phone"]
    assert {r["audit_run_id"] for r in rows} == {body["id"]}
    out = io.StringIO()
    call_command(
        "compliance_report",
        tenant=outsider.tenant.slug,
        since=period["since"],
        until=period["until"],
        stdout=out,
    )
    assert json.loads(out.getvalue())["summary"]["findings"] == 0


def test_a_bad_audit_period_settles_with_the_field_named(
    owner: Persona, celery_worker_app: object
) -> None:
    auditor = _create(owner, CONFIG).json()["id"]
    body = _run(owner, auditor, "audit", {"audit": {"since": "last week", "until": "now"}})
    assert body["status"] == "completed"
    assert body["result"]["metadata"]["output"]["error"]["field"] == "metadata.audit.since"


def test_another_tenants_auditor_is_404(owner: Persona, outsider: Persona) -> None:
    auditor = _create(owner, CONFIG).json()["id"]
    assert outsider.get(f"{AGENTS}/{auditor}").status_code == 404
    response = outsider.post(f"{AGENTS}/{auditor}/runs", {"user_id": "x", "message": "audit"})
    assert response.status_code == 404
    with tenant_scope(outsider.tenant.pk):
        assert not Run.objects.exists()


def test_beat_starts_each_due_period_audit_once_per_tenant(
    owner: Persona, outsider: Persona, celery_worker_app: object
) -> None:
    entry = django_settings.CELERY_BEAT_SCHEDULE["maintenance.compliance_audits"]
    assert entry["task"] in app.tasks
    support = make_agent(owner)
    yesterday = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
    _stored_answer(support, "We guarantee it works, call +1 415 555 0134.", "BILLING", yesterday)
    _stored_answer(support, "Mail me: bob@acme.example.", "BILLING", yesterday - timedelta(days=2))
    daily = _create(owner, {**CONFIG, "schedule": "daily"}).json()["id"]
    weekly = _create(outsider, {"schedule": "weekly"}).json()["id"]
    _create(owner, CONFIG)  # schedule "off": never started by the beat

    now = datetime(2026, 12, 1, 0, 20, tzinfo=UTC)  # a Tuesday
    assert start_due_audits(now) == 2
    assert start_due_audits(now + timedelta(minutes=15)) == 0, "each period once"
    with tenant_scope(owner.tenant.pk):
        [run] = Run.objects.filter(user_id=SCHEDULE_USER)
    assert str(run.agent_id) == daily
    assert run.metadata["audit"] == {
        "since": "2026-11-30T00:00:00+00:00",
        "until": "2026-12-01T00:00:00+00:00",
    }
    with tenant_scope(outsider.tenant.pk):
        [foreign] = Run.objects.filter(user_id=SCHEDULE_USER)
    assert str(foreign.agent_id) == weekly
    assert foreign.metadata["audit"]["since"] == "2026-11-23T00:00:00+00:00"
    settled = _wait_settled(owner, str(run.pk))
    output = settled["result"]["metadata"]["output"]
    assert output["summary"]["audited"] == 1, "only the day's answer"
    assert sorted(f["rule_id"] for f in output["findings"]) == ["pii.phone", "policy.guarantee"]


def _wait_settled(persona: Persona, run_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = persona.get(f"/api/v1/runs/{run_id}")
        if response.status_code == 303:  # completed: the result is one redirect away
            response = persona.get(response["Location"])
        body: dict[str, Any] = response.json()
        if body.get("status") not in ("pending", "processing", None):
            return body
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not settle")


def test_naming_another_tenants_agent_audits_nothing_of_it(
    owner: Persona, outsider: Persona, celery_worker_app: object
) -> None:
    support = make_agent(owner)
    _stored_answer(support, "Reach me at ceo@acme.example.", "BILLING", datetime.now(UTC))
    config = {"audited_agents": [str(support.pk)]}  # a valid UUID, of someone else's agent
    auditor = _create(outsider, config).json()["id"]
    now = datetime.now(UTC)
    period = {"since": (now - timedelta(days=1)).isoformat(), "until": now.isoformat()}
    output = _run(outsider, auditor, "audit", {"audit": period})["result"]["metadata"]["output"]
    assert output["summary"]["audited"] == 0
    assert output["findings"] == []


DRY_RUN = """\
initial_state: load
final_states: [report, rejected]
states:
  load: {on_success: audit, on_error: rejected}
  audit:
    on_success: report
"""


def test_a_tenant_planner_without_record_audits_without_writing_the_log(
    owner: Persona, celery_worker_app: object
) -> None:
    created = _create(owner, {"planner": {"type": "fsm", "definition": DRY_RUN}})
    assert created.status_code == 201, created.json()
    body = _run(owner, created.json()["id"], "We will refund $900 today.")
    assert body["result"]["metadata"]["output"]["summary"]["by_rule"] == {
        "policy.refund_above_max": 1
    }
    steps = owner.get(f"/api/v1/runs/{body['id']}/steps").json()["steps"]
    assert [s["node"] for s in steps] == ["load", "audit", "report"]
    with tenant_scope(owner.tenant.pk):
        assert not AuditEvent.objects.filter(action="compliance.finding").exists()


def test_a_planner_naming_a_step_the_auditor_lacks_is_a_422_with_its_line(
    owner: Persona,
) -> None:
    definition = DRY_RUN.replace("on_success: report", "on_success: publish")
    with nothing_written(owner.tenant):
        response = _create(owner, {"planner": {"type": "fsm", "definition": definition}})
    assert response.status_code == 422, response.json()
    assert "line 6" in str(response.json())
    assert "publish" in str(response.json())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"since": "last week"}, "--since: not an ISO 8601"),
        ({"until": "2026-12-01"}, "--until: give a timezone"),
        ({"until": "2026-10-01T00:00:00Z"}, "--until: must be after --since"),
        ({"tenant": "nobody"}, "--tenant: no tenant 'nobody'"),
    ],
)
def test_the_report_command_names_the_bad_argument(
    owner: Persona, options: dict[str, str], message: str
) -> None:
    given = {
        "tenant": owner.tenant.slug,
        "since": "2026-11-01T00:00:00Z",
        "until": "2026-12-01T00:00:00Z",
        **options,
    }
    with pytest.raises(CommandError, match=message):
        call_command("compliance_report", **given, stdout=io.StringIO())
