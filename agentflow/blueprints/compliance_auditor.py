"""`compliance_auditor_agent`: config, the tenant-scoped answer source, findings as audit
events, and the per-period report (JSON or CSV) built from those events.

The kernel agent (`agentflow.kernel.blueprints.compliance_auditor`) does the auditing; this
module gives it the tenant's stored assistant answers of a period and records what it
found in the tenant's audit chain (action ``compliance.finding``), so a period's report
is read back from the tamper-evident log rather than from a side table.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from asgiref.sync import sync_to_async
from django.db import transaction
from pydantic import BaseModel, ConfigDict, Field

from agentflow.blueprints import BlueprintConfig, BlueprintSpec
from agentflow.kernel.blueprints.compliance_auditor import (
    AuditedText,
    ComplianceAuditorAgent,
    ComplianceFinding,
    summarise,
)
from agentflow.kernel.config import ConfigIssue
from agentflow.kernel.guardrails import PIIKind
from agentflow.models import Agent, Message, MessageRole
from governance.audit import Actor, append, batched_appends, seal_chain
from governance.models import AuditEvent

__all__ = [
    "FINDING_ACTION",
    "SPEC",
    "ComplianceAuditorConfig",
    "compliance_report",
    "report_csv",
]

FINDING_ACTION = "compliance.finding"
Severity = Literal["low", "medium", "high"]
PolicyCheck = Literal["legal_advice", "medical_advice", "guarantee"]
POLICY_CHECKS: tuple[PolicyCheck, ...] = ("legal_advice", "medical_advice", "guarantee")
RuleId = Annotated[str, Field(min_length=1, max_length=60, pattern=r"^[a-z0-9_]+$")]
_CSV_COLUMNS = ("occurred_at", "rule_id", "severity", "message", "excerpt", "target_type")
_CSV_COLUMNS_IDS = ("message_id", "run_id", "agent_id", "audit_run_id")


class ForbiddenPhrase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: RuleId
    phrase: str = Field(min_length=2, max_length=200, description="Matched as whole words.")
    severity: Severity = "medium"


class Disclaimer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: RuleId
    text: str = Field(min_length=3, max_length=500, description="Text the answer must contain.")
    intents: list[str] = Field(default_factory=list, description="Answers of these intents.")
    keywords: list[str] = Field(
        default_factory=list, description="Answers mentioning any of these words or phrases."
    )
    severity: Severity = "medium"


DEFAULT_FORBIDDEN = (
    ForbiddenPhrase(id="blame_customer", phrase="your fault", severity="medium"),
    ForbiddenPhrase(id="dismissive", phrase="not our problem", severity="medium"),
    ForbiddenPhrase(id="calm_down", phrase="calm down", severity="low"),
)
DEFAULT_DISCLAIMERS = (
    Disclaimer(
        id="investment",
        text="not financial advice",
        keywords=["invest", "investment", "stock", "crypto"],
        severity="medium",
    ),
)


class ComplianceAuditorConfig(BlueprintConfig):
    """Config of the `compliance_auditor_agent` blueprint; unknown keys are errors."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, title="compliance_auditor_agent config"
    )

    pii_kinds: list[PIIKind] | None = Field(
        None, description="PII kinds an answer must not contain; null: all the kernel knows."
    )
    pii_severity: Severity = Field("high", description="Severity of PII in an answer.")
    forbidden_phrases: list[ForbiddenPhrase] = Field(
        default_factory=lambda: list(DEFAULT_FORBIDDEN),
        max_length=200,
        description="Phrases an answer must never contain.",
    )
    disclaimers: list[Disclaimer] = Field(
        default_factory=lambda: list(DEFAULT_DISCLAIMERS),
        max_length=100,
        description="Disclaimers an answer must contain when its intent or a keyword says so.",
    )
    max_refund: float | None = Field(
        100.0, ge=0, description="Largest refund an answer may promise; null: not checked."
    )
    policy_checks: list[PolicyCheck] = Field(
        default_factory=lambda: list(POLICY_CHECKS),
        description="Promises beyond policy to look for.",
    )
    escalate_on: Literal["high", "medium", "low", "never"] = Field(
        "high", description="A finding of this severity or worse sends the run to a reviewer."
    )
    audited_agents: list[uuid.UUID] = Field(
        default_factory=list,
        max_length=100,
        description="Agents whose answers a period audit reads; empty: every support_agent of "
        "the tenant (the agents that answer customers).",
    )
    max_answers: int = Field(1000, ge=1, le=10_000, description="Answers read per period audit.")
    schedule: Literal["off", "daily", "weekly"] = Field(
        "off",
        description="Audit the last complete UTC day (daily) or Monday-to-Monday week (weekly) "
        "on the beat, with an ordinary run.",
    )


def _check(model: BaseModel) -> list[ConfigIssue]:
    assert isinstance(model, ComplianceAuditorConfig)
    issues = []
    for name in ("forbidden_phrases", "disclaimers"):
        seen: set[str] = set()
        for index, rule in enumerate(getattr(model, name)):
            if rule.id in seen:
                issues.append(ConfigIssue(f"{name}[{index}].id", f"duplicate rule id {rule.id!r}"))
            seen.add(rule.id)
    for index, rule in enumerate(model.disclaimers):
        if not rule.intents and not rule.keywords:
            issues.append(
                ConfigIssue(f"disclaimers[{index}]", "needs intents or keywords to trigger it")
            )
    return issues


