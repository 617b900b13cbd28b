"""Preflight estimate vs actual tokens on replayed support conversations (issue 16).

    .venv/bin/python bench/preflight_accuracy.py [--data DIR] [--messages 200]

Replays BANKING77 test messages through a kernel support agent (the default support FSM,
10 BANKING77 intents, one knowledge article per intent) whose LLM is a real local
OpenAI-compatible server (tests/kernel/fake_openai_server.py). Before each message the
platform's own estimate is made (`agentflow.planners.run_preflight`, what every run does);
the run's actual tokens are the usage the server reports.

The server counts tokens with a rule other than the estimator's (which is 4 characters a
token + 4 per message): words and punctuation marks (regex ``\\w+|[^\\w\\s]``, the shape of
a BPE pre-tokenizer, no BPE merges: tiktoken is not installed), plus OpenAI's documented 3
tokens per message and 3 to prime the reply. It answers the classifier with a short intent
JSON and the answer call with a reply built from the context it was sent.

Before each message the estimate is scaled by what the agent's earlier runs taught
(`agentflow.planners.preflight_token_scale`: the median of actual ÷ uncalibrated estimate,
from the 21st run on), exactly as a run worker does.

Prints one JSON object: p50/p95 relative error |estimated - actual| / actual per run, over
every run (as GET /agents/{id}/preflight reports), uncalibrated, and after calibration.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentflow.kernel.builder import AgentFrameworkBuilder
from agentflow.planners import preflight_record, preflight_token_scale, run_preflight
from tests.kernel.fake_openai_server import FakeOpenAIServer, RecordedRequest, chat_completion

DATA = Path("/work/shared/data/banking77")
AGENT = "bench-agent"
_TOKEN = re.compile(r"\w+|[^\w\s]")


def _count(text: str) -> int:
    return len(_TOKEN.findall(text))


def _answer(request: RecordedRequest) -> Any:
    messages = request.messages
    prompt = sum(3 + _count(str(m.get("content") or "")) for m in messages) + 3
    system = str(messages[0].get("content") or "") if messages else ""
    if "Context:" in system:
        context = system.split("Context:", 1)[1]
        body = " ".join(context.split()[:70])
        content = f"Thanks for reaching out. Here is what applies to you: {body}"
    else:
        content = '{"intent": "ACTIVATE_MY_CARD", "confidence": 0.9}'
    return chat_completion(content, prompt_tokens=prompt, completion_tokens=_count(content))


def _load(data: Path, limit: int) -> tuple[list[dict[str, Any]], list[str]]:
    with (data / "train.csv").open(encoding="utf-8") as handle:
        train = list(csv.DictReader(handle))
    names = sorted({row["category"] for row in train})[:10]
    categories = [
        {
            "name": name.upper(),
            "description": name.replace("_", " "),
            "examples": [r["text"] for r in train if r["category"] == name][:5],
        }
        for name in names
    ]
    with (data / "test.csv").open(encoding="utf-8") as handle:
        messages = [r["text"] for r in csv.DictReader(handle) if r["category"] in names]
    return categories, messages[:limit]


def _articles(categories: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {
            "id": c["name"].lower(),
            "title": c["description"],
            "text": f"About {c['description']}: "
            + " ".join(f"Customers ask '{e}'. We help them step by step." for e in c["examples"]),
        }
        for c in categories
    ]


async def _replay(base_url: str, categories: list[dict[str, Any]], messages: list[str]) -> Any:
    provider = {"kind": "openai", "model": "gpt-4o-mini", "base_url": base_url, "api_key": "x"}
    kernel = {
        "name": AGENT,
        "intents": {"categories": categories},
        "llm": {"providers": [provider]},
    }
    pipeline = (
        await AgentFrameworkBuilder()
        .with_config(kernel)
        .with_knowledge(_articles(categories))
        .build()
    )
    config = {"llm": {"providers": [provider]}, "intent_categories": categories}
    rows, records = [], []
    for index, message in enumerate(messages):
        # What a run worker does: the scale learnt from the agent's earlier runs.
        scale = preflight_token_scale(records)
        estimate = run_preflight(pipeline.plan, AGENT, config, message, token_scale=scale)
        reply = await pipeline.process_message(f"user-{index}", message)
        actual = int(reply.usage.total_tokens)
        records.append({**preflight_record(estimate), "actual_tokens": actual})
        rows.append((estimate.raw_tokens, estimate.tokens, actual, scale))
    await pipeline.aclose()
    return rows


def _errors(pairs: list[tuple[int, int]]) -> dict[str, float]:
    errors = sorted(abs(e - a) / a for e, a in pairs if a > 0)
    signed = [(e - a) / a for e, a in pairs if a > 0]
    return {
        "p50_error": round(statistics.median(errors), 4),
        "p95_error": round(errors[min(len(errors) - 1, int(0.95 * len(errors)))], 4),
        "mean_signed_error": round(statistics.fmean(signed), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    categories, messages = _load(args.data, args.messages)
    with FakeOpenAIServer(default=_answer) as server:
        rows = asyncio.run(_replay(server.base_url, categories, messages))
    learnt = [row for row in rows if row[3] != 1.0]
    result = {
        "bench": "preflight_accuracy",
        "messages": len(rows),
        # every run, as GET /agents/{id}/preflight reports them (the first ones uncalibrated)
        **_errors([(calibrated, actual) for _, calibrated, actual, _ in rows]),
        "uncalibrated": _errors([(raw, actual) for raw, _, actual, _ in rows]),
        "after_calibration": {
            "runs": len(learnt),
            **(_errors([(c, a) for _, c, a, _ in learnt]) if learnt else {}),
        },
        "token_scale_last": rows[-1][3] if rows else 1.0,
        "estimated_tokens_median": statistics.median(c for _, c, _, _ in rows),
        "actual_tokens_median": statistics.median(a for _, _, a, _ in rows),
        "token_rule": "server: words+punctuation, 3/message + 3; estimator: chars/4 + 4/message"
        ", scaled by the median actual/estimate of the agent's earlier runs (from the 21st)",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
