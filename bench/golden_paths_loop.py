"""Escalation rate before and after the learning loop, on a replay of BANKING77 (SPEC 9).

    .venv/bin/python bench/golden_paths_loop.py [--learn 1500] [--heldout 500] [--window 100]
        [--examples 10] [--threshold 0.6] [--seed 7] [--embedder offline[,wordllama]]
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

``--embedder`` names the ``EMBEDDER`` setting to replay with; several (comma-separated) replay
the same streams once each, in one run, each with its own tenant and agent, and report under
``embedders`` (one alone keeps the flat report).

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
from collections import Counter
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


def world(
    train: list[tuple[str, str]], examples: int, threshold: float, seed: int, name: str
) -> Any:
    from django.contrib.auth import get_user_model

    from agentflow.services import create_agent
    from governance.audit import Actor
    from hitl.services import Reviewer
    from tenants import services as tenants

    actor = Actor.system("bench")
    tenant = tenants.create_tenant(actor=actor, name=f"Loop bench {name}", tier="enterprise")
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
    user = get_user_model().objects.create_user(f"loop-reviewer-{name}")
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
        result = run.result or {}
        escalated = run.status == "awaiting_review"
        got = None if escalated else answered_category(str(result.get("content", "")))
        # What it would have said, and how sure it was: the threshold sweep of `after`.
        would = answered_category(str(result.get("proposed_answer") or "")) if escalated else got
        outcomes.append(
            {
                "escalated": escalated,
                "correct": got == category,
                "answered": got,
                "true": category,
                "would_be_correct": would == category,
                "confidence": float(result.get("confidence") or 0.0),
                "low_confidence_only": result.get("escalation_reason") in (None, "low_confidence"),
            }
        )
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


def use_embedder(spec: str) -> None:
    """Switch the platform's EMBEDDER (a new agent builds its pipeline with it)."""
    from django.conf import settings

    from agentflow.knowledge import embedder_issues, get_embedder

    settings.AGENTFLOW = {**settings.AGENTFLOW, "EMBEDDER": spec}
    if issues := embedder_issues():
        raise SystemExit("; ".join(issues))
    get_embedder.cache_clear()


def loop(
    args: argparse.Namespace,
    spec: str,
    train: list[tuple[str, str]],
    heldout: list[tuple[str, str]],
    learning: list[tuple[str, str]],
) -> dict[str, Any]:
    """One replay (before, learning, after) with the `spec` embedder, on a tenant of its own."""
    from tenants.context import tenant_scope

    use_embedder(spec)
    tenant, agent, reviewer = world(train, args.examples, args.threshold, args.seed, spec)
    with tenant_scope(tenant.pk):
        note(f"[{spec}] before: {len(heldout)} held-out questions, no golden paths")
        t0 = time.monotonic()
        before = replay(agent, heldout, f"{spec}-before")
        note(f"[{spec}] learning: {len(learning)} questions, reviewers answer every escalation")
        learned = replay(agent, learning, f"{spec}-learn", reviewer)
        note(f"[{spec}] after: the held-out questions again")
        after = replay(agent, heldout, f"{spec}-after")
        seconds = time.monotonic() - t0
        from learning.models import GoldenPath

        paths = GoldenPath.objects.filter(agent=agent).count()
    windows = [
        {"from": start, **rates(learned[start : start + args.window])}
        for start in range(0, len(learned), args.window)
    ]
    return {
        "before": rates(before),
        "learning_windows": windows,
        "learning": rates(learned),
        "after": rates(after),
        "after_threshold_sweep": sweep(after, [0.5, 0.55, 0.58, 0.6, 0.62, 0.65, 0.7]),
        "after_confusions": confusions(after),
        "golden_paths": paths,
        "runs_per_second": round((2 * len(heldout) + len(learning)) / seconds, 1),
    }


def sweep(outcomes: list[dict[str, Any]], thresholds: list[float]) -> list[dict[str, Any]]:
    """`after` as it would have gone at other thresholds of the same learnt golden paths
    (only the threshold moves: an out-of-scope message escalates at every threshold)."""
    table = []
    for threshold in thresholds:
        kept = [o for o in outcomes if o["low_confidence_only"] and o["confidence"] >= threshold]
        table.append(
            {
                "threshold": threshold,
                "escalation_rate": round(1 - len(kept) / len(outcomes), 4),
                "precision": round(sum(o["would_be_correct"] for o in kept) / len(kept), 4)
                if kept
                else None,
            }
        )
    return table


def confusions(outcomes: list[dict[str, Any]], top: int = 10) -> list[dict[str, Any]]:
    """The wrong answers given without a human, by (true category, answered category)."""
    pairs = Counter(
        (o["true"], o["answered"]) for o in outcomes if o["answered"] and not o["correct"]
    )
    return [{"true": t, "answered": a, "count": n} for (t, a), n in pairs.most_common(top)]


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--learn", type=int, default=1500)
    parser.add_argument("--heldout", type=int, default=500)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--examples", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--embedder", default="offline", help="EMBEDDER value(s), comma-separated")
    args = parser.parse_args(argv)
    data = data_dir()
    train, test = rows(data / "train.csv"), rows(data / "test.csv")
    random.Random(args.seed).shuffle(test)
    heldout, learning = test[: args.heldout], test[args.heldout : args.heldout + args.learn]
    specs = [spec.strip() for spec in args.embedder.split(",") if spec.strip()]

    home = Path(tempfile.mkdtemp(prefix="gp-loop-"))
    home.chmod(0o755)  # as root, PostgreSQL runs as its own user and must enter
    platform = Platform(home)
    try:
        platform.start()
        results = {spec: loop(args, spec, train, heldout, learning) for spec in specs}
        report: dict[str, Any] = {
            "benchmark": "golden_paths_loop",
            "setup": {
                "intents": 77,
                "examples_per_intent": args.examples,
                "default_threshold": args.threshold,
                "learning_questions": len(learning),
                "heldout_questions": len(heldout),
                "seed": args.seed,
                "embedders": specs,
            },
        }
        if len(specs) == 1:
            report.update(results[specs[0]])
        else:
            report["embedders"] = results
        report["seconds"] = round(time.monotonic() - STARTED, 1)
        return report
    finally:
        platform.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1:]), indent=2))
