"""The durable activity stream: PostgreSQL rows, carried by a Redis Stream per tenant.

An :class:`~learning.models.ActivityEvent` is written in the producer's transaction; on
commit its id is appended (``XADD``) to ``agentflow:t{tenant}:activity``. Consumers read
through one consumer group (``XREADGROUP``), process, then acknowledge (``XACK``); the
consumer records which entry delivered the event (``stream_id``, ``published_at``), so
the producer's answer costs no second write:

* a consumer that dies between reading and acknowledging leaves its entries pending;
  the sweep claims entries idle longer than ``ACTIVITY_CLAIM_IDLE_SECONDS``
  (``XAUTOCLAIM``) and processes them;
* Redis losing entries (down when the event was accepted, restarted without its data,
  trimming that outran the consumers) loses no event: the sweep compares the unprocessed
  events in PostgreSQL with the entries the stream still holds unacknowledged, and
  re-appends those it lacks once they are ``ACTIVITY_REPUBLISH_AFTER_SECONDS`` old;
* an event delivered twice is processed once in effect: processing locks the row and
  sets ``processed_at`` in the same transaction as its effects, and skips a processed row;
* the entries of one read are processed in one transaction (a run's event costs a share of
  a few statements, not a transaction of its own); if it fails, they are processed again
  one by one, so that only a faulty event is retried and counted.

Redis down at accept time degrades, never drops: the row is committed and the sweep
publishes it when Redis answers again (SPEC 14).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import structlog
from django.conf import settings
from django.db import transaction

from agentflow.core import queueing
from agentflow.core.conf import setting_float, setting_int
from learning.models import ActivityEvent

log = structlog.get_logger(__name__)

GROUP = "processors"
FIELD = "event"
TENANTS_KEY = "agentflow:activity:tenants"  # tenants that have a stream (for the sweep)
DRAIN_FLAG_TTL_SECONDS = 60
IDLE_CONSUMER_SECONDS = 3600
SCAN_CHUNK = 1000
# The task that drains a tenant's stream (learning.tasks), sent by name: the task module
# calls the consumer (learning.processing), which sits above this transport.
DRAIN_TASK = "learning.drain_activity"

Entry = tuple[str, str]  # (stream entry id, event id)
# processor(tenant_id, entries) -> an outcome label per entry
Processor = Callable[[int, list[Entry]], list[str]]

_clients: dict[str, redis.Redis] = {}
_lock = threading.Lock()


def stream_key(tenant_id: int) -> str:
    return f"agentflow:t{tenant_id}:activity"


def drain_flag(tenant_id: int) -> str:
    return f"agentflow:t{tenant_id}:activity:drain-scheduled"


def client() -> redis.Redis:
    url = settings.REDIS_URL
    with _lock:
        if url not in _clients:
            _clients[url] = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        return _clients[url]


def consumer_name() -> str:
    """Unique per process and thread: a dead process's pending entries stay attributable."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- publishing -----------------------------------------------------------------------------


def publish(tenant_id: int, event_ids: Iterable[str], *, schedule: bool = True) -> bool:
    """Append the events to the tenant's stream; False (logged) when Redis is down.

    With ``schedule``, a drain task is enqueued unless one is already scheduled (a flag
    with a TTL), to start ``ACTIVITY_DRAIN_DELAY_SECONDS`` later: a burst of deliveries
    costs one task and one transaction, not one each.
    """
    ids = [str(event_id) for event_id in event_ids]
    if not ids:
        return True
    key = stream_key(tenant_id)
    try:
        pipe = client().pipeline(transaction=False)
        for event_id in ids:
            pipe.xadd(key, {FIELD: event_id}, maxlen=setting_int("ACTIVITY_STREAM_MAXLEN"))
        pipe.sadd(TENANTS_KEY, tenant_id)
        if schedule:
            pipe.set(drain_flag(tenant_id), 1, nx=True, ex=DRAIN_FLAG_TTL_SECONDS)
        results = pipe.execute()
    except redis.RedisError as exc:
        log.warning("activity.publish_failed", tenant_id=tenant_id, error=str(exc), events=ids)
        return False
    if schedule and results[-1]:
        delay = setting_float("ACTIVITY_DRAIN_DELAY_SECONDS")
        queueing.by_name(DRAIN_TASK).apply_async((tenant_id,), countdown=delay or None)
    return True


# --- consuming ------------------------------------------------------------------------------


