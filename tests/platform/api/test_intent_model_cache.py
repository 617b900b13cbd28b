"""A real run worker classifies with cached intent models and never loads scikit-learn (issue 15,
memory: scikit-learn's import chain alone was ~100 MB of a worker's RSS).

An agent whose model is already in INTENT_MODEL_CACHE_DIR is served from that file as it is;
an agent without one has its model trained in a child process, which writes the file; in both
cases the worker's own process maps no scikit-learn or scipy library.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from agentflow.kernel.intents import IntentCategory
from agentflow.kernel.intents_fit import cached_classifier
from agentflow.models import Run, RunStatus
from agentflow.services import RunRequest, create_agent, start_run
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, SUPPORT_CONFIG, Persona
from tests.platform.workers import database_url_for_workers, start_worker, stop_worker, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SETTLED = (RunStatus.COMPLETED, RunStatus.AWAITING_REVIEW, RunStatus.FAILED)
OTHER_CONFIG: dict[str, Any] = {
    **SUPPORT_CONFIG,
    "intent_categories": [
        {"name": "SHIPPING", "examples": ["where is my parcel", "track my order"]},
        {"name": "RETURNS", "examples": ["I want to return this", "send it back"]},
    ],
}


def _run(owner: Persona, agent: Any, message: str, log_path: Path) -> Run:
    with tenant_scope(owner.tenant.pk):
        run = start_run(actor=ACTOR, agent=agent, request=RunRequest(f"u-{time.time()}", message))

    def settled() -> bool:
        with tenant_scope(owner.tenant.pk):
            return Run.objects.get(pk=run.pk).status in SETTLED

    try:
        wait_until(settled, 120, f"the run of {message!r} to settle")
    except AssertionError:
        raise AssertionError(log_path.read_text(errors="replace")[-3000:]) from None
    with tenant_scope(owner.tenant.pk):
        return Run.objects.get(pk=run.pk)


def _mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_a_workers_runs_use_cached_intent_models_without_scikit_learn(
    owner: Persona, tmp_path: Path
) -> None:
    cache = tmp_path / "intent-models"
    categories = [IntentCategory(**c) for c in SUPPORT_CONFIG["intent_categories"]]
    cached_classifier(categories, cache)  # as an earlier worker of the host would have
    [model] = list(cache.iterdir())
    before = model.stat()
    cached = create_agent(
        actor=ACTOR,
        tenant=owner.tenant,
        name="cached",
        blueprint="support_agent",
        config=SUPPORT_CONFIG,
    )
    fresh = create_agent(
        actor=ACTOR,
        tenant=owner.tenant,
        name="fresh",
        blueprint="support_agent",
        config=OTHER_CONFIG,
    )
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_workers(),
        "INTENT_MODEL_CACHE_DIR": str(cache),
    }
    log_path = tmp_path / "runner.log"
    with log_path.open("ab") as log:
        worker = start_worker(env, log, pool="threads", concurrency=4, queues="runs")
        try:
            first = _run(owner, cached, "I was charged twice this month", log_path)
            second = _run(owner, fresh, "where is my parcel", log_path)
            libraries = _mapped_libraries(worker.pid)
        finally:
            stop_worker(worker)
    assert first.status != RunStatus.FAILED, first.error
    assert second.status != RunStatus.FAILED, second.error
    assert (first.result or {}).get("intent") == "BILLING"
    assert (second.result or {}).get("intent") == "SHIPPING"
    # The cached model was read, not trained again; the other agent's was trained and written.
    after = model.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(list(cache.glob("*.npz"))) == 2
    assert "/sklearn/" not in libraries
    assert "/scipy/" not in libraries
    assert "/numpy/" in libraries  # the check can see the worker's extension modules
