"""The documented quick starts run as written.

Every ```python block of docs/library.md (and README.md, when it has one) that mentions
AgentFrameworkBuilder is executed; top-level `await` is wrapped in an async function, a
block that calls `asyncio.run` itself runs in a worker thread, and `llm_client` is None
(the offline provider) unless the block defines it.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
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


def readme_library_script() -> str:
    """The README's library quick start: the python block after its heading."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Library quick start") :]
    match = BLOCK.search(section)
    assert match is not None, "README's library quick start has no python block"
    return match.group(1)


def test_readme_library_quick_start_runs_as_a_script_and_answers(tmp_path: Path) -> None:
    """Saved as a file and run with the project's Python, as the README says: it answers
    from its knowledge, without escalating."""
    script = tmp_path / "quickstart.py"
    script.write_text(readme_library_script(), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    answer, summary = result.stdout.strip().splitlines()
    assert "choose 'Forgot password'" in answer
    assert summary == "PASSWORD_RESET 0.67 False ['kb-reset']"
    assert summary in (ROOT / "README.md").read_text(encoding="utf-8")  # what it says it prints


def test_docs_never_say_pip_install_agentflow() -> None:
    """`agentflow` on PyPI is someone else's package: the docs install from this repository."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"pip install\s+agentflow\b(?![\[ ]*@)", text), path.name
