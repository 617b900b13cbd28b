"""``manage.py demo_traffic``: customers talking to the demo agent, over the public REST API.

A realistic mix for the dashboard to show live: questions the help articles answer (in
other words than the articles use), follow-up thanks in the same session, off-topic
questions and requests for a person or for deleting an account (which always go to a
human). Everything goes over HTTP with the demo tenant's API key, exactly as a
customer's integration would send it; nothing touches the database directly.
``--auto-review`` plays a careful reviewer through the HITL API after a delay, so decisions
and golden paths appear too: it approves a draft only when it is a real answer citing the
article the question is about (the script knows each question's article), else edits in
that article's answer; it answers requests for a person, and rejects off-topic questions.
"""

from __future__ import annotations

import heapq
import json
import logging
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from django.core.management.base import BaseCommand, CommandError, CommandParser

from agentflow.core.conf import site_url
from frontend import demo

# Paraphrases of what the demo's help articles answer, each with the article that does.
QUESTIONS_AND_ARTICLES: tuple[tuple[str, str], ...] = (
    ("How do I reset my password?", "Resetting your password"),
    ("I forgot my password, how do I get back in?", "Resetting your password"),
    ("The password reset email never arrives", "Resetting your password"),
    ("How can I set up two-factor authentication?", "Two-factor authentication"),
    ("I lost my phone with the authenticator app", "Two-factor authentication"),
    ("How long does a refund take?", "Refunds"),
    ("I was charged twice for my order", "Refunds"),
    ("Where can I download my invoice?", "Invoices"),
    ("How long does shipping take?", "Shipping and delivery"),
    ("Where is my order?", "Shipping and delivery"),
    ("Do you ship to Canada?", "Shipping and delivery"),
    ("How do I return an item?", "Returns"),
)
# Worded unlike any article: the agent is unsure, a person answers once (approving a
# draft from the right article, else writing that article's answer), and the golden path
# answers them from then on: the learning loop at work.
NEW_WORDING_AND_ARTICLES: tuple[tuple[str, str], ...] = (
    ("The login code from my authenticator app doesn't work anymore", "Two-factor authentication"),
    ("My card got billed two times", "Refunds"),
    ("The sweater doesn't fit, can I send it back?", "Returns"),
    ("My parcel still hasn't turned up, what's going on?", "Shipping and delivery"),
)
QUESTIONS = tuple(question for question, _ in QUESTIONS_AND_ARTICLES)
NEW_WORDING = tuple(question for question, _ in NEW_WORDING_AND_ARTICLES)
# The article each scripted question is about: what the robot reviewer checks drafts against.
INTENDED_ARTICLE: dict[str, str] = dict(QUESTIONS_AND_ARTICLES + NEW_WORDING_AND_ARTICLES)
OFF_TOPIC = (
    "What is the weather in Paris tomorrow?",
    "Can you recommend a good pizza place?",
    "Is your API compatible with GraphQL subscriptions?",
    "Who won the football match last night?",
)
HUMAN = (
    "I want to talk to a human",
    "Let me speak to a real person please",
    "Stop the bot, I need an agent",
)
DELETION = (
    "Please delete my account",
    "I want to close my account and erase my data",
)
THANKS = ("Thanks, that helped!", "Great, thanks for the help", "Perfect, that solved it, thanks")
# (scenario, its messages, its share of new conversations)
SCENARIOS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("question", QUESTIONS, 0.56),
    ("new_wording", NEW_WORDING, 0.08),
    ("off_topic", OFF_TOPIC, 0.12),
    ("human", HUMAN, 0.12),
    ("deletion", DELETION, 0.12),
)
CUSTOMERS = (
    "alice",
    "bruno",
    "chen",
    "dara",
    "emil",
    "fatima",
    "gus",
    "hana",
    "ivan",
    "jo",
    "kofi",
    "lena",
)
FOLLOW_UP_SHARE = 0.5  # of answered questions get a thank-you in the same session
HUMAN_REPLIES = {
    "HUMAN_AGENT": "Hi, this is Sam from Acme support. I have read your messages and I am "
    "taking it from here: what can I do for you?",
    "ACCOUNT_DELETION": "We have scheduled the deletion of your account. You will get a "
    "confirmation email within 24 hours; reply to it within 30 days if you change your mind.",
}
# The scripted requests for a person, by the intent they are about (whatever the
# classifier made of them).
PERSON_INTENT: dict[str, str] = {
    **dict.fromkeys(HUMAN, "HUMAN_AGENT"),
    **dict.fromkeys(DELETION, "ACCOUNT_DELETION"),
}
ARTICLE_TEXT: dict[str, str] = dict(demo.KNOWLEDGE)
OFF_TOPIC_REASON = "Not something Acme support can answer."


