"""A tenant's run quotas when a run is accepted: exact, without a lock every run takes.

``concurrent_runs`` and ``runs_per_month`` grow with every accepted run, so two concurrent
202s must not both take the last slot. Each 202 *claims* its run in one Redis sorted set
per tenant (member ``"<run id>|<claim ms>"``, score a per-tenant sequence number) by one
Lua compare-and-add, against what PostgreSQL has committed (active runs, the month's
usage) plus the claims not committed yet. One SQL statement reads the committed figures
and which of the claims' runs exist, in one snapshot: a claim whose run exists is counted
by PostgreSQL, not again as a claim; one whose run does not exist yet is counted as a claim.
A committed claim stays in the set for ``COMMITTED_GRACE_MS``: a 202 that read PostgreSQL
before that run committed still finds it there and counts it.
A claim made after the snapshot may or may not be committed in it: when counting it or
not would decide differently, the 202 reads again (only at the edge of a quota).

A 202 whose transaction fails returns its claim at once; a claim whose run never appears
(a process killed mid-202, an outer transaction rolled back) stops counting after
``CLAIM_GRACE_MS``. ``tokens_per_month`` and ``dollars_per_month`` are spent by runs as they
execute, not by the 202: they are read, not claimed. While Redis is unreachable the 202
takes today's exact PostgreSQL path: the tenant row locked, the quotas counted under it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import redis
import structlog
from django.conf import settings
from django.db import connection
from django.db.models import Sum

from agentflow.core.api.exceptions import ContractError, quota_exceeded
from agentflow.models import Run, RunStatus
from tenants.models import Tenant, UsageDay
from tenants.quotas import Quotas

__all__ = ["Claim", "admit", "month_bounds", "release"]

log = structlog.get_logger(__name__)

ACTIVE = (RunStatus.PENDING, RunStatus.PROCESSING)  # what concurrent_runs counts
CLAIM_GRACE_MS = 60_000  # far longer than a 202's transaction
COMMITTED_GRACE_MS = 5_000  # far longer than a 202's read-to-claim window (milliseconds)
_TTL_SECONDS = 2 * 86_400
# Each undecided read means another 202 claimed meanwhile: the reads end once the edge
# settles (at most one per run admitted meanwhile); a bound against a 202 starving there.
_ATTEMPTS = 32

_SNAPSHOT = """
-- KEYS[1]: the tenant's claims, KEYS[2]: its sequence. {sequence now, claim, claim, ...}
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
table.insert(members, 1, seq)
return members
"""

_CLAIM = """
-- ARGV: snapshot sequence, member, concurrent limit (-1: none), active runs committed,
-- monthly run limit (-1: none), runs committed this month, ttl, how many claims follow
-- that the snapshot saw committed (not counted again), then those claims, then claims to
-- drop (long committed, or stale). {1, 0}: claimed; {0, q}: quota q (1 concurrent_runs,
-- 2 runs_per_month) is full; {-1, q}: undecided, read again.
local seen = tonumber(ARGV[8])
for i = 9 + seen, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
local snap = tonumber(ARGV[1])
local older = redis.call('ZCOUNT', KEYS[1], '-inf', snap)
for i = 9, 8 + seen do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then older = older - 1 end
end
local newer = redis.call('ZCOUNT', KEYS[1], '(' .. snap, '+inf')
local concurrent, active = tonumber(ARGV[3]), tonumber(ARGV[4])
local monthly, runs = tonumber(ARGV[5]), tonumber(ARGV[6])
local function full(pending)
  if concurrent >= 0 and active + pending >= concurrent then return 1 end
  if monthly >= 0 and runs + pending >= monthly then return 2 end
  return 0
end
-- The newer claims: all committed in the snapshot (low) or none of them (high).
local low, high = full(older), full(older + newer)
if low ~= high then return {-1, high} end
if high ~= 0 then return {0, high} end
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], seq, ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return {1, 0}
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """A run's place in its tenant's claims, returned if its 202 fails."""

    key: str
    member: str


@dataclass(frozen=True, slots=True)
class _Committed:
    """What PostgreSQL has committed for the tenant, and which claimed runs exist."""

    active: int
    runs: int
    tokens: int
    dollars: Decimal
    found: frozenset[str]


class _Scripts:
    """The Redis client and scripts of this process (made lazily, after any fork)."""

    client: redis.Redis | None = None
    snapshot: Any = None
    claim: Any = None

    @classmethod
    def get(cls) -> tuple[redis.Redis, Any, Any]:
        if cls.client is None:
            client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
            cls.snapshot = client.register_script(_SNAPSHOT)
            cls.claim = client.register_script(_CLAIM)
            # Published last: a request thread that sees the client sees its scripts (the
            # rate limiter once answered 500 when a thread found the client but no script).
            cls.client = client
        return cls.client, cls.snapshot, cls.claim


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start, (start + timedelta(days=32)).replace(day=1)


def admit(tenant: Tenant, run_id: uuid.UUID, now: datetime) -> Claim | None:
    """Raise 429/402 naming the exhausted quota, or admit the run (its claim, if it took one).

    Call inside the 202's transaction; on its failure hand the claim to :func:`release`.
    """
    quotas = tenant.quotas
    if quotas.concurrent_runs is None and quotas.runs_per_month is None:
        if quotas.tokens_per_month is not None or quotas.dollars_per_month is not None:
            _check_spend(quotas, _read(tenant.pk, now, [], count_active=False), now)
        return None
    try:
        return _claim(tenant, run_id, now)
    except redis.RedisError as exc:
        log.warning("run_quotas.redis_unavailable", tenant_id=tenant.pk, error=str(exc))
    _locked_check(tenant, now)
    return None


