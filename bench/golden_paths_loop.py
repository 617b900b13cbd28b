"""Escalation rate before and after the learning loop, on a replay of BANKING77 (SPEC 9).

    .venv/bin/python bench/golden_paths_loop.py [--learn 1500] [--heldout 500] [--window 100]
        [--examples 10] [--threshold 0.6] [--seed 7]
    (or: .venv/bin/python bench/golden_paths.py --part loop [same options])

Starts its own embedded PostgreSQL and Redis in a temporary folder, migrates, and creates a
tenant whose ``support_agent`` knows the 77 BANKING77 intents (``--examples`` training
utterances each) and has no knowledge base: at first it can answer nothing on its own.
The shuffled test utterances are split into a *learning* stream and a *held-out* set.

1. ``before``: the held-out questions, each from a new customer, with no golden paths.
2. ``learning``: the learning stream in order; every escalated question is answered by a
   reviewer (``hitl.services.decide``, decision ``edit``) with the fixed answer of the
   question's true category: the reviewers know the right answer, the agent does not. Each
   decision becomes (or merges into) a golden path through the real signal. Reported per
   window of ``--window`` questions: the escalation rate, and of the questions answered
   without a human, the share that got their true category's answer (``precision``).
3. ``after``: the held-out questions again (new customers, no decisions).

Every question goes through the real platform in this process: ``execute_run`` with the
Django stores, pgvector golden-path search through ``agentflow.vector_search``, the HITL
request, the audit chain. Prints one JSON object (``run(argv)`` returns it when
``bench/golden_paths.py --part loop`` imports this file).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentflow.server.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402

STARTED = time.monotonic()


def note(message: str) -> None:
    print(f"bench | {time.monotonic() - STARTED:6.1f}s {message}", file=sys.stderr, flush=True)


def data_dir() -> Path:
    for candidate in (
        ROOT.parent / "shared" / "data" / "banking77",
        Path("/work/shared/data/banking77"),
    ):
        if (candidate / "test.csv").exists():
            return candidate
    raise SystemExit("BANKING77 not found in ../shared/data/banking77")


def rows(path: Path) -> list[tuple[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [(row["text"], row["category"]) for row in csv.DictReader(handle)]


def fixed_answer(category: str) -> str:
    """The answer every reviewer gives for a category (tagged, so correctness is checkable)."""
    topic = category.replace("_", " ")
    return f"[{category}] Here is how we handle {topic}: follow the steps in the app."


def answered_category(content: str) -> str | None:
    if content.startswith("[") and "]" in content:
        return content[1 : content.index("]")]
    return None


class Platform:
    """Embedded PostgreSQL + Redis in a temporary folder, migrated, Django set up."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.postgres = EmbeddedPostgres(home / "postgres")
        self.redis = EmbeddedRedis(home / "redis")

    def start(self) -> None:
        os.environ.update(
            {
                "DATABASE_URL": self.postgres.start(),
                "REDIS_URL": self.redis.start(),
                "AGENTFLOW_HOME": str(self.home / "home"),
                "AGENTFLOW_ENV": "development",
                "LOG_LEVEL": "WARNING",
                "DJANGO_SETTINGS_MODULE": "agentflow.server.settings",
            }
        )
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0, skip_checks=True)

    def stop(self) -> None:
        from django.db import connections

        connections.close_all()
        self.redis.stop()
        self.postgres.stop()


def world(train: list[tuple[str, str]], examples: int, threshold: float, seed: int) -> Any:
    from django.contrib.auth import get_user_model

    from agentflow.services import create_agent
    from governance.audit import Actor
    from hitl.services import Reviewer
    from tenants import services as tenants

    actor = Actor.system("bench")
    tenant = tenants.create_tenant(actor=actor, name="Loop bench", tier="enterprise")
    by_category: dict[str, list[str]] = {}
    for text, category in train:
        by_category.setdefault(category, []).append(text)
    rng = random.Random(seed)
    categories = [
        {
            "name": category,
            "description": category.replace("_", " "),
            "examples": rng.sample(texts, min(examples, len(texts))),
        }
        for category, texts in sorted(by_category.items())
    ]
    agent = create_agent(
        actor=actor,
        tenant=tenant,
        name="banking",
        blueprint="support_agent",
        config={"intent_categories": categories, "default_threshold": threshold},
    )
    user = get_user_model().objects.create_user("loop-reviewer")
    tenants.add_member(actor=actor, tenant=tenant, user=user, role="owner")
    reviewer = Reviewer(actor=Actor("user", str(user.pk)), user_id=user.pk, role="owner")
    return tenant, agent, reviewer


