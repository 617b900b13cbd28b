"""``triage_agent``: category, priority, queue and duplicates of a support ticket, offline.

* **Category**: the tenant's categories, each a list of keywords and phrases; the category
  with the most weight of matches wins (subject lines count twice), else ``default_category``.
* **Priority** ``critical|high|medium|low`` from urgency cues: an outage, a security or legal
  word is critical; being blocked, a failed payment, a deadline is high; a question or a
  suggestion is low; anything else medium. The customer's tier (``metadata.tier``) and a
  frustrated tone (the sentiment monitor's `score_sentiment`) raise it by a level, up to high.
* **Queue**: the first routing rule whose conditions all hold (category, priority, tier, any
  of its keywords), else ``default_queue``.
* **Duplicates**: cosine similarity of the ticket with the tenant's recent tickets of this
  agent (`TicketHistory` port, embedded with the platform's embedder) at or above
  ``duplicate_threshold``.
* **Write-back**: with ``update_ticket`` granted and a ticket system in ``tool_settings``,
  the decision goes back to the ticket (priority, tags for category and queue, an internal
  note) through the run's tool invoker, at the tool's safety level: a call that needs
  approval pauses the plan, and the run waits for a person to approve the update.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol

from agentflow.kernel.agents import AgentState
from agentflow.kernel.blueprints.base import StepAgent, finish
from agentflow.kernel.planning.model import StepOutcome
from agentflow.kernel.planning.runtime import CURRENT_NODE
from agentflow.kernel.sentiment import customer_text, score_sentiment
from agentflow.kernel.vectors import Embedder, embed_texts

__all__ = [
    "DEFAULT_CATEGORIES",
    "DEFAULT_PRIORITY_CUES",
    "DEFAULT_ROUTING_RULES",
    "DEFAULT_TIER_BOOST",
    "PRIORITIES",
    "PastTicket",
    "TicketHistory",
    "TicketTarget",
    "TriageAgent",
    "classify_category",
    "match_rule",
    "prioritize",
    "ticket_target",
    "ticket_update",
]

PRIORITIES = ("low", "medium", "high", "critical")


def _phrases(text: str) -> list[str]:
    """Comma-separated phrases: keeps the long default lists readable."""
    return [phrase.strip() for phrase in text.split(",") if phrase.strip()]


# Weights: a feature request mentions the feature's technical words ("export", "API"), and a
# security report the account's ("log in"), so their own markers count more.
DEFAULT_CATEGORIES: list[dict[str, Any]] = [
    {
        "name": "security",
        "weight": 1.5,
        "keywords": _phrases(
            "hacked, breach, compromised, phishing, suspicious, unauthorized, unauthorised, "
            "vulnerability, exploit, leaked, leak, xss, injection, malware, security, "
            "someone logged, someone else, api key exposed, api token, ddos, brute force, "
            "fraudulent, penetration test, cve, exposed, ransom, encrypted, encryption, "
            "impersonating, soc 2, oauth, connected apps, plain text, wasn't me, "
            "didn't do that, don't recognise, don't recognize, without my consent, "
            "other customers, other companies, other workspaces, former employee, "
            "terminated, bug bounty, tls, audit log, enforce, data is hosted, data hosted, "
            "yubikey, security key, saml certificate, antivirus, trojan, session, sessions"
        ),
    },
    {
        "name": "billing",
        "weight": 1.0,
        "keywords": _phrases(
            "invoice, invoices, charged, charge, charges, refund, refunded, billing, billed, "
            "payment, payments, credit card, subscription, pricing, price, receipt, "
            "receipts, vat, tax, discount, coupon, renewal, renewed, overcharged, "
            "double charged, bank, paid, pay, upgrade, upgraded, downgrade, downgraded, "
            "trial, seats, licence, license, purchase order, chargeback, dispute, "
            "card declined, cost, currency, student, nonprofit, plan, paypal, wire"
        ),
    },
    {
        "name": "account",
        "weight": 1.0,
        "keywords": _phrases(
            "log in, login, logged out, logging me out, log into, sign in, signin, sign-in, "
            "password, locked out, account locked, two-factor, 2fa, mfa, authenticator, "
            "username, email address, delete my account, close my account, sso, scim, "
            "verification, reset link, profile, account owner, ownership, invite, invited, "
            "deactivate, deactivated, reactivate, gdpr, personal data, my data, account, "
            "accounts, admin, admin rights, members, language, merge, my login, magic link"
        ),
    },
    {
        "name": "shipping",
        "weight": 1.0,
        "keywords": _phrases(
            "shipping, ship, shipped, shipment, shipments, delivery, delivered, package, "
            "packaging, parcel, tracking, courier, order, ordered, arrived, arrive, "
            "dispatch, dispatched, customs, duties, return label, warehouse, damaged, "
            "lost in transit, in transit, address change, carrier, ups, fedex, dhl, usps, "
            "missing item, wrong item, pickup, postcode, gift wrapping"
        ),
    },
    {
        "name": "technical",
        "weight": 1.0,
        "keywords": _phrases(
            "error, errors, bug, crash, crashes, crashing, broken, not working, fails, "
            "failed, failing, timeout, timed out, slow, api, 500, 502, 503, 404, 429, sync, "
            "syncing, integration, webhook, webhooks, export, import, upload, uploading, "
            "download, outage, down, not loading, blank page, freezes, latency, sdk, "
            "endpoint, server, database, app, mobile, browser, exception, stack trace, "
            "doesn't work, does not work, glitch, performance, search, formula, zapier, "
            "trigger, timestamps, dashboard, page, widget, embed, chart, typo, print, "
            "notifications, shortcut, shortcuts, firefox, chrome, safari, android, ios"
        ),
    },
    {
        "name": "feature_request",
        "weight": 2.5,
        "keywords": _phrases(
            "feature request, would be nice, would be great, would be fun, would love, "
            "suggestion, please add, please consider, could you add, can you add, "
            "it would help, roadmap, any plans, any roadmap plans, consider adding, "
            "would you consider, have you considered, enhancement, idea, small wish, "
            "we'd like the option, we'd like the ability, we need custom, is this planned, any plan"
        ),
    },
]

DEFAULT_PRIORITY_CUES: dict[str, list[str]] = {
    "critical": _phrases(
        "outage, is down, are down, went down, site down, site is down, service down, "
        "production down, prod is down, effectively down, all users, all of our users, "
        "all our customers, all of us, none of us, entire team, whole team, "
        "whole company, whole platform, nobody can, no one can, data loss, lost all, "
        "nobody on our, nobody in our, nobody in the company, no one on our, no one in our, "
        "deleted all, data is gone, hacked, breach, compromised, data leak, leaked, "
        "exposed, ransomware, ransom, lawsuit, legal action, our lawyer, my attorney, "
        "attorney, fraudulent charges, completely down, every request, all requests, "
        "losing sales, losing orders, impersonating"
    ),
    "high": _phrases(
        "urgent, urgently, asap, as soon as possible, immediately, emergency, "
        "cannot log in, can't log in, cant log in, unable to log in, cannot login, "
        "can't login, unable to login, cannot sign in, can't sign in, locked out, "
        "can't access, cannot access, unable to access, blocked, completely stuck, "
        "can't use, cannot use, can't do my, can't bill, charged twice, double charged, "
        "overcharged, two charges, payment failed, card declined, deadline, by tomorrow, "
        "by end of day, end of day, eod, tonight, this today, it today, know today, "
        "date today, tomorrow, chargeback, dispute, unauthorized, unauthorised, "
        "vulnerability, responsible disclosure, security researcher, malware, "
        "never arrived, lost in transit, wrong item, damaged, shattered, missing from, "
        "payroll, customers aren't, customers are complaining, losing money, "
        "suspended, is offline, page offline, wasn't me, it wasn't me, i did not do this, "
        "i didn't do this, did not do that, don't recognise, "
        "don't recognize"
    ),
    "low": _phrases(
        "how do i, how can i, how to, is it possible, quick question, just wondering, "
        "wondering, just curious, curious, would be nice, would be great, would love, "
        "suggestion, feature request, no rush, when you get a chance, when you have time, "
        "not urgent, no hurry, not a big deal, minor, small thing, cosmetic, typo, "
        "feedback, any plans, roadmap, please add, consider adding, just some feedback"
    ),
    # A question without any of these is a request for information: low.
    "problem": _phrases(
        "error, fail, fails, failed, wrong, broken, not working, doesn't, does not, "
        "didn't, did not, can't, cannot, never, missing, stuck, charged, billed, crash, "
        "crashes, still, lost, damaged, late, delayed, isn't, won't, hasn't, haven't, "
        "keeps, mistake, expired, rejected, declined, not showing, instead of, twice"
    ),
}

DEFAULT_ROUTING_RULES: list[dict[str, Any]] = [
    {"category": "technical", "priority": "critical", "queue": "incidents"},
    {"category": "security", "queue": "security"},
    {"category": "billing", "queue": "billing"},
    {"category": "account", "queue": "accounts"},
    {"category": "shipping", "queue": "logistics"},
    {"category": "technical", "queue": "tech-support"},
    {"category": "feature_request", "queue": "product"},
]

DEFAULT_TIER_BOOST: dict[str, int] = {"enterprise": 1, "premium": 1}


@lru_cache(maxsize=4096)
def _pattern(phrase: str) -> re.Pattern[str]:
    # Word boundaries where the phrase starts/ends with a word character ("api" not "rapid").
    start = r"\b" if phrase[:1].isalnum() else ""
    end = r"\b" if phrase[-1:].isalnum() else ""
    return re.compile(start + re.escape(phrase.lower()) + end)


def _normal(text: str) -> str:
    return text.lower().replace("\u2019", "'").replace("\u2018", "'")


def _matches(text: str, phrases: Sequence[str]) -> list[str]:
    return [phrase for phrase in phrases if _pattern(phrase).search(text)]


def classify_category(
    subject: str, body: str, categories: Sequence[Mapping[str, Any]], default: str
) -> tuple[str, float, dict[str, float]]:
    """(category, confidence, scores): weighted keyword matches, the subject's count twice.

    A phrase of n words weighs 1 + (n - 1) / 2, times its category's ``weight``; ties go to
    the category listed first.
    """
    subject, body = _normal(subject), _normal(body)
    scores: dict[str, float] = {}
    for category in categories:
        score = 0.0
        for phrase in category["keywords"]:
            pattern = _pattern(phrase.lower())
            hits = 2 * bool(pattern.search(subject)) + bool(pattern.search(body))
            score += (1.0 + 0.5 * phrase.count(" ")) * hits
        if score:
            scores[category["name"]] = round(score * float(category.get("weight", 1.0)), 3)
    if not scores:
        return default, 0.0, {}
    best = max(scores, key=lambda name: scores[name])  # first listed wins a tie
    return best, round(scores[best] / sum(scores.values()), 3), scores


_QUESTION_START = re.compile(
    r"^\s*(do|does|is|are|can|could|how|what|what's|which|where can|when|would)\b"
)


def _is_question(subject: str, body: str) -> bool:
    """Whether the ticket opens with a question (its subject or its first sentence)."""
    first = re.split(r"(?<=[.?!])\s", body.strip(), maxsplit=1)[0]
    first = re.sub(r"^(hi|hello|hey)\b[^a-z]*", "", first)  # "Hi! Do you ship..."
    return any(_QUESTION_START.match(part) and "?" in part for part in (subject, first))


def _level(
    subject: str,
    body: str,
    category: str,
    cues: Mapping[str, Sequence[str]],
    low_categories: Sequence[str],
) -> tuple[int, list[str]]:
    """The level (0 low .. 3 critical) the text's own cues give, and why."""
    text = f"{subject}\n{body}"
    calm = _matches(text, cues.get("low", ()))
    # "not urgent", "no rush": a calm phrase's words never count as urgency.
    urgent_text = text
    for phrase in calm:
        urgent_text = _pattern(phrase).sub(" ", urgent_text)
    for name, level in (("critical", 3), ("high", 2)):
        found = _matches(urgent_text, cues.get(name, ()))
        if found:
            return level, [f"{name}: {cue}" for cue in found[:3]]
    if calm:
        return 0, [f"low: {cue}" for cue in calm[:3]]
    if category in low_categories:
        return 0, [f"low: category {category}"]
    if _is_question(subject, body) and not _matches(text, cues.get("problem", ())):
        return 0, ["low: a question, no problem reported"]
    return 1, []


