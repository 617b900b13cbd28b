"""triage_agent offline: category, priority, routing and duplicates on realistic tickets."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agentflow.kernel.agents import AgentRunResult
from agentflow.kernel.blueprints.triage import PastTicket, TriageAgent
from agentflow.kernel.guardrails import wrap_untrusted
from agentflow.kernel.llm.embeddings import OfflineEmbedder
from agentflow.kernel.planning.model import StepRecord

DATA = Path(__file__).resolve().parents[2] / "data" / "triage_tickets.jsonl"
TICKETS = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
# Measured with bench/triage_accuracy.py (0.8966 and 0.9261 on the 203 tickets); the floors
# leave a ticket or two of slack for a tweak of the cues, not more.
PRIORITY_FLOOR = 0.88
ROUTING_FLOOR = 0.91
NOW = datetime.now(UTC)


def path(result: AgentRunResult) -> list[StepRecord]:
    assert result.plan is not None
    return result.plan.path


class Tickets:
    """The agent's recent tickets, newest first."""

    def __init__(self, tickets: Sequence[PastTicket] = ()) -> None:
        self.tickets = list(tickets)
        self.asked: list[tuple[datetime, int]] = []

    async def recent_tickets(self, *, since: datetime, limit: int) -> Sequence[PastTicket]:
        self.asked.append((since, limit))
        return [t for t in self.tickets if t.created_at >= since][:limit]