def ask(agent: Any, user_id: str, text: str) -> Any:
    from agentflow import services
    from agentflow.models import AgentSession, Run

    session = AgentSession.objects.create(agent=agent, user_id=user_id)
    run = Run.objects.create(agent=agent, session=session, user_id=user_id, input=text)
    services.execute_run(str(run.pk))
    run.refresh_from_db()
    return run


def review(run: Any, reviewer: Any, category: str) -> None:
    from agentflow.orchestration import decide_review
    from hitl.models import HITLRequest
    from learning.tasks import record_review_outcome_task

    request = HITLRequest.objects.get(run=run)
    answer = fixed_answer(category)
    decide_review(reviewer=reviewer, request=request, decision="edit", response=answer)
    # What the worker does once the decision commits; here, in-process and at once.
    record_review_outcome_task(request.tenant_id, str(request.pk))


def replay(
    agent: Any, questions: list[tuple[str, str]], prefix: str, reviewer: Any | None = None
) -> list[dict[str, Any]]:
    outcomes = []
    for index, (text, category) in enumerate(questions):
        run = ask(agent, f"{prefix}-{index}", text)
        escalated = run.status == "awaiting_review"
        got = None if escalated else answered_category(str((run.result or {}).get("content", "")))
        outcomes.append({"escalated": escalated, "correct": got == category, "answered": got})
        if escalated and reviewer is not None:
            review(run, reviewer, category)
    return outcomes


def rates(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    answered = [o for o in outcomes if not o["escalated"]]
    return {
        "questions": len(outcomes),
        "escalation_rate": round(sum(o["escalated"] for o in outcomes) / len(outcomes), 4)
        if outcomes
        else None,
        "answered_without_human": len(answered),
        "precision": round(sum(o["correct"] for o in answered) / len(answered), 4)
        if answered
        else None,
    }


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--learn", type=int, default=1500)
    parser.add_argument("--heldout", type=int, default=500)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--examples", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    data = data_dir()
    train, test = rows(data / "train.csv"), rows(data / "test.csv")
    random.Random(args.seed).shuffle(test)
    heldout, learning = test[: args.heldout], test[args.heldout : args.heldout + args.learn]

    home = Path(tempfile.mkdtemp(prefix="gp-loop-"))
    home.chmod(0o755)  # as root, PostgreSQL runs as its own user and must enter
    platform = Platform(home)
    try:
        platform.start()
        from tenants.context import tenant_scope

        tenant, agent, reviewer = world(train, args.examples, args.threshold, args.seed)
        with tenant_scope(tenant.pk):
            note(f"before: {len(heldout)} held-out questions, no golden paths")
            t0 = time.monotonic()
            before = replay(agent, heldout, "before")
            note(f"learning: {len(learning)} questions, reviewers answer every escalation")
            learned = replay(agent, learning, "learn", reviewer)
            note("after: the held-out questions again")
            after = replay(agent, heldout, "after")
            seconds = time.monotonic() - t0
            from learning.models import GoldenPath

            paths = GoldenPath.objects.count()
        windows = [
            {"from": start, **rates(learned[start : start + args.window])}
            for start in range(0, len(learned), args.window)
        ]
        return {
            "benchmark": "golden_paths_loop",
            "setup": {
                "intents": 77,
                "examples_per_intent": args.examples,
                "default_threshold": args.threshold,
                "learning_questions": len(learning),
                "heldout_questions": len(heldout),
                "seed": args.seed,
            },
            "before": rates(before),
            "learning_windows": windows,
            "after": rates(after),
            "golden_paths": paths,
            "runs_per_second": round((2 * len(heldout) + len(learning)) / seconds, 1),
            "seconds": round(time.monotonic() - STARTED, 1),
        }
    finally:
        platform.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:]), indent=2))