def prioritize(
    subject: str,
    body: str,
    category: str,
    *,
    cues: Mapping[str, Sequence[str]],
    tier: str | None,
    tier_boost: Mapping[str, int],
    compound: float,
    frustration_threshold: float | None,
    low_categories: Sequence[str] = ("feature_request",),
) -> tuple[str, list[str]]:
    """(priority, reasons): the strongest urgency cue, then tier and tone raise it to high."""
    level, reasons = _level(_normal(subject), _normal(body), category, cues, low_categories)
    boost = int(tier_boost.get((tier or "").lower(), 0))
    if boost and level < 2:
        level = min(level + boost, 2)
        reasons.append(f"tier {tier} +{boost}")
    if frustration_threshold is not None and compound <= frustration_threshold and level < 2:
        level += 1
        reasons.append(f"frustrated tone ({compound:+.2f})")
    return PRIORITIES[level], reasons


def match_rule(
    rules: Sequence[Mapping[str, Any]],
    *,
    text: str,
    category: str,
    priority: str,
    tier: str | None,
) -> int | None:
    """Index of the first rule whose every condition holds (keywords: any of them)."""
    text = _normal(text)
    for index, rule in enumerate(rules):
        if rule.get("category") not in (None, category):
            continue
        if rule.get("priority") not in (None, priority):
            continue
        if rule.get("tier") not in (None, (tier or "").lower()):
            continue
        keywords = rule.get("keywords")
        if keywords and not _matches(text, keywords):
            continue
        return index
    return None


