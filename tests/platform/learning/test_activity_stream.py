"""The durable activity stream: PostgreSQL is the source of truth, Redis Streams carry it.

Redis restarted between publish and consume (keeping or losing its data), a consumer
SIGKILLed mid-batch, a processor that fails: nothing is lost and nothing is processed
twice in effect.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import TestCase

from agentflow.server.embedded import EmbeddedRedis
from learning import activity, processing, services
from learning.models import ActivityEvent, GraphEdge, GraphNode
from tests.platform.api.conftest import Persona

ROOT = Path(__file__).resolve().parents[3]


def _ticket_event(persona: Persona, n: int) -> ActivityEvent:
    """A webhook-like event whose processing adds one customer, one ticket, one edge."""
    return services.record_event(
        persona.tenant.pk,
        "generic.ticket.created",
        {
            "type": "ticket.created",
            "customer": {"id": f"c{n}"},
            "ticket": {"id": f"t{n}", "subject": f"ticket {n}"},
        },
        source="generic",
    )


def _record(persona: Persona, count: int) -> list[str]:
    with TestCase.captureOnCommitCallbacks(execute=True):
        return [str(_ticket_event(persona, n).pk) for n in range(count)]


def _assert_each_processed_once(persona: Persona, ids: list[str]) -> None:
    events = ActivityEvent.unscoped.filter(pk__in=ids)
    assert events.count() == len(ids)
    assert not events.filter(processed_at__isnull=True).exists(), "an event was lost"
    # Effects exactly once: one ticket node and one "opened" edge per event, no more.
    assert GraphNode.unscoped.filter(tenant=persona.tenant, kind="ticket").count() == len(ids)
    assert GraphEdge.unscoped.filter(tenant=persona.tenant, kind="opened").count() == len(ids)
    assert activity.pending_count(persona.tenant.pk) == 0


@pytest.fixture
def private_redis(tmp_path: Path, settings: Any) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own for the stream, so restarting it disturbs nothing else."""
    server = EmbeddedRedis(tmp_path / "redis")
    settings.REDIS_URL = server.start()
    yield server
    server.stop()


def test_published_events_are_consumed_and_acknowledged(owner: Persona) -> None:
    ids = _record(owner, 3)
    assert activity.client().xlen(activity.stream_key(owner.tenant.pk)) == 3
    assert processing.drain(owner.tenant.pk) == 3
    _assert_each_processed_once(owner, ids)
    events = ActivityEvent.unscoped.filter(pk__in=ids)
    assert all(e.published_at and e.stream_id for e in events)  # the entry that carried it
    assert processing.drain(owner.tenant.pk) == 0


def _drains_queued_for(tenant_id: int) -> list[dict[str, Any]]:
    messages = [json.loads(raw) for raw in activity.client().lrange("learning", 0, -1)]
    return [
        m
        for m in messages
        if m["headers"]["task"] == activity.DRAIN_TASK
        and m["headers"]["argsrepr"] == f"({tenant_id},)"
    ]


def test_a_burst_costs_one_drain_that_starts_a_little_later(owner: Persona, settings: Any) -> None:
    """The delay lets the burst gather, so that one transaction consumes all of it."""
    settings.AGENTFLOW = {**settings.AGENTFLOW, "ACTIVITY_DRAIN_DELAY_SECONDS": 30.0}
    activity.client().delete(activity.drain_flag(owner.tenant.pk))
    queued_before = len(_drains_queued_for(owner.tenant.pk))
    sent_at = time.time()
    _record(owner, 3)
    drains = _drains_queued_for(owner.tenant.pk)[queued_before:]
    assert len(drains) == 1
    starts_at = datetime.fromisoformat(drains[0]["headers"]["eta"]).timestamp()
    assert sent_at + 29 < starts_at < time.time() + 31
    assert processing.drain(owner.tenant.pk) == 3  # what the task does: all three at once


