"""Tools agents can call: a deny-by-default registry with Python, HTTP and MCP sources.

MCP support (`agentflow.kernel.tools.mcp`) imports the `mcp` SDK, which is slow to import;
it is only imported by whoever uses it.
"""

from agentflow.kernel.tools.base import (
    APPROVER_ROLES,
    PERMISSION_LEVELS,
    SAFETY_LEVELS,
    OutcomeStatus,
    PermissionLevel,
    SafetyLevel,
    Tool,
    ToolCaller,
    ToolError,
    ToolGrant,
    ToolOutcome,
    ToolView,
    level_allows,
    parse_grants,
)
from agentflow.kernel.tools.fencing import fence_for_prompt, fence_output
from agentflow.kernel.tools.functions import function_tool, tool
from agentflow.kernel.tools.ratelimit import InMemoryRateLimiter, RateLimit, RateLimiter
from agentflow.kernel.tools.registry import ToolRegistry, ToolSource

__all__ = [
    "APPROVER_ROLES",
    "PERMISSION_LEVELS",
    "SAFETY_LEVELS",
    "InMemoryRateLimiter",
    "OutcomeStatus",
    "PermissionLevel",
    "RateLimit",
    "RateLimiter",
    "SafetyLevel",
    "Tool",
    "ToolCaller",
    "ToolError",
    "ToolGrant",
    "ToolOutcome",
    "ToolRegistry",
    "ToolSource",
    "ToolView",
    "fence_for_prompt",
    "fence_output",
    "function_tool",
    "level_allows",
    "parse_grants",
    "tool",
]
