"""`compliance_auditor_agent`: audits answers against a tenant's compliance rules, offline.

What it audits: the run's message (an answer pasted for review), or, when the run's
``metadata.audit`` is ``{"since": ISO, "until": ISO}``, the tenant's stored assistant
answers of that period, read through an `AnswerSource` port. The rules (all from the
agent's config): PII in an answer (the kernel's `PIIRedactor`), forbidden phrases,
required disclaimers (triggered by the answer's intent or a keyword), and promises beyond
policy (a refund above ``max_refund``, legal or medical advice, guarantees).

Each finding names its rule, severity, a PII-redacted excerpt and the message/run it was
found in; a `FindingSink` port records them (the platform: audit events). The run
escalates when a finding reaches ``escalate_on`` severity (``never``: it only reports).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from agentflow.kernel.agents import AgentState
from agentflow.kernel.blueprints.base import StepAgent, finish
from agentflow.kernel.guardrails import PIIRedactor
from agentflow.kernel.planning.model import StepOutcome

__all__ = [
    "SEVERITIES",
    "AnswerSource",
    "AuditedText",
    "ComplianceAuditorAgent",
    "ComplianceFinding",
    "FindingSink",
    "audit_text",
    "parse_period",
    "summarise",
]

SEVERITIES = ("low", "medium", "high")
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
_EXCERPT_RADIUS = 60  # characters kept on each side of what a rule matched
_WORK = "_compliance"  # the run's working data, kept in the agent state's context
_LISTED = 500  # findings listed in a run's output (the summary counts them all)


@dataclass(frozen=True, slots=True)
class AuditedText:
    """One answer to audit; ids are empty for the run's own message."""

    text: str
    intent: str = ""
    message_id: str = ""
    run_id: str = ""
    agent_id: str = ""
    created_at: str = ""


@dataclass(frozen=True, slots=True)
class ComplianceFinding:
    rule_id: str
    severity: str
    message: str
    excerpt: str
    message_id: str = ""
    run_id: str = ""
    agent_id: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class AnswerSource(Protocol):
    """The tenant's stored assistant answers (the platform reads them tenant-scoped)."""

    async def answers(
        self, since: datetime, until: datetime, *, limit: int
    ) -> Sequence[AuditedText]: ...


class FindingSink(Protocol):
    """Where findings are recorded for the record (the platform: its audit log)."""

    async def record(self, findings: Sequence[ComplianceFinding], *, audit_run_id: str) -> None: ...


# ------------------------------------------------------------------------------ rules


def _money(tag: str) -> str:
    """An amount with its currency before or after it; groups ``a<tag>``/``b<tag>``."""
    number = r"\d[\d,]*(?:\.\d{1,2})?"
    return (
        rf"(?:[$€£]\s?(?P<a{tag}>{number})"
        rf"|(?P<b{tag}>{number})\s?(?:usd|eur|gbp|dollars?|euros?|pounds?)\b)"
    )


# A refund word then an amount in the same sentence, or an amount then a refund word.
_REFUND_RE = re.compile(
    rf"(?i)\b(?:refund|reimburse|credit back|money back)\w*\b[^.!?\n]{{0,80}}?{_money('1')}"
    rf"|{_money('2')}[^.!?\n]{{0,60}}?\b(?:refund|reimburse|credit)\w*"
)
# Advice a support answer must not give: phrasings that tell the customer what to do
# legally or medically, or promise what nobody can promise.
_POLICY_PATTERNS: dict[str, tuple[str, str, re.Pattern[str]]] = {
    "policy.legal_advice": (
        "high",
        "legal advice",
        re.compile(
            r"(?i)\b(?:you should|you (?:can|could)(?: always)?|i (?:would )?(?:advise|recommend)"
            r"(?: that)?(?: you)?(?: to)?)\s+(?:sue\b|take (?:them|us|the \w+) to court|take "
            r"legal action|file a lawsuit|press charges)|\byou (?:have|'ve got) a (?:strong|good|"
            r"solid|legal) (?:legal )?case\b|\b(?:legally|under the law),? you (?:are|must|have "
            r"to|can(?:not|'t)?)\b"
        ),
    ),
    "policy.medical_advice": (
        "high",
        "medical advice",
        re.compile(
            r"(?i)\byou should (?:take|stop taking|increase|reduce|double) (?:your |the |a )?"
            r"(?:dose|dosage|medication|medicine|\w+ ?mg)\b|\b\d+\s?mg\b[^.!?\n]{0,40}\b(?:daily|"
            r"twice|every)\b|\byou (?:probably |likely )?have (?:a |an )?(?:infection|"
            r"diabetes|depression|allergy|concussion)\b"
        ),
    ),
    "policy.guarantee": (
        "medium",
        "a guarantee",
        re.compile(
            r"(?i)\b(?:we|i) (?:can )?(?:guarantee|promise)\b|(?<!not )(?<!never )\bguaranteed\b|"
            r"\b100\s?% "
            r"(?:sure|certain|guaranteed)\b|\bwill never happen again\b"
        ),
    ),
}


