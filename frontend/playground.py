"""The agent page's playground: try an agent as a test user, through the API's own path.

A playground message is a run like any other: ``agentflow.services.start_run`` (quotas,
usage, audit, the worker), waited for the way ``POST /agents/{id}/runs`` waits (a settled
signal subscribed before the run is enqueued). It is marked: its end user is
``playground:<username>`` (one conversation per person and agent) and its metadata says
``{"playground": true}``, which the learning loop skips.
"""

from __future__ import annotations

import contextlib
from typing import Any

import redis

from agentflow import services as run_services
from agentflow.core.conf import setting_float
from agentflow.models import Agent, Run
from agentflow.run_signals import SettledWaiter
from governance.audit import Actor

USER_PREFIX = "playground:"
METADATA = {"playground": True}
HISTORY = 5  # the person's latest playground messages shown on the agent's page


def user_id(user: Any) -> str:
    """The playground's end user for a dashboard user (Run.user_id holds 200 characters)."""
    return f"{USER_PREFIX}{user.get_username()}"[:200]


def send(*, actor: Actor, agent: Agent, user: Any, message: str) -> Run:
    """Start the run and wait for it to settle (up to RUN_MAX_WAIT_SECONDS): the run,
    settled or still in flight (the page then follows it live)."""
    request = run_services.RunRequest(
        user_id=user_id(user), message=message, metadata=dict(METADATA)
    )
    waiter: list[SettledWaiter] = []

    def listen(run_id: Any) -> None:
        # Redis down: no waiting; the run is still accepted and the page follows it.
        with contextlib.suppress(redis.RedisError):
            waiter.append(SettledWaiter(run_id))

    run = run_services.start_run(actor=actor, agent=agent, request=request, on_created=listen)
    for each in waiter:
        with contextlib.suppress(redis.RedisError):
            each.wait(setting_float("RUN_MAX_WAIT_SECONDS"))
        each.close()
    run.refresh_from_db()
    return run


def history(agent: Agent, user: Any) -> list[Run]:
    """The person's latest playground runs with this agent, newest first."""
    return list(
        Run.objects.filter(agent=agent, user_id=user_id(user), metadata__playground=True)
        .select_related("agent")
        .order_by("-created_at", "-id")[:HISTORY]
    )
