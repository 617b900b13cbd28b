"""Parallel context gathering (SPEC 4.1, fourth stage).

User memory, knowledge search, golden paths, the intent's playbook and tool
calls are independent: they run concurrently, each bounded by the branch
timeout. A branch that fails or times out is recorded and skipped; the answer
is built from whatever came back.

Stores that never wait on I/O (the in-memory ones say so with
`io_bound = False`) are awaited inline: a task per branch would cost more than
the search itself, and there is nothing to overlap.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agentflow.kernel.guardrails import wrap_untrusted
from agentflow.kernel.memory import MemoryManager
from agentflow.kernel.results import ContextItem
from agentflow.kernel.stores import GoldenPathStore, KnowledgeStore, Playbook, ProceduralStore
from agentflow.kernel.vectors import Vector

_TOOL_OUTPUT_CHARS = 2_000


@runtime_checkable
class ToolClient(Protocol):
    """Calls a named tool (same shape as the MCP SDK's `ClientSession.call_tool`)."""

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> Any: ...


@dataclass(frozen=True, slots=True)
class ToolBinding:
    """When to call a tool while gathering context, and with what arguments.

    Built from a tools config entry: `{"tool_name": str (default: the key),
    "intents": [names] (default: every intent), "arguments": {...},
    "message_argument": "query" (the argument that receives the redacted message)}`.
    """

    key: str
    tool_name: str
    intents: frozenset[str] | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)
    message_argument: str | None = "query"

    @classmethod
    def from_config(cls, key: str, config: Mapping[str, Any]) -> ToolBinding:
        intents = config.get("intents")
        arguments = config.get("arguments") or {}
        if intents is not None and (
            isinstance(intents, str) or not all(isinstance(i, str) for i in intents)
        ):
            raise ValueError(f"tool {key!r}: 'intents' must be a list of intent names")
        if not isinstance(arguments, Mapping):
            raise ValueError(f"tool {key!r}: 'arguments' must be a mapping")
        return cls(
            key=key,
            tool_name=str(config.get("tool_name") or key),
            intents=None if intents is None else frozenset(intents),
            arguments=dict(arguments),
            message_argument=config.get("message_argument", "query"),
        )

    def applies_to(self, intent: str) -> bool:
        return self.intents is None or intent in self.intents