def _excerpt(text: str, start: int, end: int, redactor: PIIRedactor) -> str:
    lo, hi = max(0, start - _EXCERPT_RADIUS), min(len(text), end + _EXCERPT_RADIUS)
    piece = " ".join(text[lo:hi].split())
    # An excerpt is stored and shown: it never carries the PII it may be about.
    piece = redactor.redact(piece).text
    return f"{'…' if lo else ''}{piece}{'…' if hi < len(text) else ''}"


def _amount(match: re.Match[str]) -> float:
    raw = next(value for value in match.groupdict().values() if value)
    return float(raw.replace(",", ""))


def _contains(text: str, phrase: str) -> int:
    """Where `phrase` occurs as whole words (case-insensitive), or -1."""
    found = re.search(rf"(?i)(?<!\w){re.escape(phrase.strip())}(?!\w)", text)
    return found.start() if found else -1


def _pii_findings(item: AuditedText, rules: Mapping[str, Any], redactor: PIIRedactor) -> list[Any]:
    result = redactor.redact(item.text)
    return [
        (
            f"pii.{finding.kind.lower()}",
            rules.get("pii_severity", "high"),
            f"{finding.kind.lower()} in an answer",
            _excerpt(item.text, finding.start, finding.end, redactor),
        )
        for finding in result.findings
    ]


def _phrase_findings(
    item: AuditedText, rules: Mapping[str, Any], redactor: PIIRedactor
) -> list[Any]:
    found = []
    for rule in rules.get("forbidden_phrases", ()):
        at = _contains(item.text, rule["phrase"])
        if at >= 0:
            end = at + len(rule["phrase"])
            found.append(
                (
                    f"forbidden.{rule['id']}",
                    rule["severity"],
                    f"forbidden phrase {rule['phrase']!r}",
                    _excerpt(item.text, at, end, redactor),
                )
            )
    return found


def _disclaimer_findings(
    item: AuditedText, rules: Mapping[str, Any], redactor: PIIRedactor
) -> list[Any]:
    found = []
    for rule in rules.get("disclaimers", ()):
        by_intent = bool(item.intent) and item.intent in rule.get("intents", ())
        keyword = next((k for k in rule.get("keywords", ()) if _contains(item.text, k) >= 0), None)
        if not (by_intent or keyword) or _contains(item.text, rule["text"]) >= 0:
            continue
        trigger = f"intent {item.intent}" if by_intent else f"keyword {keyword!r}"
        at = 0 if keyword is None else max(0, _contains(item.text, keyword))
        found.append(
            (
                f"disclaimer.{rule['id']}",
                rule["severity"],
                f"required disclaimer missing ({trigger}): {rule['text']!r}",
                _excerpt(item.text, at, at + len(keyword or ""), redactor),
            )
        )
    return found


def _policy_findings(
    item: AuditedText, rules: Mapping[str, Any], redactor: PIIRedactor
) -> list[Any]:
    found = []
    limit = rules.get("max_refund")
    if limit is not None:
        for match in _REFUND_RE.finditer(item.text):
            amount = _amount(match)
            if amount > float(limit):
                found.append(
                    (
                        "policy.refund_above_max",
                        "high",
                        f"refund of {amount:g} promised, above the policy maximum {float(limit):g}",
                        _excerpt(item.text, match.start(), match.end(), redactor),
                    )
                )
    for rule_id, (severity, what, pattern) in _POLICY_PATTERNS.items():
        if rule_id.removeprefix("policy.") not in rules.get("policy_checks", ()):
            continue
        advice = pattern.search(item.text)
        if advice:
            found.append(
                (
                    rule_id,
                    severity,
                    f"answer gives {what}",
                    _excerpt(item.text, advice.start(), advice.end(), redactor),
                )
            )
    return found


_CHECKS = (_pii_findings, _phrase_findings, _disclaimer_findings, _policy_findings)


def audit_text(
    item: AuditedText, rules: Mapping[str, Any], redactor: PIIRedactor | None = None
) -> list[ComplianceFinding]:
    """Every finding of the rules (a compliance_auditor config dict) in one answer."""
    redactor = redactor or PIIRedactor(rules.get("pii_kinds"))
    return [
        ComplianceFinding(
            rule_id, severity, message, excerpt, item.message_id, item.run_id, item.agent_id
        )
        for check in _CHECKS
        for rule_id, severity, message, excerpt in check(item, rules, redactor)
    ]


def summarise(findings: Sequence[ComplianceFinding], audited: int) -> dict[str, Any]:
    severities = Counter(finding.severity for finding in findings)
    return {
        "audited": audited,
        "findings": len(findings),
        "by_severity": {name: severities.get(name, 0) for name in reversed(SEVERITIES)},
        "by_rule": dict(sorted(Counter(finding.rule_id for finding in findings).items())),
        "answers_with_findings": len({(f.message_id, f.run_id) for f in findings}),
    }