# ------------------------------------------------------------------------------ the agent


@dataclass(frozen=True, slots=True)
class PastTicket:
    run_id: str
    text: str
    created_at: datetime
    ticket_id: str = ""


class TicketHistory(Protocol):
    """Tickets this agent triaged since `since` (newest first, at most `limit`), one tenant."""

    async def recent_tickets(self, *, since: datetime, limit: int) -> Sequence[PastTicket]: ...


# ------------------------------------------------------------------------- write-back

# Our priorities in the ticket tools' terms (Zendesk's; the Jira tool maps them on).
TICKET_PRIORITY = {"critical": "urgent", "high": "high", "medium": "normal", "low": "low"}
TICKET_SYSTEMS = ("zendesk", "jira")
WRITE_BACK_TOOL = "update_ticket"
_TAG_UNSAFE = re.compile(r"[^a-z0-9_.-]+")
# A ticket rule's run names its ticket "<system>:ticket:<id>" or "<system>:issue:<key>".
_TICKET_KEY = re.compile(r"^(zendesk|jira):(?:ticket|issue):([A-Za-z0-9_-]{1,40})$")
_TICKET_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


@dataclass(frozen=True, slots=True)
class TicketTarget:
    """The ticket a decision is written to: its system (None: the only one configured)."""

    system: str | None
    ticket_id: str