# ------------------------------------------------------------------------------ ports


class StoredAnswers:
    """The tenant's assistant answers of a period (runs execute in the tenant's scope)."""

    def __init__(self, audited: Sequence[str]) -> None:
        self.audited = list(audited)

    def _read(self, since: datetime, until: datetime, limit: int) -> list[AuditedText]:
        rows = Message.objects.filter(
            role=MessageRole.ASSISTANT, created_at__gte=since, created_at__lt=until
        )
        if self.audited:
            rows = rows.filter(session__agent_id__in=self.audited)
        else:
            # Customers read support agents' answers; other blueprints answer staff.
            rows = rows.filter(session__agent__blueprint="support_agent")
        found = rows.order_by("created_at", "id").values(
            "id", "content", "run_id", "session__agent_id", "created_at", "run__result__intent"
        )[:limit]
        return [
            AuditedText(
                text=row["content"],
                intent=str(row["run__result__intent"] or ""),
                message_id=str(row["id"]),
                run_id=str(row["run_id"] or ""),
                agent_id=str(row["session__agent_id"]),
                created_at=row["created_at"].isoformat(),
            )
            for row in found
        ]

    async def answers(self, since: datetime, until: datetime, *, limit: int) -> list[AuditedText]:
        return await sync_to_async(self._read)(since, until, limit)


class AuditLogSink:
    """Each finding becomes an event of the tenant's audit chain, in one INSERT."""

    def __init__(self, tenant_id: int, agent_id: uuid.UUID) -> None:
        self.tenant_id = tenant_id
        self.agent_id = agent_id

    def _write(self, findings: Sequence[ComplianceFinding], audit_run_id: str) -> None:
        actor = Actor.system("compliance_auditor")
        with transaction.atomic(), batched_appends():
            for finding in findings:
                target = ("message", finding.message_id) if finding.message_id else ("run", "")
                append(
                    tenant_id=self.tenant_id,
                    actor=actor,
                    action=FINDING_ACTION,
                    target_type=target[0],
                    target_id=target[1] or finding.run_id,
                    changes={
                        **finding.as_dict(),
                        "audit_run_id": audit_run_id,
                        "auditor_agent_id": str(self.agent_id),
                    },
                    seal_now=False,  # the beat sealer chains them, like the run path's events
                )

    async def record(self, findings: Sequence[ComplianceFinding], *, audit_run_id: str) -> None:
        await sync_to_async(self._write)(findings, audit_run_id)


def _ports(agent: Agent, config: dict[str, Any]) -> Mapping[str, Any]:
    audited = [str(value) for value in config.get("audited_agents") or ()]
    return {
        "answers": StoredAnswers(audited),
        "sink": AuditLogSink(agent.tenant_id, agent.id),
    }


# ----------------------------------------------------------------------------- report


def compliance_report(tenant_id: int, since: datetime, until: datetime) -> dict[str, Any]:
    """The tenant's compliance findings recorded in a period, with their summary counts.

    Call inside the tenant's scope. The chain is sealed first, as every reader of it does.
    """
    with transaction.atomic():
        seal_chain(tenant_id)
    events = AuditEvent.objects.filter(
        action=FINDING_ACTION, occurred_at__gte=since, occurred_at__lt=until
    ).order_by("occurred_at", "id")
    rows = [
        {"occurred_at": event.occurred_at.isoformat(), "target_type": event.target_type}
        | dict(event.changes)
        for event in events
    ]
    findings = [
        ComplianceFinding(
            **{key: str(row.get(key, "")) for key in ComplianceFinding.__dataclass_fields__}
        )
        for row in rows
    ]
    summary = summarise(findings, len({row.get("audit_run_id", "") for row in rows}))
    summary["audits"] = summary.pop("audited")
    return {
        "period": {"since": since.isoformat(), "until": until.isoformat()},
        "summary": summary,
        "findings": rows,
    }


def report_csv(report: Mapping[str, Any]) -> str:
    """The report's findings as CSV, one row each (columns fixed, header first)."""
    out = io.StringIO()
    writer = csv.DictWriter(
        out, fieldnames=[*_CSV_COLUMNS, *_CSV_COLUMNS_IDS], extrasaction="ignore"
    )
    writer.writeheader()
    for row in report["findings"]:
        writer.writerow({key: row.get(key, "") for key in writer.fieldnames})
    return out.getvalue()


SPEC = BlueprintSpec(
    name="compliance_auditor_agent",
    description="Audits answers (one, or the tenant's stored answers of a period) for PII, "
    "forbidden phrases, missing disclaimers and promises beyond policy; findings go to the "
    "audit log and escalate when severe.",
    config_model=ComplianceAuditorConfig,
    agent_class=ComplianceAuditorAgent,
    ports=_ports,
    check=_check,
)