def test_a_redis_restart_between_publish_and_consume_loses_and_doubles_nothing(
    owner: Persona, private_redis: EmbeddedRedis
) -> None:
    ids = _record(owner, 5)
    read_before = activity.read(owner.tenant.pk, "first-consumer", 2)  # read, not acked
    assert len(read_before) == 2
    private_redis.stop()
    private_redis.start()  # persistent: stream, group and pending entries survive
    assert processing.drain(owner.tenant.pk) == 3
    # The two entries read before the restart are still pending: the sweep claims them.
    assert activity.pending_count(owner.tenant.pk) == 2
    assert processing.sweep().claimed == 0  # not idle long enough yet (60 s by default)
    claimed = activity.claim(owner.tenant.pk, "rescuer", min_idle_ms=0)
    assert {entry for _, entry in claimed} == {entry for _, entry in read_before}
    assert processing.handle(owner.tenant.pk, claimed) == 2
    _assert_each_processed_once(owner, ids)


def test_redis_losing_its_data_is_recovered_from_postgresql(
    owner: Persona, private_redis: EmbeddedRedis, settings: Any
) -> None:
    settings.AGENTFLOW = {**settings.AGENTFLOW, "ACTIVITY_REPUBLISH_AFTER_SECONDS": 0}
    ids = _record(owner, 4)
    private_redis.stop()
    for data in ("appendonly.aof", "dump.rdb"):  # Redis 6.2's persistence files
        (private_redis.home / data).unlink(missing_ok=True)
    private_redis.start()
    assert activity.client().exists(activity.stream_key(owner.tenant.pk)) == 0  # really lost
    assert processing.drain(owner.tenant.pk) == 0  # the stream has nothing to give
    report = processing.sweep()
    assert report.republished == 4
    _assert_each_processed_once(owner, ids)
    assert processing.sweep().republished == 0  # processed events are never republished


def test_the_sweep_republishes_only_what_the_stream_lacks(owner: Persona, settings: Any) -> None:
    """Entries waiting to be read, or read and not yet acknowledged, are left to consumers
    and claims; only an event whose entry is gone (here: trimmed away) is appended again."""
    settings.AGENTFLOW = {**settings.AGENTFLOW, "ACTIVITY_REPUBLISH_AFTER_SECONDS": 0}
    ids = _record(owner, 4)
    assert len(activity.read(owner.tenant.pk, "slow-consumer", 1)) == 1  # one in hand
    assert activity.replay(owner.tenant.pk) == 0
    key = activity.stream_key(owner.tenant.pk)
    entries: Any = activity.client().xrange(key, "-", "+", count=2)
    activity.client().xdel(key, entries[1][0])  # the oldest undelivered, as trimming would
    assert activity.replay(owner.tenant.pk) == 1
    assert processing.drain(owner.tenant.pk) == 3  # two left from before, one appended again
    claimed = activity.claim(owner.tenant.pk, "rescuer", min_idle_ms=0)
    assert processing.handle(owner.tenant.pk, claimed) == 1
    _assert_each_processed_once(owner, ids)


def test_events_accepted_while_redis_is_down_are_published_later(
    owner: Persona, private_redis: EmbeddedRedis, settings: Any
) -> None:
    settings.AGENTFLOW = {**settings.AGENTFLOW, "ACTIVITY_REPUBLISH_AFTER_SECONDS": 0}
    private_redis.stop()
    ids = _record(owner, 2)  # the producers' commits succeed; publishing fails quietly
    report = processing.sweep()
    assert report.republished == 0  # Redis still down: nothing to do, nothing raised
    private_redis.start()
    assert processing.sweep().republished == 2
    _assert_each_processed_once(owner, ids)


