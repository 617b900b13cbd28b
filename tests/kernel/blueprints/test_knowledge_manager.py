"""knowledge_manager_agent offline: task selection, gap clustering against a small help
centre, near-duplicate and stale articles, and drafts from approved answers (escalated for
a reviewer), with the offline embedder the platform uses by default."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from agentflow.kernel.blueprints.knowledge_manager import (
    Article,
    Coverage,
    GoldenAnswer,
    KnowledgeManagerAgent,
    Question,
    cluster,
    draft_article,
    near_duplicates,
    parse_task,
)
from agentflow.kernel.llm.embeddings import OfflineEmbedder
from agentflow.kernel.planning.model import PlanResult
from agentflow.kernel.vectors import Vector
from tests.kernel.fake_openai_server import (
    FakeOpenAIServer,
    chat_completion,
    error,
    strict_provider,
)

EMBEDDER = OfflineEmbedder()
NOW = datetime.now(UTC)
HELP_CENTRE = {
    "Resetting your password": "To reset your password, open Settings, choose Security and "
    "click Reset password. We email you a link that is valid for 30 minutes.",
    "Refunds": "Refunds are issued to the original card within 5 business days. You can "
    "request a refund from the Billing page.",
    "Invoices and VAT": "Download invoices from Billing > Invoices. To add your VAT number to "
    "invoices, enter it under Billing > Tax details.",
}
QUESTIONS = [
    "How do I export my data to CSV?",
    "Can I export my reports as a CSV file?",
    "export to csv is not working",
    "Is there a way to export data to Excel or CSV?",
    "Do you support single sign-on with Okta?",
    "SAML single sign-on with Okta fails",
    "How do I reset my password?",
    "I forgot my password and the reset link expired",
    "Can I get an invoice with my VAT number?",
]


class FakeKnowledge:
    """The port over in-memory rows, embedded like the platform embeds its chunks."""

    def __init__(
        self,
        questions: Sequence[str] = (),
        articles: dict[str, tuple[str, datetime]] | None = None,
        golden: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.questions_ = [
            Question(text, f"run-{i}", escalated=i % 2 == 0, confidence=0.3)
            for i, text in enumerate(questions)
        ]
        self.articles_ = [
            Article(f"doc-{i}", title, "agent-1", created, EMBEDDER.embed_one(f"{title}\n{text}"))
            for i, (title, (text, created)) in enumerate((articles or {}).items())
        ]
        self.golden = [
            GoldenAnswer(f"gp-{i}", q, a, "approved", 0.0) for i, (q, a) in enumerate(golden)
        ]
        self.asked: dict[str, Any] = {}

    async def questions(
        self, since: datetime, *, low_confidence: float, limit: int
    ) -> list[Question]:
        self.asked.update(since=since, low_confidence=low_confidence, limit=limit)
        return self.questions_[:limit]

    async def coverage(self, vector: Vector) -> Coverage | None:
        scored = [(float(a.vector @ vector), a) for a in self.articles_]
        if not scored:
            return None
        score, best = max(scored, key=lambda pair: pair[0])
        return Coverage(best.document_id, best.title, score)

    async def articles(self, *, limit: int) -> list[Article]:
        return self.articles_[:limit]

    async def golden_answers(
        self, vector: Vector, *, limit: int, min_similarity: float
    ) -> list[GoldenAnswer]:
        scored = [
            GoldenAnswer(g.golden_path_id, g.question, g.answer, g.source, score)
            for g in self.golden
            if (score := float(EMBEDDER.embed_one(g.question) @ vector)) >= min_similarity
        ]
        return sorted(scored, key=lambda g: -g.similarity)[:limit]


def _help_centre(age_days: int = 10) -> dict[str, tuple[str, datetime]]:
    return {title: (text, NOW - timedelta(days=age_days)) for title, text in HELP_CENTRE.items()}


def _agent(knowledge: FakeKnowledge, **config: Any) -> KnowledgeManagerAgent:
    return KnowledgeManagerAgent(config, knowledge=knowledge, embedder=EMBEDDER)


def _nodes(result: Any) -> list[str]:
    plan: PlanResult = result.plan
    return [record.node for record in plan.path]


@pytest.mark.parametrize(
    ("message", "metadata", "expected"),
    [
        ("gaps", {}, ("gaps", "")),
        ("  Duplicates please", {}, ("duplicates", "please")),
        ("STALE", {}, ("stale", "")),
        ("draft: Exporting data to CSV", {}, ("draft", "Exporting data to CSV")),
        ("anything", {"task": "draft", "topic": "SSO with Okta"}, ("draft", "SSO with Okta")),
    ],
)
def test_task_selection(message: str, metadata: dict[str, Any], expected: tuple[str, str]) -> None:
    assert parse_task(message, metadata) == expected


@pytest.mark.parametrize(
    ("message", "metadata", "field"),
    [
        ("what's up", {}, "message"),
        ("draft:", {}, "message"),
        ("gaps", {"task": "cleanup"}, "metadata.task"),
        ("", {"task": "draft"}, "metadata.topic"),
    ],
)
def test_bad_tasks_name_the_field(message: str, metadata: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: "):
        parse_task(message, metadata)


def test_paraphrases_cluster_together_and_unrelated_questions_apart() -> None:
    groups = cluster(EMBEDDER.embed_array(QUESTIONS), 0.35)
    as_text = [{QUESTIONS[i] for i in group} for group in groups]
    assert as_text[0] == set(QUESTIONS[:4])  # the CSV export questions, largest first
    assert set(QUESTIONS[4:6]) in as_text
    assert set(QUESTIONS[6:8]) in as_text
    assert {QUESTIONS[8]} in as_text


async def test_gaps_are_uncovered_clusters_largest_first() -> None:
    knowledge = FakeKnowledge(QUESTIONS, _help_centre())
    result = await _agent(knowledge, lookback_days=7, max_questions=100).run("gaps")
    output = result.state.plan_state.state["output"]
    assert _nodes(result) == ["select", "gaps"]
    assert knowledge.asked["limit"] == 100
    looked_back = datetime.now(UTC) - knowledge.asked["since"]
    assert timedelta(days=7) <= looked_back < timedelta(days=7, minutes=1)
    gaps = output["gaps"]
    assert [gap["size"] for gap in gaps] == [4, 2]
    assert "csv" in gaps[0]["question"].lower()
    assert set(gaps[0]["examples"]) == set(QUESTIONS[:4])
    assert gaps[0]["run_ids"] == ["run-0", "run-1", "run-2", "run-3"]
    assert gaps[0]["escalated"] == 2
    assert "okta" in gaps[1]["question"].lower()
    # The password questions are covered by the password article; a lone question is noise.
    assert output["summary"] == {"questions": 9, "clusters": 4, "covered": 1, "unexamined": 0}
    assert result.state.plan_state.response["content"].startswith("2 knowledge gap(s) among 9")


async def test_gaps_are_bounded_largest_first() -> None:
    knowledge = FakeKnowledge(QUESTIONS, _help_centre())
    result = await _agent(knowledge, max_gaps=1).run("gaps")
    output = result.state.plan_state.state["output"]
    assert [gap["size"] for gap in output["gaps"]] == [4]
    assert output["summary"] == {"questions": 9, "clusters": 4, "covered": 0, "unexamined": 2}


async def test_no_questions_no_gaps() -> None:
    result = await _agent(FakeKnowledge([], _help_centre())).run("gaps")
    output = result.state.plan_state.state["output"]
    assert output == {
        "task": "gaps",
        "summary": {"questions": 0, "clusters": 0, "covered": 0, "unexamined": 0},
        "gaps": [],
    }


async def test_near_duplicate_articles_are_paired() -> None:
    articles = _help_centre()
    articles["Password reset"] = (
        "To reset your password open Settings, choose Security, then click Reset password. "
        "We email you a link valid for 30 minutes.",
        NOW,
    )
    result = await _agent(FakeKnowledge(articles=articles)).run("duplicates")
    output = result.state.plan_state.state["output"]
    assert output["summary"] == {"articles": 4, "pairs": 1, "listed": 1}
    pair = output["pairs"][0]
    assert {a["title"] for a in pair["articles"]} == {"Resetting your password", "Password reset"}
    assert pair["similarity"] >= 0.9


def test_all_pairs_are_counted_and_the_most_similar_listed() -> None:
    same = EMBEDDER.embed_one("Refunds are issued to the original card within 5 days.")
    close = EMBEDDER.embed_one("Refunds are issued to the original card within 5 business days.")
    articles = [
        Article(f"doc-{i}", f"Refunds {i}", "agent-1", NOW, vector)
        for i, vector in enumerate([same, same, close])
    ]
    total, listed = near_duplicates(articles, 0.8, limit=1)
    assert total == 3
    assert [[a["document_id"] for a in pair["articles"]] for pair in listed] == [["doc-0", "doc-1"]]
    assert listed[0]["similarity"] == pytest.approx(1.0, abs=1e-4)


async def test_stale_articles_oldest_first() -> None:
    articles = _help_centre(age_days=30)
    articles["Refunds"] = (HELP_CENTRE["Refunds"], NOW - timedelta(days=400))
    articles["Invoices and VAT"] = (HELP_CENTRE["Invoices and VAT"], NOW - timedelta(days=200))
    result = await _agent(FakeKnowledge(articles=articles), stale_days=180).run("stale")
    output = result.state.plan_state.state["output"]
    assert [a["title"] for a in output["stale"]] == ["Refunds", "Invoices and VAT"]
    assert [a["age_days"] for a in output["stale"]] == [400, 200]
    assert output["summary"] == {"articles": 3, "stale": 2, "stale_days": 180}


GOLDEN = [
    (
        "How do I export my data to CSV?",
        "Open Reports, pick the date range and click Export > CSV.",
    ),
    ("Can I export reports to Excel?", "Export to CSV, then open the file in Excel."),
    ("How do I reset my password?", "Use Settings > Security > Reset password."),
]


def test_a_draft_has_a_section_per_approved_answer() -> None:
    answers = [GoldenAnswer("gp-0", GOLDEN[0][0], GOLDEN[0][1], "approved", 0.8)]
    text = draft_article("exporting data", answers)
    assert text.splitlines()[0] == "# Exporting data"
    assert "## How do I export my data to CSV?" in text
    assert GOLDEN[0][1] in text
    assert text.endswith("_Drafted from answers approved by reviewers: gp-0._")


async def test_draft_from_approved_answers_is_proposed_for_review() -> None:
    knowledge = FakeKnowledge(golden=GOLDEN)
    result = await _agent(knowledge).run("draft: export data to CSV")
    plan = result.state.plan_state
    output = plan.state["output"]
    assert _nodes(result) == ["select", "draft"]
    assert [s["golden_path_id"] for s in output["sources"]] == ["gp-0", "gp-1"]
    assert "Open Reports, pick the date range" in output["draft"]
    assert "Reset password" not in output["draft"]
    assert output["draft"].startswith("# Export data to CSV\n")
    assert plan.state["escalate"] is True
    assert plan.state["escalation_reason"] == "knowledge draft for review: export data to CSV"
    assert plan.response["content"] == output["draft"]


async def test_draft_without_approved_answers_says_so() -> None:
    result = await _agent(FakeKnowledge(golden=GOLDEN)).run("draft: GDPR data retention")
    plan = result.state.plan_state
    assert plan.state["output"]["draft"] is None
    assert plan.state["escalate"] is False
    assert "No approved answers" in plan.response["content"]


async def test_an_unknown_task_is_rejected_naming_the_field() -> None:
    result = await _agent(FakeKnowledge()).run("please tidy up", context={"metadata": {}})
    plan = result.state.plan_state
    assert _nodes(result) == ["select", "rejected"]
    assert plan.state["output"]["error"]["field"] == "message"
    assert np.isclose(plan.response["confidence"], 0.0)


ARTICLE = "# Exporting data to CSV\n\nOpen **Reports**, pick the date range and click Export > CSV."


async def test_with_a_model_the_article_is_written_from_the_approved_answers_only() -> None:
    with FakeOpenAIServer() as server:
        server.enqueue(chat_completion(ARTICLE))
        async with strict_provider(server) as llm:
            agent = KnowledgeManagerAgent(
                {}, knowledge=FakeKnowledge(golden=GOLDEN), embedder=EMBEDDER, llm=llm
            )
            result = await agent.run("draft: export data to CSV")
        sent = server.sent_text()
    output = result.state.plan_state.state["output"]
    assert output["drafted_by"] == "llm"
    assert output["draft"].startswith(ARTICLE)
    assert output["draft"].endswith("_Drafted from answers approved by reviewers: gp-0, gp-1._")
    assert "Open Reports, pick the date range" in sent  # the approved answers went to the model
    assert "Settings > Security" not in sent, "only the answers about the topic"


async def test_a_failing_model_falls_back_to_the_template_draft() -> None:
    with FakeOpenAIServer() as server:
        server.enqueue(*[error(500)] * 5)
        async with strict_provider(server) as llm:
            agent = KnowledgeManagerAgent(
                {}, knowledge=FakeKnowledge(golden=GOLDEN), embedder=EMBEDDER, llm=llm
            )
            result = await agent.run("draft: export data to CSV")
    output = result.state.plan_state.state["output"]
    assert output["drafted_by"] == "template"
    assert output["draft"].startswith("# Export data to CSV\n\n## How do I export my data to CSV?")
    assert result.state.plan_state.state["escalate"] is True


# 25 escalated questions of five topics; the help centre covers passwords and refunds only.
TOPICS = {
    "export": (
        "How do I export my data to CSV?",
        "Can I export reports as a CSV file?",
        "export to csv is not working",
        "Is there a way to export data to Excel or CSV?",
        "where is the CSV export button",
    ),
    "sso": (
        "Do you support single sign-on with Okta?",
        "SAML single sign-on with Okta fails",
        "how to configure SSO single sign-on",
        "single sign-on login with Azure AD",
        "Okta SSO integration setup",
    ),
    "delete": (
        "How do I delete my account and all my data?",
        "please delete my account",
        "GDPR request to delete my data",
        "can I permanently delete my account",
        "delete account and personal data",
    ),
    "password": (
        "How do I reset my password?",
        "I forgot my password and the reset link expired",
        "password reset email never arrives",
        "reset password link not working",
        "change my password",
    ),
    "refund": (
        "I want a refund for last month",
        "how long does a refund take",
        "refund to my card please",
        "can I get a refund on my annual plan",
        "refund not received yet",
    ),
}


async def test_gaps_on_a_labelled_set_are_the_uncovered_topics() -> None:
    questions = [q for topic in TOPICS.values() for q in topic]
    topic_of = {q: name for name, topic in TOPICS.items() for q in topic}
    result = await _agent(FakeKnowledge(questions, _help_centre())).run("gaps")
    output = result.state.plan_state.state["output"]
    found = [{topic_of[q] for q in gap["examples"]} for gap in output["gaps"]]
    # Every cluster is one topic; the uncovered topics are the gaps, largest first.
    assert found == [{"export"}, {"delete"}, {"sso"}]
    assert [gap["size"] for gap in output["gaps"]] == [5, 5, 4]  # one SSO phrasing stands alone
    assert output["summary"]["covered"] == 2  # passwords and refunds
