"""Learning from a decision happens after it commits, never under the tenant's lock.

A decision takes the tenant-wide assignment lock (every claim and decision of the tenant
waits for it). Embedding the question of the golden path it teaches is a remote call in
production (a slow or hung embedder): it must not run while the lock is held. These tests
inject an embedder that blocks until released, through ``agentflow.knowledge.get_embedder``
(what ``embed_query`` asks for the platform's embedder).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from datetime import timedelta
from typing import Any

import pytest
from django.db import connections
from django.utils import timezone

from agentflow import knowledge
from agentflow.core import queueing
from agentflow.models import Agent
from learning.models import GoldenPath
from learning.tasks import record_review_outcome_task
from tests.platform.api.conftest import Persona
from tests.platform.hitl.conftest import Member, escalated_run, make_member, review_of

pytestmark = pytest.mark.django_db(transaction=True)


class GatedEmbedder:
    """The offline embedder behind a gate: each call waits until the test opens it."""

    def __init__(self) -> None:
        self.inner = knowledge.OfflineEmbedder(knowledge.EMBEDDING_DIMENSIONS)
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.calls = 0

    def embed_array(self, texts: list[str]) -> Any:
        self.calls += 1
        self.entered.set()
        self.gate.wait(timeout=30)
        return self.inner.embed_array(texts)

    async def embed(self, texts: list[str], *, model: str | None = None) -> Any:
        return await self.inner.embed(texts, model=model)


@pytest.fixture
def embedder(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedEmbedder]:
    gated = GatedEmbedder()
    monkeypatch.setattr(knowledge, "get_embedder", lambda: gated)
    try:
        yield gated
    finally:
        gated.gate.set()  # never leave a thread waiting


def _in_thread(pool: ThreadPoolExecutor, call: Any) -> Any:
    def one() -> Any:
        try:
            return call()
        finally:
            connections.close_all()

    return pool.submit(one)


def _golden_paths(agent: Agent) -> list[GoldenPath]:
    return list(GoldenPath.unscoped.filter(agent=agent))


def test_a_decision_commits_and_claims_go_on_while_the_embedder_hangs(
    owner: Persona, agent: Agent, reviewer: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    decided, waiting = review_of(escalated_run(agent)), review_of(escalated_run(agent))
    colleague = make_member(owner.tenant, "colleague", "reviewer")
    gated = GatedEmbedder()
    monkeypatch.setattr(knowledge, "get_embedder", lambda: gated)
    with ThreadPoolExecutor(max_workers=2) as pool:
        try:
            decision = _in_thread(pool, lambda: reviewer.respond(decided.pk, decision="approve"))
            # Either the decision is done, or it waits in the embedder (the bug: holding the
            # tenant's lock); a colleague's claim of another request must go through either way.
            wait([decision], timeout=10, return_when=FIRST_COMPLETED)
            gated.entered.wait(timeout=0 if decision.done() else 10)
            claim = _in_thread(pool, lambda: colleague.claim(waiting.pk))
            assert claim.result(timeout=5).status_code == 200  # the tenant's lock is free
            assert decision.result(timeout=5).status_code == 200
        finally:
            gated.gate.set()
    assert not gated.entered.is_set()  # nothing was embedded inside the decision
    assert _golden_paths(agent) == []  # learning waits for the worker
    assert record_review_outcome_task(owner.tenant.pk, str(decided.pk)) == "recorded"
    assert gated.calls == 1


def test_the_golden_path_is_learnt_after_commit_once_however_often_the_task_runs(
    owner: Persona, agent: Agent, reviewer: Member, embedder: GatedEmbedder
) -> None:
    embedder.gate.set()
    run = escalated_run(agent)
    request = review_of(run)
    answer = "Open Settings > Security and choose Reset password; the link lasts an hour."
    assert reviewer.respond(request.pk, decision="edit", response=answer).status_code == 200
    assert _golden_paths(agent) == []  # not in the decision's transaction

    # Delivered twice (a redelivery racing the first run), then once more later.
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [
            _in_thread(pool, lambda: record_review_outcome_task(owner.tenant.pk, str(request.pk)))
            for _ in range(2)
        ]
        outcomes = sorted(f.result(timeout=30) for f in runs)
    outcomes.append(record_review_outcome_task(owner.tenant.pk, str(request.pk)))

    assert outcomes == ["recorded"] * 3
    (path,) = _golden_paths(agent)
    assert (path.answer, path.source, path.merged_count) == (answer, "edited", 1)  # no merge
    assert path.source_run_id == run.pk
    assert path.trace_summary["runs"] == [str(run.pk)]
    assert embedder.calls <= 2  # the later run finds it recorded before embedding


def test_a_decision_whose_learning_task_was_lost_is_learnt_by_the_sweep(
    owner: Persona, agent: Agent, reviewer: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker took the decision's task and nobody ran it (as when Redis was down at
    commit): the beat sweep re-sends it once it is 2 minutes old, and only once learnt."""
    from agentflow.tasks import review_outcome_sweep_task
    from hitl.models import HITLRequest

    edited, rejected = review_of(escalated_run(agent)), review_of(escalated_run(agent))
    answer = "Open Settings > Security and choose Reset password; the link lasts an hour."
    assert reviewer.respond(edited.pk, decision="edit", response=answer).status_code == 200
    assert reviewer.respond(rejected.pk, decision="reject", reason="wrong").status_code == 200
    sent: list[tuple[Any, ...]] = []

    def run_now(task: Any, *args: Any) -> bool:
        sent.append(args)
        task(*args)
        return True

    monkeypatch.setattr(queueing, "send", run_now)
    assert review_outcome_sweep_task() == 0  # too recent: its task may still be on its way
    HITLRequest.unscoped.filter(pk__in=[edited.pk, rejected.pk]).update(
        decided_at=timezone.now() - timedelta(minutes=3)
    )
    assert review_outcome_sweep_task() == 1
    assert sent == [(owner.tenant.pk, str(edited.pk))]  # a rejection teaches nothing
    (path,) = _golden_paths(agent)
    assert path.answer == answer
    assert review_outcome_sweep_task() == 0  # learnt: nothing more to send
