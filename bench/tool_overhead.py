"""Tool call overhead: through the registry vs calling the function, and an MCP stdio round trip.

    .venv/bin/python bench/tool_overhead.py [--calls 5000] [--mcp-calls 200]

Prints JSON: µs per call (median, p95) for a direct await, the registry path of an async
tool (grant and level checks, input and output schema validation, fencing, timeout), and
the registry path with a call id and a rate limit; ms per call for an MCP tool over stdio
(session already open) through the registry.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentflow.kernel.tools import ToolCaller, ToolRegistry, tool

SERVER = Path(__file__).resolve().parents[1] / "tests" / "kernel" / "mcp_servers" / "demo_server.py"


async def lookup_fn(order_id: str, qty: int = 1) -> dict[str, Any]:
    return {"order_id": order_id, "status": "shipped", "qty": qty}


def summary(samples: list[float], scale: float) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": round(statistics.median(ordered) * scale, 2),
        "p95": round(ordered[int(len(ordered) * 0.95) - 1] * scale, 2),
        "n": len(ordered),
    }


async def timed(call: Any, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return samples


async def main(calls: int, mcp_calls: int) -> dict[str, Any]:
    lookup = tool("orders.lookup")(lookup_fn)
    limited = tool("orders.limited", rate_limit="1000000/hour")(lookup_fn)
    registry = ToolRegistry([lookup, limited])
    caller = ToolCaller.of(["orders.lookup", "orders.limited"], "execute")
    arguments: dict[str, Any] = {"order_id": "A-1001", "qty": 2}
    counter = iter(range(10**9))

    async def direct() -> Any:
        return await lookup_fn(**arguments)

    async def via_registry() -> Any:
        outcome = await registry.invoke("orders.lookup", arguments, caller=caller)
        assert outcome.ok
        return outcome

    async def via_registry_keyed() -> Any:
        outcome = await registry.invoke(
            "orders.limited", arguments, caller=caller, call_id=f"c{next(counter)}"
        )
        assert outcome.ok
        return outcome

    for fn in (direct, via_registry, via_registry_keyed):
        await timed(fn, 200)  # warm up
    result: dict[str, Any] = {
        "direct_us": summary(await timed(direct, calls), 1e6),
        "registry_us": summary(await timed(via_registry, calls), 1e6),
        "registry_call_id_rate_limit_us": summary(await timed(via_registry_keyed, calls), 1e6),
    }
    result["overhead_median_us"] = round(
        result["registry_us"]["median"] - result["direct_us"]["median"], 2
    )
    if mcp_calls:
        from agentflow.kernel.tools.mcp import McpServerConfig, McpSource

        with open(os.devnull, "w") as sink:  # noqa: ASYNC230
            config = McpServerConfig(
                "demo", "stdio", command=[sys.executable, str(SERVER)], connect_timeout=120
            )
            mcp_registry = ToolRegistry(sources=[McpSource(config, errlog=sink)])
            started = time.perf_counter()
            errors = await mcp_registry.load()
            assert not errors, errors
            result["mcp_stdio_start_and_list_ms"] = round((time.perf_counter() - started) * 1e3, 1)
            mcp_caller = ToolCaller.of([{"id": "demo.add", "safety_level": "safe"}], "execute")

            async def mcp_call() -> Any:
                outcome = await mcp_registry.invoke("demo.add", {"a": 1, "b": 2}, caller=mcp_caller)
                assert outcome.ok, outcome
                return outcome

            await timed(mcp_call, 10)
            result["mcp_stdio_call_ms"] = summary(await timed(mcp_call, mcp_calls), 1e3)
            await mcp_registry.aclose()
    result["python"] = sys.version.split()[0]
    result["cpus"] = os.cpu_count()
    result["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--mcp-calls", type=int, default=200)
    options = parser.parse_args()
    print(json.dumps(asyncio.run(main(options.calls, options.mcp_calls)), indent=2))