def _ensure_group(tenant_id: int) -> None:
    try:
        # From the start of the stream: entries appended before the group existed count too.
        client().xgroup_create(stream_key(tenant_id), GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _entries(raw: Any) -> list[Entry]:
    entries: list[Entry] = []
    for entry_id, fields in raw or []:
        if not fields:  # deleted meanwhile (trimmed): nothing to process, only to ack
            entries.append((_text(entry_id), ""))
            continue
        value = fields.get(FIELD.encode(), fields.get(FIELD, b""))
        entries.append((_text(entry_id), _text(value)))
    return entries


def read(tenant_id: int, consumer: str, count: int, block_ms: int | None = None) -> list[Entry]:
    """New entries for ``consumer`` (they stay pending until acknowledged)."""
    key = stream_key(tenant_id)
    for attempt in (1, 2):
        try:
            response = client().xreadgroup(GROUP, consumer, {key: ">"}, count=count, block=block_ms)
            break
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc) or attempt == 2:
                raise
            _ensure_group(tenant_id)  # first use, or Redis lost the stream and its group
    streams: Any = response or []
    return [entry for _, raw in streams for entry in _entries(raw)]


def claim(tenant_id: int, consumer: str, min_idle_ms: int, count: int = 100) -> list[Entry]:
    """Take over entries another consumer read but did not acknowledge within min_idle_ms."""
    key = stream_key(tenant_id)
    claimed: list[Entry] = []
    cursor = "0-0"
    try:
        while True:
            response = client().xautoclaim(
                key, GROUP, consumer, min_idle_ms, start_id=cursor, count=count
            )
            cursor = _text(response[0])
            claimed.extend(_entries(response[1]))
            if cursor == "0-0" or len(claimed) >= count:
                break
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
    return claimed


def handle(tenant_id: int, entries: list[Entry], processor: Processor) -> int:
    """Process the entries, then acknowledge them (one XACK); returns how many were.

    The entries go to the processor together (one transaction); if that raises, they go
    again one at a time, so that an entry whose processing raised alone stays pending (the
    sweep retries it after the claim idle time) and an event failing
    ``ACTIVITY_MAX_ATTEMPTS`` times is set aside as failed.
    """
    done = [entry_id for entry_id, event_id in entries if not event_id]
    todo = [entry for entry in entries if entry[1]]
    if len(todo) > 1:
        try:
            processor(tenant_id, todo)
            done += [entry_id for entry_id, _ in todo]
            todo = []
        except Exception as exc:
            log.warning(
                "activity.batch_failed", tenant_id=tenant_id, entries=len(todo), error=str(exc)
            )
    for entry_id, event_id in todo:
        try:
            processor(tenant_id, [(entry_id, event_id)])
        except Exception as exc:
            log.exception("activity.process_failed", tenant_id=tenant_id, event_id=event_id)
            if not _record_failure(event_id, exc):
                continue
        done.append(entry_id)
    if done:
        client().xack(stream_key(tenant_id), GROUP, *done)
    return len(done)


def _record_failure(event_id: str, exc: Exception) -> bool:
    """Count a failed attempt; True when the event was given up on (acknowledge it)."""
    return record_processing_failure(event_id, f"{type(exc).__name__}: {exc}")


def record_processing_failure(event_id: str, error: str) -> bool:
    """Count a failed attempt; past ``ACTIVITY_MAX_ATTEMPTS`` mark it processed as failed."""
    limit = setting_int("ACTIVITY_MAX_ATTEMPTS")
    with transaction.atomic():
        event = ActivityEvent.unscoped.select_for_update().filter(pk=event_id).first()
        if event is None or event.processed_at is not None:
            return True
        event.attempts += 1
        event.last_error = error[:500]
        given_up = event.attempts >= limit
        if given_up:
            event.processed_at = datetime.now(UTC)
            event.outcome = {"failed": event.last_error, "attempts": event.attempts}
        event.save(update_fields=["attempts", "last_error", "processed_at", "outcome"])
    if given_up:
        log.error("activity.event_failed", event_id=event_id, attempts=event.attempts)
    return given_up


def drain(
    tenant_id: int,
    processor: Processor,
    *,
    consumer: str | None = None,
    batch: int | None = None,
    budget_seconds: float = 20.0,
) -> int:
    """Process the tenant's new entries until the stream is empty or the budget is spent."""
    consumer = consumer or consumer_name()
    batch = batch or setting_int("ACTIVITY_DRAIN_BATCH")
    try:
        # Cleared before reading: an event appended from here on schedules the next drain.
        client().delete(drain_flag(tenant_id))
    except redis.RedisError:
        log.warning("activity.drain_redis_down", tenant_id=tenant_id)
        return 0
    deadline = time.monotonic() + budget_seconds
    done = 0
    while time.monotonic() < deadline:
        entries = read(tenant_id, consumer, batch)
        if not entries:
            return done
        done += handle(tenant_id, entries, processor)
    # Budget spent with entries left: hand over to a fresh task instead of hogging a worker.
    queueing.by_name(DRAIN_TASK).delay(tenant_id)
    return done