def test_a_processing_failure_is_retried_then_set_aside(owner: Persona, settings: Any) -> None:
    settings.AGENTFLOW = {**settings.AGENTFLOW, "ACTIVITY_MAX_ATTEMPTS": 2}
    (event_id,) = _record(owner, 1)

    def broken(tenant_id: int, entries: list[activity.Entry]) -> list[str]:
        raise RuntimeError("graph store unavailable")

    entries = activity.read(owner.tenant.pk, "c1", 10)
    assert activity.handle(owner.tenant.pk, entries, broken) == 0  # stays pending
    assert activity.pending_count(owner.tenant.pk) == 1
    event = ActivityEvent.unscoped.get(pk=event_id)
    assert (event.attempts, event.processed_at) == (1, None)
    assert event.last_error == "RuntimeError: graph store unavailable"
    claimed = activity.claim(owner.tenant.pk, "c2", min_idle_ms=0)
    assert activity.handle(owner.tenant.pk, claimed, broken) == 1  # given up: acknowledged
    event.refresh_from_db()
    assert event.processed_at is not None
    assert event.outcome == {"failed": "RuntimeError: graph store unavailable", "attempts": 2}
    assert activity.pending_count(owner.tenant.pk) == 0


def test_a_failing_event_fails_alone_not_its_batch(owner: Persona) -> None:
    ids = _record(owner, 3)
    poison = ids[1]

    def failing_on_poison(tenant_id: int, entries: list[activity.Entry]) -> list[str]:
        if any(event_id == poison for _, event_id in entries):
            raise RuntimeError("graph store unavailable")
        return processing.process_events(tenant_id, entries)

    entries = activity.read(owner.tenant.pk, "c1", 10)
    assert len(entries) == 3
    assert activity.handle(owner.tenant.pk, entries, failing_on_poison) == 2
    assert activity.pending_count(owner.tenant.pk) == 1  # only the poison is retried
    unprocessed = ActivityEvent.unscoped.filter(pk__in=ids, processed_at__isnull=True)
    assert [(str(e.pk), e.attempts) for e in unprocessed] == [(poison, 1)]
    assert ActivityEvent.unscoped.get(pk=ids[0]).attempts == 0
    retried = activity.claim(owner.tenant.pk, "c2", min_idle_ms=0)  # what the sweep does
    assert processing.handle(owner.tenant.pk, retried) == 1
    _assert_each_processed_once(owner, ids)


# --- a consumer process killed mid-batch ------------------------------------------------------

DOOMED_CONSUMER = """
import sys, time
import django
django.setup()
from learning import activity, processing
tenant_id = int(sys.argv[1])
entries = activity.read(tenant_id, "doomed", 10)
processing.handle(tenant_id, entries[:3])  # three done and acknowledged, seven in hand
print(len(entries), flush=True)
time.sleep(600)
"""


def _test_database_url() -> str:
    db = connection.settings_dict
    return f"postgresql://{db['USER']}:@/{db['NAME']}?host={db['HOST']}"


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_consumer_killed_mid_batch_leaves_its_entries_to_another(
    owner: Persona, settings: Any, tmp_path: Path
) -> None:
    ids = [str(_ticket_event(owner, n).pk) for n in range(10)]  # autocommit: published now
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "DJANGO_SETTINGS_MODULE": "agentflow.server.settings",
        "DB_POOL_MAX_SIZE": "0",
    }
    log = tmp_path / "doomed.log"
    with (
        log.open("wb") as errors,
        subprocess.Popen(
            [sys.executable, "-c", DOOMED_CONSUMER, str(owner.tenant.pk)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            start_new_session=True,
        ) as doomed,
    ):
        try:
            assert doomed.stdout is not None
            line = doomed.stdout.readline()
            assert line.strip() == b"10", log.read_text()[-2000:]
        finally:
            os.killpg(doomed.pid, signal.SIGKILL)  # mid-batch: seven entries read, not acked
            doomed.wait(10)
    processed = ActivityEvent.unscoped.filter(pk__in=ids, processed_at__isnull=False).count()
    assert processed == 3
    assert activity.pending_count(owner.tenant.pk) == 7
    time.sleep(0.3)
    settings.AGENTFLOW = {**settings.AGENTFLOW, "ACTIVITY_CLAIM_IDLE_SECONDS": 0.2}
    report = processing.sweep()  # what beat runs: claims the dead consumer's entries
    assert report.claimed == 7
    _assert_each_processed_once(owner, ids)