def ticket_target(metadata: Mapping[str, Any]) -> TicketTarget | None:
    """The run's ticket: a webhook rule's ``ticket_key``, else ``ticket_id`` (and
    ``ticket_system``) of the run's metadata; None when it names no usable ticket."""
    found = _TICKET_KEY.match(str(metadata.get("ticket_key") or ""))
    if found:
        return TicketTarget(found.group(1), found.group(2))
    ticket_id = str(metadata.get("ticket_id") or "")
    if not _TICKET_ID.match(ticket_id):
        return None
    system = str(metadata.get("ticket_system") or "").lower() or None
    return TicketTarget(system if system in TICKET_SYSTEMS else None, ticket_id)


def _tag(prefix: str, value: str) -> str:
    return (prefix + _TAG_UNSAFE.sub("-", value.lower()).strip("-"))[:80]


def ticket_update(
    triage: Mapping[str, Any], target: TicketTarget, systems: Sequence[str]
) -> dict[str, Any]:
    """``update_ticket``'s arguments for a decision: priority, tags added (the ticket's own
    are kept), and an internal note saying why."""
    note = (
        f"AgentFlow triage: {triage['category']} / {triage['priority']} -> queue {triage['queue']}."
    )
    if triage.get("priority_reasons"):
        note += f" Priority raised: {', '.join(triage['priority_reasons'])}."
    duplicates = triage.get("duplicates") or []
    if duplicates:
        first = duplicates[0]
        same = first.get("ticket_id") or f"run {first['run_id']}"
        note += f" Possible duplicate of {same} (similarity {first['similarity']})."
    arguments: dict[str, Any] = {
        "ticket_id": target.ticket_id,
        "priority": TICKET_PRIORITY[str(triage["priority"])],
        "add_tags": [_tag("category_", triage["category"]), _tag("queue_", triage["queue"])],
        "comment": note,
    }
    if len(systems) > 1:
        arguments["system"] = target.system
    return arguments