# --- recovery -------------------------------------------------------------------------------


@dataclass
class SweepReport:
    tenants: int = 0
    republished: int = 0
    claimed: int = 0
    processed: int = 0
    consumers_removed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _unacknowledged(tenant_id: int) -> set[str]:
    """Event ids the stream still holds for consumers: entries not yet delivered to the
    group, and entries delivered but not acknowledged (from the oldest pending one on)."""
    key = stream_key(tenant_id)
    start = "-"
    try:
        groups = {_text(g["name"]): g for g in client().xinfo_groups(key)}
    except redis.ResponseError:  # no stream at all
        return set()
    if GROUP in groups:
        start = "(" + _text(groups[GROUP]["last-delivered-id"])
        pending = client().xpending(key, GROUP)
        if pending.get("pending"):
            start = _text(pending["min"])
    found: set[str] = set()
    while True:
        chunk: Any = client().xrange(key, start, "+", count=SCAN_CHUNK) or []
        found.update(event_id for _, event_id in _entries(chunk) if event_id)
        if len(chunk) < SCAN_CHUNK:
            return found
        start = "(" + _text(chunk[-1][0])


def replay(tenant_id: int, now: datetime | None = None) -> int:
    """Re-append this tenant's unprocessed events that the stream does not hold.

    Only events older than ``ACTIVITY_REPUBLISH_AFTER_SECONDS``: a younger one may still be
    on its way (its producer's commit hook appends it right after the commit).
    """
    now = now or datetime.now(UTC)
    settled = now - timedelta(seconds=setting_float("ACTIVITY_REPUBLISH_AFTER_SECONDS"))
    candidates = list(
        ActivityEvent.unscoped.filter(
            tenant_id=tenant_id, processed_at__isnull=True, created_at__lt=settled
        )
        .order_by("created_at")
        .values_list("id", flat=True)[:5000]
    )
    if not candidates:
        return 0
    held = _unacknowledged(tenant_id)
    missing = [str(event_id) for event_id in candidates if str(event_id) not in held]
    if missing and publish(tenant_id, missing, schedule=False):
        log.info("activity.replayed", tenant_id=tenant_id, events=len(missing))
        return len(missing)
    return 0


def _sweep_tenants() -> set[int]:
    pending = set(
        ActivityEvent.unscoped.filter(processed_at__isnull=True)
        .values_list("tenant_id", flat=True)
        .distinct()
    )
    try:
        streams = {int(_text(t)) for t in client().smembers(TENANTS_KEY)}
    except redis.RedisError:
        streams = set()
    return pending | streams


def _forget_idle_consumers(tenant_id: int) -> int:
    removed = 0
    try:
        consumers = client().xinfo_consumers(stream_key(tenant_id), GROUP)
    except redis.ResponseError:
        return 0
    for info in consumers:
        name = _text(info.get("name"))
        if info.get("pending") == 0 and int(info.get("idle", 0)) > IDLE_CONSUMER_SECONDS * 1000:
            client().xgroup_delconsumer(stream_key(tenant_id), GROUP, name)
            removed += 1
    return removed


def sweep(processor: Processor) -> SweepReport:
    """Beat task body: replay from PostgreSQL, claim dead consumers' entries, drain."""
    report = SweepReport()
    consumer = consumer_name()
    min_idle_ms = int(setting_float("ACTIVITY_CLAIM_IDLE_SECONDS") * 1000)
    for tenant_id in sorted(_sweep_tenants()):
        report.tenants += 1
        try:
            report.republished += replay(tenant_id)
            claimed = claim(tenant_id, consumer, min_idle_ms)
            report.claimed += len(claimed)
            report.processed += handle(tenant_id, claimed, processor)
            report.processed += drain(tenant_id, processor, consumer=consumer)
            report.consumers_removed += _forget_idle_consumers(tenant_id)
        except redis.RedisError as exc:
            log.warning("activity.sweep_redis_down", tenant_id=tenant_id, error=str(exc))
            break  # Redis is down for everyone: the next sweep retries
    return report


def pending_count(tenant_id: int) -> int:
    """Entries read but not yet acknowledged (0 when the stream or group does not exist)."""
    try:
        info = client().xpending(stream_key(tenant_id), GROUP)
    except redis.ResponseError:
        return 0
    return int(info.get("pending", 0))
