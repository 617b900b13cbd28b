"""An agent's dollar budget per UTC day, shared by every worker: reserve, run, settle.

``budget.soft_usd`` / ``budget.hard_usd`` of an agent's config bound what its runs spend in
one UTC day, whichever worker runs them. Before a run calls its LLM, the worker reserves
the run's preflight upper bound (``max_usd``) in one Redis counter per agent and day; one
Lua script compares and adds, so N concurrent runs against a hard budget admit exactly as
many as fit. When the run is done its reservation is settled to what it actually spent.
A run that fails or is cancelled keeps its reservation (its calls may have been paid for).

Amounts are integer micro-dollars (``INCRBY`` is exact; floats would drift). The counter
expires two days after its last use. When it is missing (a new day, a flushed Redis) it is
seeded from the agent's settled runs of the day in PostgreSQL. While Redis is unreachable
the day's spend is read from PostgreSQL (runs in flight not counted) and logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import redis
import structlog
from django.conf import settings
from django.db.models import Sum

from agentflow.models import Agent, Run

__all__ = ["DayReservation", "reserve", "settle", "spent_today"]

log = structlog.get_logger(__name__)

MICROS = 1_000_000
_TTL_SECONDS = 2 * 86_400

_RESERVE = """
-- KEYS[1]: the agent's spend today (micro-dollars); ARGV: amount, hard limit (-1: none),
-- ttl, seed (what PostgreSQL says was spent; '' first: a missing counter answers -1 and
-- the caller comes back with the seed, so PostgreSQL is read once a day, not every run)
if ARGV[4] == '' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end
else
  redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ARGV[3])
end
local spent = tonumber(redis.call('GET', KEYS[1]))
local amount, hard = tonumber(ARGV[1]), tonumber(ARGV[2])
if hard >= 0 and spent + amount > hard then return {0, spent} end
redis.call('INCRBY', KEYS[1], amount)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, spent}
"""


@dataclass(frozen=True, slots=True)
class DayReservation:
    """The outcome of reserving a run's upper bound against its agent's day."""

    key: str
    micros: int  # reserved (0 when refused)
    spent_before_usd: float  # the day's spend and reservations before this run
    admitted: bool
    exact: bool  # False: Redis was unreachable, the spend was read from PostgreSQL


class _Counter:
    """The Redis client and script of this process (made lazily, after any fork)."""

    client: redis.Redis | None = None
    script: object | None = None

    @classmethod
    def get(cls) -> tuple[redis.Redis, object]:
        if cls.client is None:
            client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
            cls.script = client.register_script(_RESERVE)
            cls.client = client  # published last: whoever sees the client sees the script
        return cls.client, cls.script


def _key(agent: Agent, day: str) -> str:
    return f"agentflow:budget:{agent.tenant_id}:{agent.pk}:{day}"


def _today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _settled_micros(agent: Agent, since: datetime) -> int:
    total = Run.objects.filter(agent_id=agent.pk, created_at__gte=since).aggregate(
        total=Sum("cost_usd")
    )["total"]
    return int((total or Decimal(0)) * MICROS)


def reserve(agent: Agent, max_usd: float, hard_usd: float | None) -> DayReservation:
    """Reserve ``max_usd`` of the agent's day unless it would pass ``hard_usd``."""
    day = _today()
    key = _key(agent, day.strftime("%Y%m%d"))
    amount = max(round(max_usd * MICROS), 0)
    hard = -1 if hard_usd is None else round(hard_usd * MICROS)
    try:
        _, script = _Counter.get()
        admitted, spent = script(keys=[key], args=[amount, hard, _TTL_SECONDS, ""])  # type: ignore[operator]
        if admitted == -1:  # no counter yet today
            seed = _settled_micros(agent, day)
            admitted, spent = script(keys=[key], args=[amount, hard, _TTL_SECONDS, seed])  # type: ignore[operator]
    except redis.RedisError as exc:
        log.warning("budget.redis_unavailable", agent_id=str(agent.pk), error=str(exc))
        seed = _settled_micros(agent, day)
        admitted = int(hard < 0 or seed + amount <= hard)
        return DayReservation(key, 0, seed / MICROS, bool(admitted), exact=False)
    return DayReservation(key, amount if admitted else 0, int(spent) / MICROS, bool(admitted), True)


def settle(reservation: DayReservation, actual_usd: float) -> None:
    """Replace the run's reservation with what it spent."""
    if not reservation.micros:
        return
    delta = round(actual_usd * MICROS) - reservation.micros
    try:
        client, _ = _Counter.get()
        client.incrby(reservation.key, delta)
    except redis.RedisError as exc:  # the counter keeps the upper bound: never under-counts
        log.warning("budget.settle_failed", key=reservation.key, error=str(exc))


def spent_today(agent: Agent) -> float:
    """The agent's spend and reservations today, as the next run would see them."""
    day = _today()
    try:
        client, _ = _Counter.get()
        value = client.get(_key(agent, day.strftime("%Y%m%d")))
    except redis.RedisError:
        value = None
    if value is None:
        return _settled_micros(agent, day) / MICROS
    return int(value) / MICROS