@dataclass
class Traffic:
    client: httpx.Client
    agent_id: str
    rng: random.Random
    write: Any  # one printed line
    interval: float = 1.0  # seconds between two messages
    stats: Counter[str] = field(default_factory=Counter)
    follow_ups: list[tuple[float, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_message(self, now: float) -> tuple[str, str, str]:
        """(customer, message, scenario): a due thank-you first, else a new question."""
        with self.lock:
            if self.follow_ups and self.follow_ups[0][0] <= now:
                _, customer, message = heapq.heappop(self.follow_ups)
                return customer, message, "thanks"
        customer = f"customer-{self.rng.choice(CUSTOMERS)}"
        names = [name for name, _, _ in SCENARIOS]
        weights = [weight for _, _, weight in SCENARIOS]
        scenario = self.rng.choices(names, weights)[0]
        messages = next(messages for name, messages, _ in SCENARIOS if name == scenario)
        return customer, self.rng.choice(messages), scenario

    def converse(self, customer: str, message: str, scenario: str) -> None:
        try:
            run = self._send(customer, message)
        except httpx.HTTPError as exc:
            self.stats["errors"] += 1
            self.write(f"{customer:18} error: {exc}")
            return
        if run is None:
            return
        status = run.get("status", "?")
        result = run.get("result") or {}
        self.stats["messages"] += 1
        self.stats[status] += 1
        confidence = result.get("confidence")
        shown = f"{confidence:.2f}" if isinstance(confidence, int | float) else "  - "
        self.write(f"{customer:18} {status:16} {result.get('intent') or '-':17} {shown}  {message}")
        answered = scenario in ("question", "new_wording") and status == "completed"
        if answered and self.rng.random() < FOLLOW_UP_SHARE:
            # A few messages later, whatever the rate: a person reads, then thanks.
            due = time.monotonic() + self.rng.uniform(2.0, 6.0) * self.interval
            with self.lock:
                heapq.heappush(self.follow_ups, (due, customer, self.rng.choice(THANKS)))

    def _send(self, customer: str, message: str) -> dict[str, Any] | None:
        for _ in range(5):
            response = self.client.post(
                f"/api/v1/agents/{self.agent_id}/runs",
                json={"user_id": customer, "message": message},
                headers={"Prefer": "wait=15"},
            )
            if response.status_code == 429:
                self.stats["throttled"] += 1
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            if response.status_code not in (201, 202):
                self.stats["errors"] += 1
                self.write(f"{customer:18} HTTP {response.status_code}: {response.text[:200]}")
                return None
            body: dict[str, Any] = response.json()
            return body
        self.write(f"{customer:18} still throttled after 5 tries; skipped")
        return None


@dataclass
class AutoReviewer:
    """Decides what waits for a human, ``delay`` seconds after it was queued."""

    client: httpx.Client
    delay: float
    write: Any
    stats: Counter[str]
    stop: threading.Event = field(default_factory=threading.Event)
    decided: set[str] = field(default_factory=set)

    def pending(self) -> list[dict[str, Any]]:
        response = self.client.get("/api/v1/hitl/queue", params={"limit": 100})
        if response.status_code != 200:
            return []
        results: list[dict[str, Any]] = response.json()["results"]
        return [item for item in results if item["id"] not in self.decided]

    def loop(self) -> None:
        while not self.stop.wait(0.5):
            self.review_due()

    def review_due(self, *, everything: bool = False) -> int:
        decided = 0
        now = datetime.now(UTC)
        for item in self.pending():
            created = datetime.fromisoformat(item["created_at"].replace("Z", "+00:00"))
            if not everything and (now - created).total_seconds() < self.delay:
                continue
            body = self.decision(item)
            response = self.client.post(f"/api/v1/hitl/queue/{item['id']}/respond", json=body)
            self.decided.add(item["id"])
            if response.status_code == 200:
                decided += 1
                self.stats[f"review_{body['decision']}"] += 1
                self.write(f"{'(reviewer)':18} {body['decision']:16} {item['intent'] or '-':17}")
        return decided

    @staticmethod
    def decision(item: dict[str, Any]) -> dict[str, str]:
        """What a careful reviewer decides: approve only a real answer drawn from the
        article the question is about, else write that article's answer; a request for a
        person gets one; off-topic questions and what no article answers are rejected."""
        question = str(item.get("question") or "")
        reply = HUMAN_REPLIES.get(PERSON_INTENT.get(question) or item.get("intent") or "")
        if reply is not None:
            return {"decision": "edit", "response": reply}
        intended = INTENDED_ARTICLE.get(question)
        if intended is None:
            return {"decision": "reject", "reason": OFF_TOPIC_REASON}
        cited = {
            str(source.get("title"))
            for source in item.get("sources") or []
            if source.get("kind") == "knowledge"
        }
        # "approvable" is false for a draft that is no answer (a hand-off, empty).
        if item.get("approvable", bool(item.get("proposed_answer"))) and cited == {intended}:
            return {"decision": "approve"}
        return {"decision": "edit", "response": ARTICLE_TEXT[intended]}


class Command(BaseCommand):
    help = "Send demo customer traffic to the demo agent through the REST API."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rate", type=float, default=1.0, help="messages per second")
        parser.add_argument(
            "--count", type=int, default=0, help="messages to send (0: until Ctrl-C)"
        )
        parser.add_argument("--url", help="the platform (default: the running make run)")
        parser.add_argument("--key", help=f"API key (default: AGENTFLOW_HOME/{demo.KEY_FILE})")
        parser.add_argument("--agent", help="agent id (default: the agent named 'support')")
        parser.add_argument(
            "--auto-review", action="store_true", help="decide review requests via the API"
        )
        parser.add_argument(
            "--review-delay", type=float, default=8.0, help="seconds before auto-review decides"
        )
        parser.add_argument("--concurrency", type=int, default=4, help="customers at once")
        parser.add_argument("--seed", type=int, help="random seed, for a repeatable mix")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["rate"] <= 0 or options["count"] < 0 or options["concurrency"] < 1:
            raise CommandError("--rate must be > 0, --count >= 0 and --concurrency >= 1")
        key = options["key"] or demo.read_key()
        if not key:
            raise CommandError(
                f"no API key: pass --key, or run `manage.py demo_seed` first "
                f"(it saves one in {demo.key_file()})"
            )
        url = (options["url"] or site_url()).rstrip("/")
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per message is ours
        write_lock = threading.Lock()

        def write(line: str) -> None:
            with write_lock:
                self.stdout.write(f"{datetime.now().strftime('%H:%M:%S')} {line}")  # noqa: DTZ005

        client = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(30.0, connect=5.0),
        )
        with client:
            agent_id = options["agent"] or self._agent(client, url)
            rng = random.Random(options["seed"])  # noqa: S311 - a demo mix, not a secret
            traffic = Traffic(client, agent_id, rng, write, interval=1.0 / options["rate"])
            reviewer = None
            reviewing: threading.Thread | None = None
            if options["auto_review"]:
                reviewer = AutoReviewer(client, options["review_delay"], write, traffic.stats)
                reviewing = threading.Thread(target=reviewer.loop, name="auto-review", daemon=True)
                reviewing.start()
            count = options["count"]
            write(
                f"sending {count or 'unlimited'} messages at {options['rate']}/s to {url} "
                f"(agent {agent_id}){'; auto-review on' if reviewer else ''}; Ctrl-C stops"
            )
            try:
                self._pace(traffic, options["rate"], count, options["concurrency"])
                if reviewer is not None and reviewing is not None:
                    reviewer.stop.set()
                    reviewing.join()  # its last request ends before the final sweep
                    reviewer.review_due(everything=True)
            except KeyboardInterrupt:
                write("stopped")
            finally:
                if reviewer is not None and reviewing is not None:
                    # The client closes with this block: the reviewer's request must not
                    # be cut mid-flight (httpx.ReadError: Bad file descriptor).
                    reviewer.stop.set()
                    reviewing.join(timeout=35)
        self.stdout.write(json.dumps({"summary": dict(sorted(traffic.stats.items()))}))

    def _pace(self, traffic: Traffic, rate: float, count: int, concurrency: int) -> None:
        interval = 1.0 / rate
        started = time.monotonic()
        sent = 0
        # At most ``concurrency`` customers wait for an answer at once: when the platform is
        # slower than the rate, the traffic slows down instead of queueing up unboundedly
        # (and a follow-up is only picked once the answer it thanks for has arrived).
        slots = threading.BoundedSemaphore(concurrency)
        with ThreadPoolExecutor(concurrency, thread_name_prefix="customer") as pool:
            while count == 0 or sent < count:
                wait = started + sent * interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                slots.acquire()
                future = pool.submit(traffic.converse, *traffic.next_message(time.monotonic()))
                future.add_done_callback(lambda _: slots.release())
                sent += 1

    def _agent(self, client: httpx.Client, url: str) -> str:
        try:
            response = client.get("/api/v1/agents", params={"limit": 100})
        except httpx.TransportError as exc:
            raise CommandError(f"cannot reach {url} ({exc}); is `make run` up?") from exc
        if response.status_code != 200:
            raise CommandError(f"GET /api/v1/agents: HTTP {response.status_code} {response.text}")
        agents = response.json()["results"]
        if not agents:
            raise CommandError("the tenant has no agent; run `manage.py demo_seed`")
        named = [agent for agent in agents if agent["name"] == demo.AGENT_NAME]
        return str((named or agents)[0]["id"])
