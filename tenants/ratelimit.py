"""Requests-per-minute limits, enforced atomically in Redis.

One Lua script increments the tenant's and the key's counters of the current
minute and rolls both back if either passes its limit, so N concurrent requests
against a limit of L admit exactly L — no read-then-write race. While Redis is
unreachable the limit fails open (logged): the API keeps serving from PostgreSQL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
import structlog
from django.conf import settings

log = structlog.get_logger(__name__)

_SCRIPT = """
-- returns 0 when admitted, else the 1-based index of the first limit exceeded
local failed = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i])
  if limit >= 0 then
    local count = redis.call('INCR', key)
    if count == 1 then redis.call('EXPIRE', key, 120) end
    if count > limit and failed == 0 then failed = i end
  end
end
if failed > 0 then
  for i, key in ipairs(KEYS) do
    if tonumber(ARGV[i]) >= 0 then redis.call('DECR', key) end
  end
end
return failed
"""

# The client and its script are published together, by one assignment: a request thread
# that found the client set while another thread was still registering the script used to
# call None (a 500 under concurrent first requests). A race only builds a spare pair.
_connection: tuple[redis.Redis, object] | None = None


def _redis() -> tuple[redis.Redis, object]:
    global _connection
    connection = _connection
    if connection is None:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
        connection = _connection = (client, client.register_script(_SCRIPT))
    return connection


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit_name: str | None = None
    retry_after: int = 0


def check_request_rate(
    *, tenant_id: int, key_id: int | None, tenant_limit: int | None, key_limit: int | None
) -> RateDecision:
    now = time.time()
    minute = int(now // 60)
    keys = [
        f"agentflow:t{tenant_id}:rpm:{minute}",
        f"agentflow:t{tenant_id}:k{key_id}:rpm:{minute}",
    ]
    limits = [
        -1 if tenant_limit is None else tenant_limit,
        -1 if key_limit is None or key_id is None else key_limit,
    ]
    _, script = _redis()
    try:
        failed = int(script(keys=keys, args=limits))  # type: ignore[operator]
    except redis.RedisError as exc:
        # Redis down: admit rather than refuse everything. Reads need only PostgreSQL and
        # quotas that matter (runs, money) are counted there; this limit only smooths.
        log.warning("ratelimit.unavailable", error=f"{type(exc).__name__}: {exc}")
        return RateDecision(True)
    if failed == 0:
        return RateDecision(True)
    name = "requests_per_minute" if failed == 1 else "requests_per_minute_per_key"
    return RateDecision(False, name, max(1, 60 - int(now % 60)))