async def triage(
    body: str,
    *,
    subject: str = "",
    config: dict[str, Any] | None = None,
    history: Tickets | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    agent = TriageAgent(config or {}, history=history or Tickets(), embedder=OfflineEmbedder())
    context = {"metadata": {"subject": subject, **metadata}}
    result = await agent.run(body, user_id="zendesk", context=context)
    output: dict[str, Any] = result.state.plan_state.state["output"]
    return output


def test_the_labelled_set_is_large_varied_and_consistent() -> None:
    assert len(TICKETS) >= 200
    assert len({t["subject"] for t in TICKETS}) == len(TICKETS)
    categories = Counter(t["category"] for t in TICKETS)
    assert set(categories) == {
        "billing",
        "technical",
        "account",
        "shipping",
        "security",
        "feature_request",
    }
    assert min(categories.values()) >= 30
    priorities = Counter(t["priority"] for t in TICKETS)
    assert set(priorities) == {"critical", "high", "medium", "low"}
    words = sorted(len(t["body"].split()) for t in TICKETS)
    assert words[0] >= 6
    assert words[len(words) // 2] >= 20


async def test_priority_and_routing_accuracy_on_the_labelled_set() -> None:
    agent = TriageAgent({}, history=Tickets(), embedder=OfflineEmbedder())
    priority = routing = 0
    for ticket in TICKETS:
        context = {"metadata": {"subject": ticket["subject"], **ticket["metadata"]}}
        result = await agent.run(ticket["body"], user_id="bench", context=context)
        output = result.state.plan_state.state["output"]
        priority += output["priority"] == ticket["priority"]
        routing += output["queue"] == ticket["queue"]
    assert priority / len(TICKETS) >= PRIORITY_FLOOR
    assert routing / len(TICKETS) >= ROUTING_FLOOR


async def test_an_outage_is_critical_and_goes_to_incidents() -> None:
    output = await triage(
        "Since 14:05 UTC every request to the API returns 503. Checkout is down for all "
        "our customers.",
        subject="API down",
    )
    assert (output["category"], output["priority"], output["queue"]) == (
        "technical",
        "critical",
        "incidents",
    )
    assert any(reason.startswith("critical:") for reason in output["reasons"])


async def test_the_customer_tier_raises_the_priority() -> None:
    body = "The export to CSV leaves out the last column of the report."
    assert (await triage(body))["priority"] == "medium"
    enterprise = await triage(body, tier="Enterprise")
    assert enterprise["priority"] == "high"
    assert enterprise["tier"] == "enterprise"
    assert "tier enterprise +1" in enterprise["reasons"]


async def test_calm_phrases_never_count_as_urgency() -> None:
    output = await triage(
        "The date picker shows Sunday as the first day of the week. Not urgent, just a "
        "cosmetic thing."
    )
    assert output["priority"] == "low"


async def test_a_frustrated_tone_raises_the_priority() -> None:
    body = "Your CSV export has cut off the last column for weeks."
    angry = body + " This is ridiculous and a waste of time, I'm fed up."
    assert (await triage(body))["priority"] == "medium"
    output = await triage(angry)
    assert output["priority"] == "high"
    assert output["sentiment"]["label"] == "negative"


async def test_tenant_routing_rules_keywords_priority_and_tier_then_default() -> None:
    config = {
        "routing_rules": [
            {"keywords": ["refund", "chargeback"], "queue": "refunds"},
            {"tier": "enterprise", "queue": "enterprise-desk"},
            {"priority": "critical", "queue": "on-call"},
            {"category": "billing", "queue": "finance"},
        ],
        "default_queue": "triage-inbox",
    }
    refund = await triage("Please refund the duplicate charge from March 3rd.", config=config)
    assert (refund["queue"], refund["routing_rule"]) == ("refunds", 0)
    vip = await triage("The invoice has the wrong VAT number.", config=config, tier="enterprise")
    assert vip["queue"] == "enterprise-desk"
    outage = await triage("The whole platform is down for everyone on our team.", config=config)
    assert outage["queue"] == "on-call"
    invoice = await triage("The invoice has the wrong VAT number.", config=config)
    assert invoice["queue"] == "finance"
    other = await triage("Do you ship to Canada?", config=config)
    assert (other["queue"], other["routing_rule"]) == ("triage-inbox", None)


async def test_tenant_categories_replace_the_default_ones() -> None:
    config = {
        "categories": [
            {"name": "returns", "keywords": ["return", "exchange", "wrong size"]},
            {"name": "orders", "keywords": ["order", "delivery"]},
        ],
        "default_category": "other",
        "routing_rules": [{"category": "returns", "queue": "returns-desk"}],
    }
    output = await triage("I'd like to exchange the jacket, wrong size.", config=config)
    assert (output["category"], output["queue"]) == ("returns", "returns-desk")
    assert (await triage("Hello there", config=config))["category"] == "other"


async def test_a_reworded_report_of_an_open_ticket_is_a_duplicate() -> None:
    history = Tickets(
        [
            PastTicket(
                "run-1",
                "Checkout widget down on our store\nThe embedded checkout widget is not "
                "loading on our store at all - customers see a blank box.",
                NOW - timedelta(hours=2),
                ticket_id="ZD-100",
            ),
            PastTicket(
                "run-2",
                "Charged twice for March\nThere are two charges of $49 from you on March 3rd.",
                NOW - timedelta(hours=1),
                ticket_id="ZD-101",
            ),
        ]
    )
    output = await triage(
        "Our store checkout widget is not loading, customers just see an empty box instead "
        "of the payment form.",
        subject="Checkout widget not loading",
        history=history,
        ticket_id="ZD-140",
    )
    assert output["duplicate_of"] == "run-1"
    assert [d["ticket_id"] for d in output["duplicates"]] == ["ZD-100"]
    assert output["duplicates"][0]["similarity"] >= 0.6


async def test_the_same_ticket_triaged_again_is_not_its_own_duplicate() -> None:
    text = "The embedded checkout widget is not loading on our store at all."
    history = Tickets([PastTicket("run-1", text, NOW, ticket_id="ZD-100")])
    again = await triage(text, history=history, ticket_id="ZD-100")
    assert again["duplicates"] == []
    assert again["duplicate_of"] is None


async def test_duplicates_are_looked_for_within_the_window_only() -> None:
    text = "The embedded checkout widget is not loading on our store at all."
    history = Tickets([PastTicket("run-old", text, NOW - timedelta(days=30))])
    output = await triage(text, history=history, config={"duplicate_window_days": 7})
    assert output["duplicates"] == []
    since, limit = history.asked[0]
    assert timedelta(days=6.9) < NOW - since < timedelta(days=7.1)
    assert limit == 200


def test_distinct_tickets_of_the_set_are_never_duplicates_at_the_default_threshold() -> None:
    embedder = OfflineEmbedder()
    matrix = embedder.embed_array([f"{t['subject']}\n{t['body']}" for t in TICKETS])
    similarities = matrix @ matrix.T
    for index in range(len(TICKETS)):
        similarities[index, index] = 0.0
    assert float(similarities.max()) < 0.6


async def test_an_unavailable_history_still_triages_without_duplicates() -> None:
    class Down:
        async def recent_tickets(self, *, since: datetime, limit: int) -> Sequence[PastTicket]:
            raise ConnectionError("database unavailable")

    agent = TriageAgent({}, history=Down(), embedder=OfflineEmbedder())
    result = await agent.run("I was charged twice this month, please refund one.")
    output = result.state.plan_state.state["output"]
    assert (output["category"], output["priority"]) == ("billing", "high")
    assert output["duplicates"] is None
    assert [s.node for s in path(result)] == [
        "classify",
        "prioritize",
        "route",
        "deduplicate",
        "report",
    ]


@pytest.mark.parametrize(
    ("body", "category", "priority"),
    [
        (
            "Someone logged into my account from another country and changed the payout "
            "bank details. I did not do this!",
            "security",
            "high",
        ),
        ("My parcel says delivered but it never arrived, it was a $400 order.", "shipping", "high"),
        ("It would be great to have a dark mode in the mobile app.", "feature_request", "low"),
        (
            "I can't log in since the password reset, it says invalid credentials.",
            "account",
            "high",
        ),
    ],
)
async def test_typical_tickets(body: str, category: str, priority: str) -> None:
    output = await triage(body)
    assert (output["category"], output["priority"]) == (category, priority)


async def test_a_webhook_ticket_is_triaged_on_its_own_words_not_the_fence() -> None:
    """A ticket rule's run: the text fenced as untrusted data, subject and key in metadata."""
    ticket = TICKETS[0]
    fenced = wrap_untrusted(ticket["body"], "zendesk webhook zendesk:ticket:1")
    direct = await triage(ticket["body"], subject=ticket["subject"], **ticket["metadata"])
    via_rule = await triage(
        fenced, ticket_label=ticket["subject"], ticket_key="zendesk:ticket:1", **ticket["metadata"]
    )
    for field in ("category", "priority", "queue", "sentiment"):
        assert via_rule[field] == direct[field]
    # Every fenced ticket carries the same warning: it must not make them look alike.
    others = [
        PastTicket(f"run-{i}", wrap_untrusted(t["body"], f"zendesk webhook {i}"), NOW)
        for i, t in enumerate(TICKETS[1:40])
    ]
    again = await triage(fenced, history=Tickets(others), ticket_key="zendesk:ticket:1")
    assert again["duplicates"] == []
    same = [PastTicket("run-0", wrap_untrusted(ticket["body"], "zendesk webhook 0"), NOW, "z:0")]
    found = await triage(fenced, history=Tickets(same), ticket_key="zendesk:ticket:1")
    assert found["duplicate_of"] == "run-0"