class TriageAgent(StepAgent):
    """classify → prioritize → route → deduplicate → [write_back] → report."""

    default_planner = {
        "type": "fsm",
        "definition": {
            "states": {
                "classify": {"on_success": "prioritize"},
                "prioritize": {"on_success": "route"},
                "route": {"on_success": "deduplicate"},
                # Without the history the ticket is still triaged, without duplicates (and
                # not written back: a note would miss what it could not compare).
                "deduplicate": {
                    "conditional_transitions": [
                        {"condition": "state.write_back == true", "target": "write_back"}
                    ],
                    "on_success": "report",
                    "on_error": "report",
                },
                "write_back": {"on_success": "report", "on_error": "report"},
            },
            "initial_state": "classify",
            "final_states": ["report"],
        },
    }

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        history: TicketHistory,
        embedder: Embedder,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        self.history = history
        self.embedder = embedder

    def _metadata(self, state: AgentState) -> Mapping[str, Any]:
        metadata = state.context.get("metadata")
        return metadata if isinstance(metadata, Mapping) else {}

    def _ticket(self, state: AgentState) -> tuple[str, str]:
        """(subject, body); a ticket rule's run names its subject ``ticket_label``."""
        metadata = self._metadata(state)
        subject = str(metadata.get("subject") or metadata.get("ticket_label") or "")
        return subject, customer_text(state.message)

    def _ticket_id(self, state: AgentState) -> str:
        metadata = self._metadata(state)
        return str(metadata.get("ticket_id") or metadata.get("ticket_key") or "")

    def _tier(self, state: AgentState) -> str | None:
        tier = self._metadata(state).get("tier") or state.plan_state.user.get("tier")
        return str(tier).lower() if tier else None

    async def step_classify(self, state: AgentState) -> dict[str, Any]:
        subject, body = self._ticket(state)
        categories = self.config.get("categories") or DEFAULT_CATEGORIES
        default = str(self.config.get("default_category", "general"))
        category, confidence, scores = classify_category(subject, body, categories, default)
        state.plan_state.intent = {"name": category, "confidence": confidence}
        state.plan_state.state["triage"] = {
            "category": category,
            "category_confidence": confidence,
            "category_scores": scores,
        }
        return {"category": category, "confidence": confidence}

    async def step_prioritize(self, state: AgentState) -> dict[str, Any]:
        subject, body = self._ticket(state)
        triage = state.plan_state.state["triage"]
        sentiment = score_sentiment(f"{subject}\n{body}")
        threshold = self.config.get("frustration_threshold", -0.6)
        priority, reasons = prioritize(
            subject,
            body,
            triage["category"],
            cues=self.config.get("priority_cues") or DEFAULT_PRIORITY_CUES,
            tier=self._tier(state),
            tier_boost=self.config.get("tier_boost", DEFAULT_TIER_BOOST),
            compound=sentiment.compound,
            frustration_threshold=None if threshold is None else float(threshold),
        )
        triage.update(
            priority=priority,
            priority_reasons=reasons,
            tier=self._tier(state),
            sentiment=sentiment.to_dict(),
        )
        return {"priority": priority}

    async def step_route(self, state: AgentState) -> dict[str, Any]:
        subject, body = self._ticket(state)
        triage = state.plan_state.state["triage"]
        rules = self.config.get("routing_rules")
        rules = DEFAULT_ROUTING_RULES if rules is None else rules
        index = match_rule(
            rules,
            text=f"{subject}\n{body}",
            category=triage["category"],
            priority=triage["priority"],
            tier=triage["tier"],
        )
        queue = rules[index]["queue"] if index is not None else self.config.get("default_queue")
        triage.update(queue=queue or "general", routing_rule=index)
        state.plan_state.state["write_back"] = self._plan_write_back(state)
        return {"queue": triage["queue"], "rule": index}

    def _systems(self) -> list[str]:
        """The ticket systems the agent's ``update_ticket`` reaches (none: not granted)."""
        if WRITE_BACK_TOOL not in (self.config.get("tools") or ()):
            return []
        settings = self.config.get("tool_settings") or {}
        return [name for name in TICKET_SYSTEMS if settings.get(name)]

    def _plan_write_back(self, state: AgentState) -> bool:
        """Whether the decision can go back to the ticket; why not, in the output, when the
        agent has a ticket system but this run cannot write to it."""
        systems = self._systems()
        if not systems:
            return False  # no ticket tools: the triage is the run's answer only
        target = ticket_target(self._metadata(state))
        reason = None
        if target is None:
            reason = "no ticket id in the run's metadata (ticket_id or a rule's ticket_key)"
        elif target.system is not None and target.system not in systems:
            reason = f"the ticket is in {target.system}, which this agent has no settings for"
        elif target.system is None and len(systems) > 1:
            reason = "both systems are configured: say which in metadata.ticket_system"
        elif self.tool_invoker(state) is None:
            reason = "this run has no tool invoker"
        if reason is not None:
            state.plan_state.state["triage"]["write_back"] = {"status": "skipped", "reason": reason}
            return False
        assert target is not None
        system = target.system or systems[0]
        state.plan_state.state["ticket"] = {"system": system, "ticket_id": target.ticket_id}
        return True

    async def step_write_back(self, state: AgentState) -> Any:
        """``update_ticket`` with the decision; a call that needs approval pauses the plan
        (the run waits for a person, with the triage as its proposed answer)."""
        triage = state.plan_state.state["triage"]
        ticket = state.plan_state.state.get("ticket")
        invoker = self.tool_invoker(state)
        if not ticket or invoker is None:
            return StepOutcome.failed("write_back: no ticket to write to")
        target = TicketTarget(ticket["system"], ticket["ticket_id"])
        arguments = ticket_update(triage, target, self._systems())
        token = CURRENT_NODE.set("write_back")  # the ToolCall names the step that made it
        try:
            outcome = await invoker(WRITE_BACK_TOOL, arguments)
        finally:
            CURRENT_NODE.reset(token)
        status = str(getattr(outcome, "status", "error"))
        record = {**ticket, "priority": arguments["priority"], "tags": arguments["add_tags"]}
        if status == "ok":
            triage["write_back"] = {**record, "status": "written"}
            return {"written": True}
        if status == "needs_approval":
            triage["write_back"] = {**record, "status": "awaiting_approval"}
            await self.step_report(state)  # what the reviewer reads while the call waits
            reason = f"ticket update needs approval: {WRITE_BACK_TOOL} {target.ticket_id}"
            state.plan_state.state["escalation_reason"] = reason
            return StepOutcome("paused", error=reason)
        error = f"{status}: {getattr(outcome, 'error', None) or status}"
        triage["write_back"] = {**record, "status": "failed", "error": error[:500]}
        return StepOutcome.failed(f"write_back: {error}"[:500])

    async def step_deduplicate(self, state: AgentState) -> dict[str, Any]:
        triage = state.plan_state.state["triage"]
        window = float(self.config.get("duplicate_window_days", 14))
        since = datetime.now(UTC) - timedelta(days=window)
        limit = int(self.config.get("duplicate_candidates", 200))
        tickets = await self.history.recent_tickets(since=since, limit=limit)
        ticket_id = self._ticket_id(state)
        # A ticket triaged again (an update of the same ticket) is not its own duplicate.
        candidates = [t for t in tickets if not (ticket_id and t.ticket_id == ticket_id)]
        subject, body = self._ticket(state)
        found = await self._similar(f"{subject}\n{body}".strip(), candidates)
        triage["duplicates"] = found[:5]
        return {"duplicates": len(found)}

    async def _similar(self, text: str, candidates: Sequence[PastTicket]) -> list[dict[str, Any]]:
        """Candidates at or above ``duplicate_threshold`` cosine similarity, most similar first."""
        if not candidates:
            return []
        texts = [text] + [customer_text(t.text) for t in candidates]
        matrix = await embed_texts(self.embedder, texts)
        similarities = [float(score) for score in matrix[1:] @ matrix[0]]
        threshold = float(self.config.get("duplicate_threshold", 0.6))
        ranked = sorted(
            (pair for pair in zip(similarities, candidates, strict=True) if pair[0] >= threshold),
            key=lambda pair: -pair[0],
        )
        return [
            {
                "run_id": ticket.run_id,
                "ticket_id": ticket.ticket_id or None,
                "similarity": round(score, 4),
            }
            for score, ticket in ranked
        ]

    async def step_report(self, state: AgentState) -> None:
        triage = state.plan_state.state["triage"]
        triage.setdefault("duplicates", None)  # None: the history could not be read
        duplicates = triage["duplicates"] or []
        output = {
            "category": triage["category"],
            "priority": triage["priority"],
            "queue": triage["queue"],
            "sentiment": triage["sentiment"],
            "tier": triage["tier"],
            "duplicate_of": duplicates[0]["run_id"] if duplicates else None,
            "duplicates": triage["duplicates"],
            "routing_rule": triage["routing_rule"],
            "reasons": triage["priority_reasons"],
            "category_confidence": triage["category_confidence"],
        }
        if "write_back" in triage:  # only an agent with a ticket system writes back
            output["write_back"] = triage["write_back"]
        content = f"{output['category']} / {output['priority']} -> queue {output['queue']}"
        if output["duplicate_of"]:
            content += f" (possible duplicate of run {output['duplicate_of']})"
        written = triage.get("write_back") or {}
        if written.get("status") == "written":
            content += f"; written to {written['system']} ticket {written['ticket_id']}"
        finish(
            state,
            content=content,
            output=output,
            confidence=max(triage["category_confidence"], 0.0),
            intent=triage["category"],
        )