def release(claim: Claim | None) -> None:
    """Return a failed 202's claim; if Redis is unreachable it goes stale on its own."""
    if claim is None:
        return
    try:
        client, _, _ = _Scripts.get()
        client.zrem(claim.key, claim.member)
    except redis.RedisError as exc:
        log.warning("run_quotas.release_failed", key=claim.key, error=str(exc))


def _claim(tenant: Tenant, run_id: uuid.UUID, now: datetime) -> Claim:
    quotas = tenant.quotas
    key = f"agentflow:runclaims:{tenant.pk}"
    keys = [key, f"{key}:seq"]
    member = f"{run_id}|{int(time.time() * 1000)}"
    _, snapshot, claim = _Scripts.get()
    full = 0
    for _attempt in range(_ATTEMPTS):
        seq, *members = snapshot(keys=keys)
        claimed = [m.decode() for m in members]
        committed = _read(
            tenant.pk, now, [m.split("|")[0] for m in claimed], quotas.concurrent_runs is not None
        )
        seen, drop = _sort_claims(claimed, committed.found)
        args = [seq, member, _limit(quotas.concurrent_runs), committed.active]
        args += [_limit(quotas.runs_per_month), committed.runs, _TTL_SECONDS]
        args += [len(seen), *seen, *drop]
        outcome, full = claim(keys=keys, args=args)
        if outcome == 1:
            admitted = Claim(key, member)
            try:
                _check_spend(quotas, committed, now)
            except ContractError:
                release(admitted)
                raise
            return admitted
        if outcome == 0:
            break
    # Full, or still undecided after every attempt (claims racing at the edge): refused.
    raise _refusal("concurrent_runs" if full == 1 else "runs_per_month", now)


def _sort_claims(claimed: list[str], found: frozenset[str]) -> tuple[list[str], list[str]]:
    """The claims seen committed (counted by PostgreSQL), and those to drop for good."""
    now_ms = int(time.time() * 1000)
    seen: list[str] = []
    drop: list[str] = []
    for member in claimed:
        run_id, _, claimed_ms = member.partition("|")
        age = now_ms - int(claimed_ms)
        if run_id in found:
            (drop if age > COMMITTED_GRACE_MS else seen).append(member)
        elif age > CLAIM_GRACE_MS:
            drop.append(member)
    return seen, drop


def _limit(value: int | None) -> int:
    return -1 if value is None else value


def _read(tenant_id: int, now: datetime, run_ids: list[str], count_active: bool) -> _Committed:
    """One statement, one snapshot: active runs, the month's usage, which claimed runs exist."""
    runs, usage = Run._meta.db_table, UsageDay._meta.db_table
    params: list[Any] = []
    active = "0"  # no concurrent_runs limit: nothing to count
    if count_active:
        active = f"(SELECT count(*) FROM {runs} WHERE tenant_id = %s AND status IN (%s, %s))"  # noqa: S608
        params += [tenant_id, *ACTIVE]
    sql = f"""
        SELECT {active}, coalesce(sum(u.runs), 0), coalesce(sum(u.tokens), 0),
            coalesce(sum(u.dollars), 0),
            ARRAY(SELECT r.id::text FROM {runs} r
                  WHERE r.tenant_id = %s AND r.id = ANY(%s::uuid[]))
        FROM {usage} u WHERE u.tenant_id = %s AND u.day >= %s
    """  # noqa: S608 -- table names from the models; every value is a parameter
    params += [tenant_id, run_ids, tenant_id, month_bounds(now)[0].date()]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        active_runs, month_runs, tokens, dollars, found = cursor.fetchone()
    return _Committed(active_runs, month_runs, tokens, Decimal(dollars), frozenset(found))


def _check_spend(quotas: Quotas, committed: _Committed, now: datetime) -> None:
    if quotas.tokens_per_month is not None and committed.tokens >= quotas.tokens_per_month:
        raise _refusal("tokens_per_month", now)
    if quotas.dollars_per_month is not None and committed.dollars >= quotas.dollars_per_month:
        raise _refusal("dollars_per_month", now)


def _refusal(limit: str, now: datetime) -> ContractError:
    if limit == "concurrent_runs":
        # No clock time: the slot frees when one of the tenant's runs settles.
        return quota_exceeded(limit, 1, None)
    next_month = month_bounds(now)[1]
    resets = next_month.isoformat().replace("+00:00", "Z")
    until_reset = int((next_month - now).total_seconds())
    hard = limit == "dollars_per_month"
    return quota_exceeded(limit, until_reset, resets, hard_budget=hard)


def _locked_check(tenant: Tenant, now: datetime) -> None:
    """Redis down: the tenant row lock serialises the tenant's 202s; counted under it.

    NO KEY UPDATE: it must not block the foreign-key checks that every insert of a
    tenant-owned row makes (FOR KEY SHARE), or commits deadlock.
    """
    locked = Tenant.objects.select_for_update(no_key=True).get(pk=tenant.pk)
    quotas = locked.quotas
    limit = quotas.concurrent_runs
    if limit is not None and Run.objects.filter(status__in=ACTIVE).count() >= limit:
        raise _refusal("concurrent_runs", now)
    usage = UsageDay.objects.filter(day__gte=month_bounds(now)[0].date()).aggregate(
        runs=Sum("runs"), tokens=Sum("tokens"), dollars=Sum("dollars")
    )
    if quotas.runs_per_month is not None and (usage["runs"] or 0) >= quotas.runs_per_month:
        raise _refusal("runs_per_month", now)
    committed = _Committed(0, 0, usage["tokens"] or 0, usage["dollars"] or Decimal(0), frozenset())
    _check_spend(quotas, committed, now)
