"""The documented quick starts run as written.

Every ```python block of docs/library.md (and README.md, when it has one) that mentions
AgentFrameworkBuilder is executed; top-level `await` is wrapped in an async function, a
block that calls `asyncio.run` itself runs in a worker thread, and `llm_client` is None
(the offline provider) unless the block defines it.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)

# SPEC section 4, verbatim (the `...` inside the list included).
SPEC_QUICK_START = """\
from agentflow import AgentFrameworkBuilder, IntentCategory
agent = await (AgentFrameworkBuilder()
    .with_intent_categories([IntentCategory("GREETING", "Greetings", ["hello", "hi"]), ...])
    .with_confidence_thresholds({"OUTAGE": 0.7, "ESCALATION": 0.0})
    .with_logging()
    .build(llm_client))          # llm_client may be omitted: offline provider
reply = await agent.process_message(user_id="u1", message="Hello! How do I reset my password?")
"""


def snippets() -> list[Any]:
    found = []
    for name in ("docs/library.md", "README.md"):
        path = ROOT / name
        if not path.exists():
            continue
        for index, code in enumerate(BLOCK.findall(path.read_text(encoding="utf-8"))):
            if "AgentFrameworkBuilder" in code:
                found.append(pytest.param(code, id=f"{name}#{index}"))
    return found


async def run_snippet(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"llm_client": None, "__name__": "__snippet__"}
    if "asyncio.run(" in code:
        await asyncio.to_thread(exec, compile(code, "<snippet>", "exec"), namespace)
        return namespace
    body = textwrap.indent(code, "    ")
    wrapped = f"async def __snippet__():\n{body}\n    return locals()\n"
    exec(compile(wrapped, "<snippet>", "exec"), namespace)
    result: dict[str, Any] = await namespace["__snippet__"]()
    return result


def test_the_library_docs_have_quick_starts() -> None:
    assert len(snippets()) >= 2


@pytest.mark.parametrize("code", snippets())
async def test_documented_snippet_runs(code: str) -> None:
    await run_snippet(code)


async def test_spec_quick_start_runs_verbatim_offline() -> None:
    result = await run_snippet(SPEC_QUICK_START)

    reply = result["reply"]
    assert reply.intent in ("GREETING", "OUT_OF_SCOPE")
    assert reply.metadata["offline"] is True
    assert reply.content


async def test_docs_quick_start_answers_from_its_knowledge_base() -> None:
    code = snippets()[0].values[0]

    result = await run_snippet(code)

    reply = result["reply"]
    assert reply.knowledge_ids == ["kb-reset"]
    assert not reply.escalated
    assert "Forgot password" in reply.content
