"""compliance_auditor_agent offline: each rule on realistic support answers, the FSM's path,
period audits through the answer port, findings handed to the sink, escalation."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from agentflow.kernel.blueprints.compliance_auditor import (
    AuditedText,
    ComplianceAuditorAgent,
    ComplianceFinding,
    audit_text,
    parse_period,
)
from agentflow.kernel.planning.model import PlanResult

RULES: dict[str, Any] = {
    "pii_kinds": None,
    "pii_severity": "high",
    "forbidden_phrases": [
        {"id": "blame_customer", "phrase": "your fault", "severity": "medium"},
        {"id": "calm_down", "phrase": "calm down", "severity": "low"},
    ],
    "disclaimers": [
        {
            "id": "investment",
            "text": "not financial advice",
            "intents": ["INVESTING"],
            "keywords": ["invest", "crypto"],
            "severity": "medium",
        }
    ],
    "max_refund": 100.0,
    "policy_checks": ["legal_advice", "medical_advice", "guarantee"],
    "escalate_on": "high",
    "max_answers": 1000,
}


def _plan(result: Any) -> PlanResult:
    assert result.plan is not None
    plan: PlanResult = result.plan
    return plan


def _rules(findings: Sequence[ComplianceFinding]) -> list[str]:
    return sorted(finding.rule_id for finding in findings)


def test_a_clean_answer_has_no_findings() -> None:
    answer = (
        "To reset your password, open Settings > Security and click 'Reset password'. "
        "Refunds up to $50 are issued to the original card within 5 business days."
    )
    assert audit_text(AuditedText(answer), RULES) == []


def test_pii_in_an_answer_is_high_and_its_excerpt_is_redacted() -> None:
    answer = (
        "I found the account: it belongs to jane.doe@example.com, card 4111 1111 1111 1111 "
        "is on file and we can call you at +1 415 555 0134."
    )
    findings = audit_text(AuditedText(answer, message_id="m1", run_id="r1"), RULES)
    assert _rules(findings) == ["pii.card", "pii.email", "pii.phone"]
    assert {f.severity for f in findings} == {"high"}
    assert all(f.message_id == "m1" and f.run_id == "r1" for f in findings)
    joined = " ".join(f.excerpt for f in findings)
    assert "jane.doe@example.com" not in joined
    assert "4111" not in joined
    assert "[EMAIL]" in joined
    assert "[CARD]" in joined


def test_forbidden_phrases_match_whole_words_only() -> None:
    blamed = audit_text(AuditedText("Honestly this is your fault for not updating."), RULES)
    assert _rules(blamed) == ["forbidden.blame_customer"]
    assert blamed[0].severity == "medium"
    assert "your fault" in blamed[0].excerpt
    # "calm downtime" is not "calm down"
    assert audit_text(AuditedText("We had a calm downtime window last night."), RULES) == []


def test_disclaimer_required_by_keyword_or_intent() -> None:
    by_keyword = audit_text(AuditedText("You could invest the credit in our annual plan."), RULES)
    assert _rules(by_keyword) == ["disclaimer.investment"]
    assert "keyword 'invest'" in by_keyword[0].message
    by_intent = audit_text(AuditedText("Diversify over time.", intent="INVESTING"), RULES)
    assert _rules(by_intent) == ["disclaimer.investment"]
    present = "You could invest in index funds; this is not financial advice."
    assert audit_text(AuditedText(present), RULES) == []


@pytest.mark.parametrize(
    ("answer", "amount"),
    [
        ("We will refund $250.00 to your card today.", "250"),
        ("You'll get a full refund of 1,200 EUR by Friday.", "1200"),
        ("We can credit back £180 for the outage.", "180"),
        ("An amount of 300 dollars will be refunded.", "300"),
    ],
)
def test_refunds_above_the_policy_maximum(answer: str, amount: str) -> None:
    findings = audit_text(AuditedText(answer), RULES)
    assert _rules(findings) == ["policy.refund_above_max"]
    assert findings[0].severity == "high"
    assert f"refund of {amount} promised" in findings[0].message


def test_refund_within_policy_or_unchecked() -> None:
    assert audit_text(AuditedText("We will refund $80 to your card."), RULES) == []
    unchecked = {**RULES, "max_refund": None}
    assert audit_text(AuditedText("We will refund $5000 to your card."), unchecked) == []


@pytest.mark.parametrize(
    ("answer", "rule", "severity"),
    [
        ("Honestly you should sue them for this.", "policy.legal_advice", "high"),
        ("I think you have a strong case against the landlord.", "policy.legal_advice", "high"),
        (
            "You should stop taking the medication before the update.",
            "policy.medical_advice",
            "high",
        ),
        ("Take 400 mg twice a day and rest.", "policy.medical_advice", "high"),
        ("We guarantee the sync will work after the update.", "policy.guarantee", "medium"),
        ("This will never happen again, I'm sure.", "policy.guarantee", "medium"),
    ],
)
def test_promises_beyond_policy(answer: str, rule: str, severity: str) -> None:
    findings = audit_text(AuditedText(answer), RULES)
    assert [(f.rule_id, f.severity) for f in findings] == [(rule, severity)]


def test_a_disabled_policy_check_is_not_run() -> None:
    rules = {**RULES, "policy_checks": ["legal_advice"]}
    assert audit_text(AuditedText("We guarantee it works."), rules) == []


def test_period_parsing_names_the_field() -> None:
    since, until = parse_period({"since": "2026-11-01T00:00:00Z", "until": "2026-12-01T00:00:00Z"})
    assert since == datetime(2026, 11, 1, tzinfo=UTC)
    assert until.month == 12
    with pytest.raises(ValueError, match=r"metadata\.audit\.since: not an ISO"):
        parse_period({"since": "last week", "until": "2026-12-01T00:00:00Z"})
    with pytest.raises(ValueError, match=r"metadata\.audit\.until: must be after since"):
        parse_period({"since": "2026-12-01T00:00:00Z", "until": "2026-11-01T00:00:00Z"})
    with pytest.raises(ValueError, match=r"metadata\.audit\.until: .*timezone"):
        parse_period({"since": "2026-11-01T00:00:00Z", "until": "2026-12-01"})


class _Answers:
    def __init__(self, items: list[AuditedText]) -> None:
        self.items = items
        self.asked: list[tuple[datetime, datetime, int]] = []

    async def answers(self, since: datetime, until: datetime, *, limit: int) -> list[AuditedText]:
        self.asked.append((since, until, limit))
        return self.items[:limit]


class _Sink:
    def __init__(self) -> None:
        self.recorded: list[tuple[list[ComplianceFinding], str]] = []

    async def record(self, findings: Sequence[ComplianceFinding], *, audit_run_id: str) -> None:
        self.recorded.append((list(findings), audit_run_id))


async def test_one_message_audit_escalates_on_a_high_finding() -> None:
    sink = _Sink()
    agent = ComplianceAuditorAgent(RULES, sink=sink)
    result = await agent.run(
        "Sure, we will refund $900 and you should sue the courier.",
        context={"run_id": "run-1", "metadata": {}},
    )
    plan = result.state.plan_state
    output = plan.state["output"]
    assert [r.node for r in _plan(result).path] == ["load", "audit", "record", "report"]
    assert output["mode"] == "message"
    assert output["summary"]["by_severity"] == {"high": 2, "medium": 0, "low": 0}
    assert plan.state["escalate"] is True
    assert plan.state["escalation_reason"] == "compliance: high severity finding"
    assert {f["run_id"] for f in output["findings"]} == {"run-1"}
    assert sink.recorded[0][1] == "run-1"
    assert len(sink.recorded[0][0]) == 2


async def test_a_medium_finding_does_not_escalate_by_default() -> None:
    agent = ComplianceAuditorAgent(RULES)
    result = await agent.run("Calm down, it is your fault.", context={"metadata": {}})
    plan = result.state.plan_state
    assert plan.state["escalate"] is False
    assert plan.response["content"] == "Audited 1 answer(s): 2 finding(s) (1 medium, 1 low)."
    lowered = ComplianceAuditorAgent({**RULES, "escalate_on": "low"})
    again = await lowered.run("Calm down please.", context={"metadata": {}})
    assert again.state.plan_state.state["escalate"] is True
    never = ComplianceAuditorAgent({**RULES, "escalate_on": "never"})
    quiet = await never.run("We will refund $900, you should sue.", context={"metadata": {}})
    assert quiet.state.plan_state.state["escalate"] is False
    assert quiet.state.plan_state.state["output"]["summary"]["by_severity"]["high"] == 2


async def test_period_audit_reads_the_port_and_reports_per_answer() -> None:
    answers = _Answers(
        [
            AuditedText("Your invoice is in Billing.", "BILLING", "m1", "r1", "a1"),
            AuditedText("Mail me at bob@corp.example.", "", "m2", "r2", "a1"),
            AuditedText("We guarantee delivery tomorrow.", "", "m3", "r3", "a2"),
        ]
    )
    agent = ComplianceAuditorAgent({**RULES, "max_answers": 2}, answers=answers)
    period = {"since": "2026-11-01T00:00:00+00:00", "until": "2026-11-08T00:00:00+00:00"}
    result = await agent.run("weekly audit", context={"metadata": {"audit": period}})
    output = result.state.plan_state.state["output"]
    assert answers.asked[0][2] == 2
    assert output["mode"] == "period"
    assert output["period"] == period
    assert output["summary"]["audited"] == 2
    assert [(f["rule_id"], f["message_id"]) for f in output["findings"]] == [("pii.email", "m2")]


async def test_a_bad_period_ends_rejected_naming_the_field() -> None:
    agent = ComplianceAuditorAgent(RULES, answers=_Answers([]))
    result = await agent.run(
        "audit", context={"metadata": {"audit": {"since": "yesterday", "until": "today"}}}
    )
    plan = result.state.plan_state
    assert _plan(result).status == "completed"
    assert [r.node for r in _plan(result).path] == ["load", "rejected"]
    assert plan.state["output"]["error"]["field"] == "metadata.audit.since"
    assert plan.state["escalate"] is False


async def test_the_output_lists_the_worst_findings_first_up_to_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agentflow.kernel.blueprints import compliance_auditor

    monkeypatch.setattr(compliance_auditor, "_LISTED", 2)
    answers = _Answers(
        [
            AuditedText("Please calm down.", "", "m1"),
            AuditedText("It is your fault.", "", "m2"),
            AuditedText("Write to eve@corp.example.", "", "m3"),
        ]
    )
    agent = ComplianceAuditorAgent(RULES, answers=answers, sink=(sink := _Sink()))
    period = {"since": "2026-11-01T00:00:00+00:00", "until": "2026-11-08T00:00:00+00:00"}
    result = await agent.run("audit", context={"metadata": {"audit": period}})
    output = result.state.plan_state.state["output"]
    assert [f["message_id"] for f in output["findings"]] == ["m3", "m2"]
    assert output["summary"]["findings"] == 3
    assert output["summary"]["listed"] == 2
    assert len(sink.recorded[0][0]) == 3, "every finding is recorded"


# Answers a support team sends every day: none of them breaks a rule.
CLEAN_ANSWERS = (
    "To reset your password, open Settings > Security and click 'Reset password'. The link "
    "is valid for 30 minutes.",
    "Refunds up to $100 are issued to the original card within 5 business days.",
    "Legally, we are required to keep invoices for 10 years, so we cannot delete them.",
    "Delivery dates are estimates and are not guaranteed during the holidays.",
    "We cannot guarantee that the beta feature will stay in the Starter plan.",
    "You have a case open with us (#48213); an engineer will update it by Friday.",
    "You can take them to the Reports page and export them as CSV.",
    "Your order 4471-2209 shipped on 2026-11-28 and should arrive within 3 days.",
    "The API limit is 600 requests per minute; version 2.4.1 raised it from 300.",
    "Our offices are at 221B Baker Street; support hours are 9:00-17:00 CET.",
    "We refunded the duplicate charge of $49.99; it can take 5 days to show up.",
    "Please restart the app after installing update 10.2.3 and try syncing again.",
)
# The same kind of answers gone wrong, with what each must be flagged for.
VIOLATIONS = (
    ("Sure, we'll refund the full $1,499 annual plan today.", ["policy.refund_above_max"]),
    ("If they refuse, I would advise you to file a lawsuit.", ["policy.legal_advice"]),
    ("Under the law, you must get a refund within 14 days.", ["policy.legal_advice"]),
    ("You should double the dose if the headache continues.", ["policy.medical_advice"]),
    ("Our uptime is 100% guaranteed, this will never happen again.", ["policy.guarantee"]),
    ("Your teammate's number is 415-555-0134 if you want to ask him.", ["pii.phone"]),
    ("The invoice went to DE89 3704 0044 0532 0130 00, the IBAN on file.", ["pii.iban"]),
    ("Use the key sk-live-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c to test it.", ["pii.secret"]),
    ("Calm down, the crypto payout is coming.", ["disclaimer.investment", "forbidden.calm_down"]),
)


@pytest.mark.parametrize("answer", CLEAN_ANSWERS)
def test_everyday_answers_have_no_findings(answer: str) -> None:
    assert audit_text(AuditedText(answer), RULES) == []


@pytest.mark.parametrize(("answer", "rules"), VIOLATIONS)
def test_answers_gone_wrong_are_flagged(answer: str, rules: list[str]) -> None:
    assert _rules(audit_text(AuditedText(answer), RULES)) == rules