def _worst_first(findings: Sequence[ComplianceFinding]) -> list[ComplianceFinding]:
    return sorted(findings, key=lambda finding: -_RANK[finding.severity])  # stable


def parse_period(value: Any) -> tuple[datetime, datetime]:
    """``{"since": ISO, "until": ISO}`` as aware datetimes; ValueError naming the field."""
    if not isinstance(value, Mapping):
        raise ValueError("metadata.audit: expected an object with since and until")
    bounds = []
    for key in ("since", "until"):
        raw = value.get(key)
        try:
            moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"metadata.audit.{key}: not an ISO 8601 date or time") from None
        if raw is None or moment.tzinfo is None:
            raise ValueError(f"metadata.audit.{key}: an ISO 8601 time with a timezone is needed")
        bounds.append(moment)
    if bounds[0] >= bounds[1]:
        raise ValueError("metadata.audit.until: must be after since")
    return bounds[0], bounds[1]


# ------------------------------------------------------------------------------ agent


class ComplianceAuditorAgent(StepAgent):
    """load → audit → record → report; a bad audit period ends in ``rejected``."""

    default_planner: ClassVar[Mapping[str, Any]] = {
        "type": "fsm",
        "definition": {
            "states": {
                "load": {"on_success": "audit", "on_error": "rejected"},
                "audit": {"on_success": "record"},
                "record": {"on_success": "report"},
            },
            "initial_state": "load",
            "final_states": ["report", "rejected"],
        },
    }

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        answers: AnswerSource | None = None,
        sink: FindingSink | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        self.answers = answers
        self.sink = sink
        self.redactor = PIIRedactor(self.config.get("pii_kinds"))

    async def step_load(self, state: AgentState) -> Any:
        work: dict[str, Any] = {"period": None}
        state.context[_WORK] = work
        request = (state.context.get("metadata") or {}).get("audit")
        if request is None:
            intent = str((state.context.get("metadata") or {}).get("intent") or "")
            run_id = str(state.context.get("run_id") or "")
            work["items"] = [AuditedText(state.message, intent, run_id=run_id)]
            return {"mode": "message", "answers": 1}
        try:
            since, until = parse_period(request)
            if self.answers is None:
                raise ValueError("metadata.audit: this agent cannot read stored answers")
        except ValueError as exc:
            work["error"] = str(exc)
            return StepOutcome.failed(str(exc))
        limit = int(self.config.get("max_answers", 1000))
        work["items"] = list(await self.answers.answers(since, until, limit=limit))
        work["period"] = {"since": since.isoformat(), "until": until.isoformat()}
        return {"mode": "period", "answers": len(work["items"])}

    async def step_audit(self, state: AgentState) -> Any:
        work = state.context[_WORK]
        work["findings"] = [
            finding
            for item in work["items"]
            for finding in audit_text(item, self.config, self.redactor)
        ]
        return {"findings": len(work["findings"])}

    async def step_record(self, state: AgentState) -> Any:
        findings = state.context[_WORK]["findings"]
        if self.sink is not None and findings:
            await self.sink.record(findings, audit_run_id=str(state.context.get("run_id") or ""))
        return {"recorded": len(findings) if self.sink is not None else 0}

    async def step_report(self, state: AgentState) -> Any:
        work = state.context[_WORK]
        findings: list[ComplianceFinding] = work["findings"]
        summary = summarise(findings, len(work["items"]))
        summary["listed"] = min(len(findings), _LISTED)
        # "never": findings are recorded and reported, nobody is asked to look.
        threshold = _RANK.get(str(self.config.get("escalate_on", "high")), len(SEVERITIES))
        worst = max((_RANK[f.severity] for f in findings), default=-1)
        escalate = worst >= threshold
        counts = ", ".join(f"{n} {s}" for s, n in summary["by_severity"].items() if n)
        content = f"Audited {summary['audited']} answer(s): {len(findings)} finding(s)" + (
            f" ({counts})." if counts else "."
        )
        finish(
            state,
            content=content,
            output={
                "mode": "period" if work["period"] else "message",
                "period": work["period"],
                "summary": summary,
                # Every finding is in the audit log; the run's result lists the worst ones.
                "findings": [finding.as_dict() for finding in _worst_first(findings)[:_LISTED]],
            },
            intent="COMPLIANCE_AUDIT",
            escalate=escalate,
            reason=f"compliance: {SEVERITIES[worst]} severity finding" if escalate else None,
        )
        return summary

    async def step_rejected(self, state: AgentState) -> Any:
        error = str(state.context.get(_WORK, {}).get("error") or "bad audit request")
        field, _, reason = error.partition(": ")
        finish(
            state,
            content=f"Cannot audit: {error}",
            output={"error": {"field": field, "reason": reason or error}},
            intent="COMPLIANCE_AUDIT",
            confidence=0.0,
        )
        return {"error": error}
