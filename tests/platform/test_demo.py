"""``manage.py demo_seed``: the demo ``make run`` shows, created once, secrets shown once."""

from __future__ import annotations

import io
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command

from agentflow import services as run_services
from agentflow.kernel.llm.offline import DONT_KNOW_ANSWER
from agentflow.models import Agent, AgentSession, KnowledgeDocument, Run
from frontend import demo
from frontend.management.commands import demo_traffic as traffic
from governance.models import AuditEvent
from governance.verify import verify_chain
from hitl.models import HITLRequest
from tenants import services as tenant_services
from tenants.context import tenant_scope
from tenants.models import APIKey, Membership, Tenant

pytestmark = pytest.mark.django_db

KEY = re.compile(r"\baf_[A-Za-z0-9_\-]+")


@pytest.fixture(autouse=True)
def _fresh_home(tmp_path: Path, settings: object, monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo writes its secrets under AGENTFLOW_HOME: each test gets its own.
    settings.AGENTFLOW_HOME = tmp_path  # type: ignore[attr-defined]
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)


def _seed(*args: str) -> str:
    out = io.StringIO()
    call_command("demo_seed", "--url", "http://demo.test", *args, stdout=out)
    return out.getvalue()


def _audit(tenant: Tenant) -> list[tuple[str, str, str]]:
    with tenant_scope(tenant.pk):
        return list(
            AuditEvent.unscoped.filter(tenant=tenant)
            .order_by("sequence")
            .values_list("actor_type", "actor_id", "action")
        )


def test_first_seed_creates_the_demo_and_shows_its_secrets_once() -> None:
    output = _seed()

    tenant = Tenant.objects.get(slug="acme")
    assert (tenant.name, tenant.tier, tenant.status) == ("Acme", "professional", "active")
    keys = KEY.findall(output)
    assert len(keys) == 1, output
    key_file = Path(settings.AGENTFLOW_HOME) / "demo-api-key"
    assert key_file.read_text().strip() == keys[0]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert tenant_services.authenticate_key(keys[0]).tenant_id == tenant.pk

    with tenant_scope(tenant.pk):
        agent = Agent.objects.get(name="support")
        titles = set(KnowledgeDocument.objects.filter(agent=agent).values_list("title", flat=True))
        roles = dict(Membership.objects.values_list("user__username", "role"))
    assert agent.blueprint == "support_agent"
    assert titles == {title for title, _ in demo.KNOWLEDGE}
    assert 5 <= len(titles) <= 8
    always_ask = {c["name"] for c in agent.config["intent_categories"] if c["threshold"] == 0.0}
    assert "ACCOUNT_DELETION" in always_ask
    assert roles == {"reviewer": "reviewer", "operator": "operator"}

    # The printed passwords log in; they are saved for the owner only.
    for username in ("reviewer", "operator"):
        password = re.search(rf"{username} / (\S+)", output)
        assert password, output
        assert authenticate(username=username, password=password.group(1)) is not None
    credentials = Path(settings.AGENTFLOW_HOME) / "demo-credentials.txt"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
    assert "http://demo.test/login/" in output
    assert "manage.py demo_traffic" in output

    events = _audit(tenant)
    assert {action for _, _, action in events} >= {
        "tenant.created",
        "agent.created",
        "api_key.issued",
        "membership.granted",
    }
    assert {(kind, actor) for kind, actor, _ in events} == {("system", "demo")}
    assert verify_chain(tenant.pk).ok


def test_seeding_again_creates_nothing_and_prints_no_secret() -> None:
    first = _seed()
    tenant = Tenant.objects.get(slug="acme")
    before = _audit(tenant)

    again = _seed()
    assert not KEY.search(again), again
    assert " / " not in again  # no password either
    assert "nothing to create" in again
    assert _audit(tenant) == before
    assert Tenant.objects.filter(slug="acme").count() == 1
    assert APIKey.unscoped.filter(tenant=tenant).count() == 1
    with tenant_scope(tenant.pk):
        assert KnowledgeDocument.objects.count() == len(demo.KNOWLEDGE)
    assert KEY.findall(first)[0] == demo.read_key()


def test_once_does_nothing_after_the_first_seed() -> None:
    _seed("--once")
    tenant = Tenant.objects.get(slug="acme")
    with tenant_scope(tenant.pk):
        Agent.objects.filter(name="support").delete()  # the user removed it on purpose

    output = _seed("--once")
    assert "seeded before" in output
    with tenant_scope(tenant.pk):
        assert not Agent.objects.exists()
    assert "log in at http://demo.test/login/" in output


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
def test_links_without_url_name_where_make_run_serves(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch, running: bool
) -> None:
    """No --url: the running platform's address, else the HOST and PORT make run would use
    (a `PORT=9000 make run` user is not sent to port 8000)."""
    settings.RUNTIME_FILE = tmp_path / "runtime.json"
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "9123")
    if running:
        settings.RUNTIME_FILE.write_text('{"url": "http://127.0.0.1:9555"}', encoding="utf-8")
    out = io.StringIO()
    call_command("demo_seed", stdout=out)

    expected = "http://127.0.0.1:9555" if running else "http://0.0.0.0:9123"
    assert f"demo logins at {expected}/login/" in out.getvalue()
    assert f"log in at {expected}/admin/" in out.getvalue()
    assert ":8000" not in out.getvalue()


