"""SQL budgets of the hot path (issue 15): one 202 and one run's execution.

Statements are counted on every thread (the kernel's stores query through
``sync_to_async`` on another thread with its own connection), by patching Django's
``CursorWrapper`` like ``bench/api.py`` does; COMMIT is a connection call, not a statement,
and BEGIN is implicit, so neither counts. A failure prints the statements by purpose.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db.backends import utils

from agentflow import services
from agentflow.models import Agent, RunStatus
from tenants.context import tenant_scope
from tests.platform.api.conftest import Persona, make_agent, make_persona

pytestmark = pytest.mark.django_db(transaction=True)

ACCEPT_BUDGET = 8  # one POST .../runs answered 202
EXECUTE_BUDGET = 20  # one services.execute_run, whatever its outcome (issue 15's goal)
# Where execution stands now (was 18 answered, 21 escalated; 21 and 24 for a user's first
# run): no regression past these.
# An escalation adds HITL's request to the answered run's statements: the shared queue lock
# with the tier, review settings and policies; the request with its history (one CTE); the
# reviewer pick (its audit rows join the run's in one INSERT).
EXECUTE_NOW = {RunStatus.COMPLETED: 16, RunStatus.AWAITING_REVIEW: 19}
UNLIMITED = {
    "requests_per_minute": None,
    "requests_per_minute_per_key": None,
    "concurrent_runs": None,
    "runs_per_month": None,
    "tokens_per_month": None,
    "dollars_per_month": None,
}
ANSWERED = "How do I reset my password?"
ESCALATED = "I want to talk to a human please"


@contextmanager
def captured_sql() -> Iterator[list[str]]:
    """Every statement any thread sends through Django while the block runs."""
    statements: list[str] = []
    originals = (utils.CursorWrapper._execute, utils.CursorWrapper._executemany)

    def recording(original: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
            statements.append(sql)
            return original(self, sql, *args, **kwargs)

        return wrapper

    utils.CursorWrapper._execute = recording(originals[0])  # type: ignore[method-assign]
    utils.CursorWrapper._executemany = recording(originals[1])  # type: ignore[method-assign]
    try:
        yield statements
    finally:
        utils.CursorWrapper._execute, utils.CursorWrapper._executemany = originals  # type: ignore[method-assign]


def purpose(sql: str) -> str:
    """A statement's kind and main table: "SELECT agentflow_run FOR NO KEY UPDATE"."""
    text = " ".join(sql.split())
    if text.startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")):
        return text.rsplit(" ", 1)[0]
    advisory = re.search(r"pg_\w*advisory\w*", text)
    if advisory:
        return f"SELECT {advisory.group(0)}"
    verb = text.split(" ", 1)[0].upper()
    table = re.search(r'(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', text)
    label = f"{verb} {table.group(1) if table else '?'}"
    for lock in ("FOR NO KEY UPDATE", "FOR UPDATE", "ON CONFLICT"):
        if lock in text:
            label += f" {lock}"
    return label


def by_purpose(statements: list[str]) -> str:
    counts = Counter(purpose(sql) for sql in statements)
    lines = [f"{n:3d}  {what}" for what, n in counts.most_common()]
    return f"{len(statements)} statements:\n" + "\n".join(lines)


@pytest.fixture
def unlimited() -> Persona:
    """The benchmark's tenant: no counted quota, so no tenant row lock on accept."""
    return make_persona("Bench", tier="professional", quota_overrides=UNLIMITED)


def _accept(persona: Persona, agent: Agent, user_id: str, message: str = ANSWERED) -> str:
    response = persona.post(
        f"/api/v1/agents/{agent.pk}/runs",
        {"user_id": user_id, "message": message},
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 202, response.json()
    return str(response.json()["id"])


def _execute(persona: Persona, run_id: str) -> str:
    with tenant_scope(persona.tenant.pk):
        return str(services.execute_run(run_id))


def _warm(persona: Persona, agent: Agent) -> None:
    """Caches, prepared pipeline, the session and the open thread of user "warm"."""
    for message in (ANSWERED, ESCALATED, ANSWERED):
        _execute(persona, _accept(persona, agent, "warm", message))


def test_a_202_costs_at_most_the_budget(unlimited: Persona) -> None:
    agent = make_agent(unlimited)
    _warm(unlimited, agent)
    for user_id in ("warm", "first-time-user"):
        with captured_sql() as statements:
            _accept(unlimited, agent, user_id)
        assert len(statements) <= ACCEPT_BUDGET, f"202 for {user_id}: {by_purpose(statements)}"


def test_a_202_with_counted_quotas_stays_within_the_budget(owner: Persona) -> None:
    """Counted quotas claim in Redis and read one snapshot: no tenant row lock, no extra cost."""
    agent = make_agent(owner)
    _warm(owner, agent)
    for user_id in ("warm", "another-first-time-user"):
        with captured_sql() as statements:
            _accept(owner, agent, user_id)
        assert len(statements) <= ACCEPT_BUDGET, f"202 for {user_id}: {by_purpose(statements)}"
        assert not any("FOR NO KEY UPDATE" in sql for sql in statements), by_purpose(statements)


CASES = pytest.mark.parametrize(
    ("message", "settles_as"),
    [(ANSWERED, RunStatus.COMPLETED), (ESCALATED, RunStatus.AWAITING_REVIEW)],
)
# A returning user (session, open thread, history, memory) and a user's first run (the 202
# made the session; the thread is new): the benchmark's runs are first runs.
USERS = pytest.mark.parametrize("user_id", ["warm", "first-time-user"])


def _executed(persona: Persona, message: str, settles_as: str, user_id: str = "warm") -> list[str]:
    agent = make_agent(persona)
    _warm(persona, agent)
    run_id = _accept(persona, agent, user_id, message)
    with captured_sql() as statements:
        outcome = _execute(persona, run_id)
    assert outcome == settles_as
    return statements


@CASES
@USERS
def test_one_run_executes_within_the_budget(
    unlimited: Persona, message: str, settles_as: str, user_id: str
) -> None:
    """Issue 15's goal, for both outcomes: at most 20 statements, whoever the user."""
    statements = _executed(unlimited, message, settles_as, user_id)
    assert EXECUTE_NOW[settles_as] <= EXECUTE_BUDGET
    assert len(statements) <= EXECUTE_NOW[settles_as], (
        f"{settles_as}, {user_id}: {by_purpose(statements)}"
    )