def tool_output_text(result: Any) -> str:
    """Plain text of a tool result (strings, JSON-able data, MCP `CallToolResult`)."""
    if isinstance(result, str):
        return result
    content = getattr(result, "content", None)
    if isinstance(content, list):
        return "\n".join(str(getattr(part, "text", part)) for part in content)
    try:
        return json.dumps(result, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(result)


@dataclass(slots=True)
class Gathered:
    memory: list[ContextItem] = field(default_factory=list)
    knowledge: list[ContextItem] = field(default_factory=list)
    golden_paths: list[ContextItem] = field(default_factory=list)
    tools: list[ContextItem] = field(default_factory=list)
    playbook: Playbook | None = None
    failures: list[dict[str, str]] = field(default_factory=list)


def _io_bound(store: object) -> bool:
    return bool(getattr(store, "io_bound", True))


def _takes_intent(store: object) -> bool:
    """Whether a golden-path store's search narrows by intent (an optional keyword, so stores
    written before it keep working)."""
    try:
        parameters = inspect.signature(store.search).parameters  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return False
    return "intent" in parameters


def _is_empty(store: object) -> bool:
    # In-memory stores know their size: an empty one needs no search at all.
    try:
        return len(store) == 0  # type: ignore[arg-type]
    except TypeError:
        return False


class ContextGatherer:
    def __init__(
        self,
        *,
        memory: MemoryManager,
        knowledge: KnowledgeStore | None = None,
        golden_paths: GoldenPathStore | None = None,
        procedures: ProceduralStore | None = None,
        tool_client: ToolClient | None = None,
        tools: Sequence[ToolBinding] = (),
        knowledge_top_k: int = 3,
        golden_top_k: int = 3,
        timeout_seconds: float = 5.0,
        redact: Callable[[Any], Any] | None = None,
    ) -> None:
        self.memory = memory
        self.knowledge = knowledge
        self.golden_paths = golden_paths
        self.procedures = procedures
        self.tool_client = tool_client
        self.tools = list(tools) if tool_client is not None else []
        self.knowledge_top_k = knowledge_top_k
        self.golden_top_k = golden_top_k
        self.timeout_seconds = timeout_seconds
        self._redact = redact
        self._memory_inline = not _io_bound(memory.store)
        self._knowledge_inline = not _io_bound(knowledge)
        self._golden_inline = not _io_bound(golden_paths)
        self._golden_by_intent = golden_paths is not None and _takes_intent(golden_paths)
        self._procedures_inline = not _io_bound(procedures)

    async def _tool_call(self, binding: ToolBinding, text: str) -> ContextItem:
        arguments = dict(binding.arguments)
        if binding.message_argument:
            arguments[binding.message_argument] = text
        if self._redact is not None:
            arguments = self._redact(arguments)
        assert self.tool_client is not None
        result = await self.tool_client.call_tool(binding.tool_name, arguments)
        body = wrap_untrusted(
            tool_output_text(result), f"tool {binding.tool_name}", max_chars=_TOOL_OUTPUT_CHARS
        )
        return ContextItem("tool", binding.key, binding.tool_name, body, 1.0)

    async def gather(self, user_id: str, text: str, vector: Vector, intent: str) -> Gathered:
        gathered = Gathered()
        parallel: list[tuple[str, Awaitable[Any]]] = []
        # A branch whose store never waits on I/O is awaited right here, its failure recorded
        # (no helper coroutine per branch: this runs per message); the others run in parallel.
        if self.memory.recall_limit > 0:
            work: Awaitable[Any] = self.memory.recall(user_id, vector)
            if not self._memory_inline:
                parallel.append(("memory", work))
            else:
                try:
                    gathered.memory = await work or []
                except Exception as exc:
                    _failed(gathered, "memory", exc)
        knowledge = self.knowledge
        if knowledge is not None and self.knowledge_top_k > 0 and not _is_empty(knowledge):
            work = knowledge.search(text, vector, limit=self.knowledge_top_k)
            if not self._knowledge_inline:
                parallel.append(("knowledge", work))
            else:
                try:
                    gathered.knowledge = await work or []
                except Exception as exc:
                    _failed(gathered, "knowledge", exc)
        golden = self.golden_paths
        if golden is not None and self.golden_top_k > 0 and not _is_empty(golden):
            if self._golden_by_intent:
                work = golden.search(text, vector, limit=self.golden_top_k, intent=intent)  # type: ignore[call-arg]
            else:
                work = golden.search(text, vector, limit=self.golden_top_k)
            if not self._golden_inline:
                parallel.append(("golden_paths", work))
            else:
                try:
                    gathered.golden_paths = await work or []
                except Exception as exc:
                    _failed(gathered, "golden_paths", exc)
        if self.procedures is not None:
            lookup = self.procedures.get_playbook(intent)
            if not self._procedures_inline:
                parallel.append(("playbook", lookup))
            else:
                try:
                    gathered.playbook = await lookup
                except Exception as exc:
                    _failed(gathered, "playbook", exc)
        for binding in self.tools:
            if binding.applies_to(intent):
                parallel.append((f"tool:{binding.key}", self._tool_call(binding, text)))
        if parallel:
            await self._run_parallel(parallel, gathered)
        return gathered

    async def _run_parallel(
        self, branches: list[tuple[str, Awaitable[Any]]], gathered: Gathered
    ) -> None:
        tasks = {asyncio.ensure_future(work): name for name, work in branches}
        done, pending = await asyncio.wait(tasks, timeout=self.timeout_seconds)
        for task in pending:
            task.cancel()
            gathered.failures.append(
                {
                    "stage": f"context:{tasks[task]}",
                    "error": f"timeout after {self.timeout_seconds}s",
                }
            )
        for task in done:
            name = tasks[task]
            exc = task.exception()
            if exc is not None:
                gathered.failures.append({"stage": f"context:{name}", "error": _describe(exc)})
            elif name == "playbook":
                gathered.playbook = task.result()
            elif name.startswith("tool:"):
                gathered.tools.append(task.result())
            else:
                setattr(gathered, name, task.result() or [])


def _failed(gathered: Gathered, name: str, exc: Exception) -> None:
    gathered.failures.append({"stage": f"context:{name}", "error": _describe(exc)})


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