def test_a_revoked_key_is_replaced_and_the_password_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEMO_PASSWORD", "correct-horse-battery")
    first = KEY.findall(_seed())[0]
    assert authenticate(username="reviewer", password="correct-horse-battery") is not None
    key = tenant_services.authenticate_key(first)
    tenant_services.revoke_key(actor=demo.ACTOR, key=key)

    output = _seed()
    replaced = KEY.findall(output)
    assert len(replaced) == 1
    assert replaced[0] != first
    assert demo.read_key() == replaced[0]
    assert tenant_services.authenticate_key(replaced[0]).tenant.slug == "acme"


# --- what the demo agent answers, and what the robot reviewer approves (issue 13, item 9) ---


def _ask(agent: Agent, user_id: str, message: str) -> Run:
    """The message through the real pipeline (offline provider), in this thread."""
    with tenant_scope(agent.tenant_id):
        session, _ = AgentSession.objects.get_or_create(agent=agent, user_id=user_id)
        run = Run.objects.create(agent=agent, session=session, user_id=user_id, input=message)
        run_services.execute_run(str(run.pk))
        run.refresh_from_db()
    return run


@pytest.mark.django_db(transaction=True)  # the pipeline's own thread must see the agent
def test_the_demo_answers_ordinary_traffic_and_escalates_what_needs_a_person() -> None:
    """Every scripted question and its thank-you in the same conversation completes with no
    review; requests for a person or a deletion, and off-topic questions, wait for one.
    (Before tuning: 16 of 24 ordinary messages answered; "I forgot my password, how do I
    get back in?" at 0.45 and "Great, thanks for the help" at 0.39 waited for a human.)"""
    agent = demo.seed_demo(password="demo-pass-123").agent
    answered: dict[str, str] = {}
    for number, question in enumerate(traffic.QUESTIONS):
        customer = f"customer-{number}"
        thanks = traffic.THANKS[number % len(traffic.THANKS)]
        for message in (question, thanks):
            run = _ask(agent, customer, message)
            answered[message] = run.status
            assert run.status == "completed", (message, run.result)
            assert not HITLRequest.unscoped.filter(run=run).exists()
    person = traffic.HUMAN + traffic.DELETION + traffic.OFF_TOPIC
    for number, message in enumerate(person):
        run = _ask(agent, f"person-{number}", message)
        assert run.status == "awaiting_review", (message, run.result)
    assert set(answered.values()) == {"completed"}
    # Worded unlike any article: a person answers these once, and the loop learns them.
    for number, message in enumerate(traffic.NEW_WORDING):
        run = _ask(agent, f"new-{number}", message)
        assert run.status == "awaiting_review", (message, run.result)
        assert (run.result or {}).get("escalation_reason") == "low_confidence"


def test_the_scripted_questions_cite_the_article_they_are_about() -> None:
    titles = {title for title, _ in demo.KNOWLEDGE}
    assert set(traffic.INTENDED_ARTICLE.values()) <= titles
    assert set(traffic.QUESTIONS) | set(traffic.NEW_WORDING) == set(traffic.INTENDED_ARTICLE)


def _item(question: str, *titles: str, intent: str = "", approvable: bool = True) -> dict[str, Any]:
    return {
        "question": question,
        "intent": intent,
        "proposed_answer": "some draft" if approvable else DONT_KNOW_ANSWER,
        "approvable": approvable,
        "sources": [{"kind": "knowledge", "title": title} for title in titles],
    }


def test_auto_review_approves_only_the_right_article_and_edits_in_the_right_one() -> None:
    decide = traffic.AutoReviewer.decision
    shipping = dict(demo.KNOWLEDGE)["Shipping and delivery"]
    # What it taught before: "Where is my order?" approved with the refund article.
    assert decide(_item("Where is my order?", "Refunds")) == {
        "decision": "edit",
        "response": shipping,
    }
    assert decide(_item("Where is my order?", "Shipping and delivery")) == {"decision": "approve"}
    # A hand-off draft is never approved: the right article's answer is written instead.
    no_answer = _item("My card got billed two times", approvable=False)
    assert decide(no_answer) == {"decision": "edit", "response": dict(demo.KNOWLEDGE)["Refunds"]}
    # Off-topic (no article is about it) is rejected, whatever the draft cites.
    off_topic = decide(_item("Can you recommend a good pizza place?", "Returns"))
    assert off_topic["decision"] == "reject"
    # Asking for a person gets a person's reply, whatever the classifier made of it.
    human = decide(_item("Stop the bot, I need an agent", intent="SHIPPING", approvable=False))
    assert human == {"decision": "edit", "response": traffic.HUMAN_REPLIES["HUMAN_AGENT"]}
