"""Kernel overhead per message: AgentFlow vs a plain-asyncio floor vs LangGraph (SPEC 13).

    .venv/bin/python bench/kernel_overhead.py            # prints one JSON object

Every variant does the same five stages with the same objects: classify (one call of the
same classifier, plus one embedding of the message) → user memory ∥ knowledge search (the
same in-memory store classes, same contents) → respond (the same zero-latency scripted
LLM) → evaluate confidence → deliver (remember the exchange) or escalate. What AgentFlow
adds on top is what it is measured for: per-user session and lock, thread detection,
handler routing, cost metering, per-stage timings and a typed reply.

Sections of the output:
* `latency`: one message at a time, >= 2000 messages per variant, interleaved in rounds so
  that load on a shared machine hits every variant alike; median and p95 in microseconds.
* `agentflow_stage_medians_us`: where AgentFlow's time goes, from its own stage timings;
  `floor_stage_medians_us`: the floor's stages (awaited inline) timed the same way.
* `floor_differences`: what AgentFlow must do per message that the floor leaves out, so
  that the ratio is read for what it is (the floor is not weakened to shrink it).
* `concurrent_500_users_x_4`: 500 users x 4 messages at once, each variant in a fresh
  child process: messages per second, RSS before, peak RSS and RSS growth.
* `real_stage_work`: the floor and AgentFlow again with unique messages (no embedding
  cache hits) and the trained offline intent classifier, to show the overhead in context.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypedDict

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentflow import AgentFrameworkBuilder, IntentCategory
from agentflow.kernel.inmemory import InMemoryKnowledgeStore, InMemoryMemoryStore
from agentflow.kernel.intents import (
    OUT_OF_SCOPE,
    IntentResult,
    OfflineIntentClassifier,
)
from agentflow.kernel.llm.base import (
    ChatMessage,
    EmbeddingResponse,
    LLMResponse,
    TokenUsage,
)
from agentflow.kernel.llm.embeddings import OfflineEmbedder
from agentflow.kernel.stores import KnowledgeDocument, MemoryCase

THRESHOLD = 0.6
USERS = 100
CATEGORIES = [
    IntentCategory("LOGIN", "Login problems", ["I can't log in", "my password is rejected"]),
    IntentCategory("BILLING", "Invoices", ["my invoice is wrong", "I was charged twice"]),
    IntentCategory("STORAGE", "Buckets", ["S3 bucket access denied", "upload files to S3"]),
    IntentCategory("OUTAGE", "Outages", ["the site is down", "errors in production"]),
]
KEYWORDS = {
    "login": "LOGIN", "password": "LOGIN", "sign": "LOGIN",
    "invoice": "BILLING", "charged": "BILLING", "refund": "BILLING",
    "s3": "STORAGE", "bucket": "STORAGE", "upload": "STORAGE",
    "down": "OUTAGE", "errors": "OUTAGE", "outage": "OUTAGE",
}  # fmt: skip
MESSAGES = [
    "I can't log in to my account",
    "My password is rejected since this morning",
    "How do I reset my password?",
    "My invoice is wrong this month",
    "I was charged twice for the same order",
    "Can I get a refund for last month?",
    "S3 bucket access denied when uploading",
    "How do I upload files to my bucket?",
    "The site is down for all our users",
    "We see errors in production since the deploy",
    "Thanks, that fixed it!",
    "What is the weather like on Mars?",
]
KNOWLEDGE = [
    KnowledgeDocument(f"kb-{i}", title, text)
    for i, (title, text) in enumerate(
        [
            ("Resetting a password", "Open the sign-in page and choose Forgot password."),
            ("Login errors", "Clear cookies, then sign in again; accounts lock after 5 tries."),
            ("Double charges", "Double charges are refunded to the card within 5 days."),
            ("Invoices", "Invoices are issued on the 1st; corrections take two days."),
            ("S3 permissions", "Grant s3:PutObject to the role that uploads to the bucket."),
            ("Status page", "Outages are announced on the status page with updates."),
        ]
        * 5
    )
]


class KeywordClassifier:
    """The benchmark's classifier: cheap, so that framework overhead is not hidden."""

    def classify_sync(self, text: str) -> IntentResult:
        for word in text.lower().replace("?", " ").replace(",", " ").split():
            intent = KEYWORDS.get(word)
            if intent is not None:
                return IntentResult(intent, 0.9, False)
        return IntentResult(OUT_OF_SCOPE, 0.2, True)

    async def classify(self, text: str, history: Any = None) -> IntentResult:
        return self.classify_sync(text)


class ZeroLatencyLLM:
    """Answers at once, with usage and a confidence, like a provider that costs nothing."""

    name = "zero-latency"
    model = "offline-zero"

    def __init__(self) -> None:
        self._embedder = OfflineEmbedder()

    async def chat(self, messages: list[ChatMessage], **kwargs: Any) -> LLMResponse:
        return LLMResponse(
            content="Here is what to do.",
            model=self.model,
            provider=self.name,
            usage=TokenUsage(40, 8),
            metadata={"confidence": 0.9},
        )

    async def embed(self, texts: list[str], *, model: str | None = None) -> EmbeddingResponse:
        return await self._embedder.embed(texts)


# ----------------------------------------------------------------- the five stages


class Stages:
    """The stage work shared by the floor and LangGraph (AgentFlow has its own pipeline
    over the same kinds of objects)."""

    def __init__(self, classifier: Any) -> None:
        self.classifier = classifier
        self.embedder = OfflineEmbedder()
        self.memory = InMemoryMemoryStore()
        self.knowledge = InMemoryKnowledgeStore(self.embedder)
        self.llm = ZeroLatencyLLM()
        self._cases = 0

    async def setup(self) -> None:
        await self.knowledge.add([KnowledgeDocument(d.id, d.title, d.text) for d in KNOWLEDGE])

    async def classify(self, text: str) -> tuple[IntentResult, Any]:
        return await self.classifier.classify(text), self.embedder.embed_one(text)

    async def recall(self, user_id: str, vector: Any) -> list[Any]:
        return await self.memory.search_cases(vector, user_id=user_id, limit=3)

    async def search(self, text: str, vector: Any) -> list[Any]:
        return await self.knowledge.search(text, vector, limit=3)

    async def respond(self, text: str, knowledge: list[Any], memory: list[Any]) -> LLMResponse:
        context = "\n".join(f"[{i}] {item.title}: {item.text}" for i, item in enumerate(knowledge))
        return await self.llm.chat(
            [
                ChatMessage("system", f"Answer from the context.\n{context}"),
                ChatMessage("user", text),
            ],
            metadata={"question": text, "context": [item.to_provider_dict() for item in knowledge]},
        )

    @staticmethod
    def evaluate(intent: IntentResult, response: LLMResponse) -> tuple[float, bool]:
        confidence = intent.confidence ** (1 / 3) * response.metadata["confidence"] ** (2 / 3)
        return confidence, intent.out_of_scope or confidence < THRESHOLD

    async def deliver(self, user_id: str, text: str, answer: str, intent: str, vector: Any) -> None:
        self._cases += 1
        await self.memory.append_messages(
            f"s-{user_id}", (ChatMessage("user", text), ChatMessage("assistant", answer))
        )
        await self.memory.add_case(
            MemoryCase(str(self._cases), user_id, text, answer, intent, 0.0, vector=vector)
        )


ESCALATION = "A colleague will get back to you."


def floor_variant(stages: Stages, *, parallel: bool) -> Callable[[str, str], Awaitable[str]]:
    async def run(user_id: str, text: str) -> str:
        intent, vector = await stages.classify(text)
        if parallel:
            memory, knowledge = await asyncio.gather(
                stages.recall(user_id, vector), stages.search(text, vector)
            )
        else:
            memory = await stages.recall(user_id, vector)
            knowledge = await stages.search(text, vector)
        response = await stages.respond(text, knowledge, memory)
        _, escalate = stages.evaluate(intent, response)
        content = ESCALATION if escalate else response.content
        await stages.deliver(user_id, text, "" if escalate else content, intent.name, vector)
        return content

    return run


class GraphState(TypedDict, total=False):
    user_id: str
    message: str
    intent: IntentResult
    vector: Any
    memory: list[Any]
    knowledge: list[Any]
    response: LLMResponse
    escalate: bool
    content: str


def langgraph_variant(
    stages: Stages, *, checkpointer: bool
) -> Callable[[str, str], Awaitable[str]]:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph

    async def classify(state: GraphState) -> GraphState:
        intent, vector = await stages.classify(state["message"])
        return {"intent": intent, "vector": vector}

    async def memory(state: GraphState) -> GraphState:
        return {"memory": await stages.recall(state["user_id"], state["vector"])}

    async def knowledge(state: GraphState) -> GraphState:
        return {"knowledge": await stages.search(state["message"], state["vector"])}

    async def respond(state: GraphState) -> GraphState:
        return {
            "response": await stages.respond(state["message"], state["knowledge"], state["memory"])
        }

    async def evaluate(state: GraphState) -> GraphState:
        return {"escalate": stages.evaluate(state["intent"], state["response"])[1]}

    async def deliver(state: GraphState) -> GraphState:
        content = state["response"].content
        await stages.deliver(
            state["user_id"], state["message"], content, state["intent"].name, state["vector"]
        )
        return {"content": content}

    async def escalate(state: GraphState) -> GraphState:
        await stages.deliver(
            state["user_id"], state["message"], "", state["intent"].name, state["vector"]
        )
        return {"content": ESCALATION}

    graph = StateGraph(GraphState)
    for name, node in [
        ("classify", classify),
        ("memory", memory),
        ("knowledge", knowledge),
        ("respond", respond),
        ("evaluate", evaluate),
        ("deliver", deliver),
        ("escalate", escalate),
    ]:
        graph.add_node(name, node)
    graph.add_edge(START, "classify")
    graph.add_edge("classify", "memory")
    graph.add_edge("classify", "knowledge")
    graph.add_edge(["memory", "knowledge"], "respond")
    graph.add_edge("respond", "evaluate")
    graph.add_conditional_edges(
        "evaluate",
        lambda s: "escalate" if s["escalate"] else "deliver",
        {"escalate": "escalate", "deliver": "deliver"},
    )
    graph.add_edge("deliver", END)
    graph.add_edge("escalate", END)
    saver = None
    if checkpointer:
        from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

        # Our state holds dataclasses of the kernel: allow them, as a real app would.
        serde = JsonPlusSerializer(
            allowed_msgpack_modules=[
                ("agentflow.kernel.intents", "IntentResult"),
                ("agentflow.kernel.results", "ContextItem"),
                ("agentflow.kernel.llm.base", "TokenUsage"),
                ("agentflow.kernel.llm.base", "LLMResponse"),
                ("agentflow.kernel.stores", "MemoryCase"),
            ]
        )
        saver = InMemorySaver(serde=serde)
    compiled = graph.compile(checkpointer=saver)

    async def run(user_id: str, text: str) -> str:
        config = {"configurable": {"thread_id": user_id}} if checkpointer else None
        state = await compiled.ainvoke({"user_id": user_id, "message": text}, config)
        return str(state["content"])

    return run


async def build_agentflow(classifier: Any, *, full: bool = False) -> Any:
    embedder = OfflineEmbedder()
    knowledge = InMemoryKnowledgeStore(embedder)
    await knowledge.add([KnowledgeDocument(d.id, d.title, d.text) for d in KNOWLEDGE])
    config: dict[str, Any] = {
        "confidence": {"default_threshold": THRESHOLD},
        "guardrails": {"redact_pii": full},
    }
    if full:
        config["budget"] = {"soft_usd": 100.0, "hard_usd": 1000.0}
    return await (
        AgentFrameworkBuilder()
        .with_intent_categories(CATEGORIES)
        .with_intent_classifier(classifier)
        .with_embedder(embedder)
        .with_stores(memory=InMemoryMemoryStore(), knowledge=knowledge)
        .with_config(config)
        .build(ZeroLatencyLLM())
    )


async def agentflow_variant(
    classifier: Any, *, full: bool = False
) -> Callable[[str, str], Awaitable[str]]:
    agent = await build_agentflow(classifier, full=full)

    async def run(user_id: str, text: str) -> str:
        return (await agent.process_message(user_id, text)).content

    return run


DESCRIPTIONS = {
    "floor_gather": "plain async functions: classify → asyncio.gather(memory, knowledge) → "
    "respond → evaluate → deliver/escalate (FINDINGS' floor)",
    "floor_inline": "the same functions awaited one after the other (no tasks)",
    "agentflow": "AgentFrameworkBuilder agent, process_message(): session + per-user lock, "
    "classify, thread detection, context (inline for in-memory stores), handler routing, "
    "metered LLM call, confidence gate, session/memory update, typed reply; PII redaction off "
    "like the floor",
    "agentflow_full": "the same agent as configured in production: PII redaction of "
    "everything sent to the LLM (the default) and a budget, so every call is priced, checked "
    "and recorded in the CostTracker",
    "langgraph": "LangGraph StateGraph of the same nodes (memory and knowledge fan out from "
    "classify, join at respond, conditional deliver/escalate), ainvoke per message",
    "langgraph_checkpointed": "the same graph with InMemorySaver, thread_id = user",
}


async def make_variant(name: str, classifier: Any) -> Callable[[str, str], Awaitable[str]]:
    if name.startswith("agentflow"):
        return await agentflow_variant(classifier, full=name == "agentflow_full")
    stages = Stages(classifier)
    await stages.setup()
    if name.startswith("floor"):
        return floor_variant(stages, parallel=name == "floor_gather")
    return langgraph_variant(stages, checkpointer=name == "langgraph_checkpointed")


def message(i: int, unique: bool) -> tuple[str, str]:
    text = MESSAGES[i % len(MESSAGES)]
    return f"u{i % USERS}", f"{text} (ticket {i})" if unique else text


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": round(statistics.median(ordered) * 1e6, 1),
        "p95_us": round(ordered[int(len(ordered) * 0.95) - 1] * 1e6, 1),
        "mean_us": round(statistics.fmean(ordered) * 1e6, 1),
        "n": len(ordered),
    }


async def latency(
    names: list[str], classifier: Any, *, messages: int, rounds: int, unique: bool
) -> dict[str, dict[str, float]]:
    variants = {name: await make_variant(name, classifier) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for run in variants.values():  # warm caches and sessions
        for i in range(200):
            await run(*message(i, unique))
    per_round = messages // rounds
    for r in range(rounds):
        for name, run in variants.items():
            gc.collect()
            start = r * per_round + 10_000
            for i in range(start, start + per_round):
                user, text = message(i, unique)
                began = time.perf_counter()
                await run(user, text)
                samples[name].append(time.perf_counter() - began)
    return {name: summary(values) for name, values in samples.items()}


# ---------------------------------------------------------------- concurrency (child)


class PeakRSS:
    """Samples this process's RSS every 2 ms in a thread (ru_maxrss would include the
    parent's memory: Linux keeps it across fork and exec)."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


async def concurrent_child(name: str) -> dict[str, Any]:
    run = await make_variant(name, KeywordClassifier())
    gc.collect()
    rss_before = psutil.Process().memory_info().rss

    async def user(u: int) -> None:
        for k in range(4):
            await run(f"user-{u}", MESSAGES[(u + k) % len(MESSAGES)])

    with PeakRSS() as sampler:
        began = time.perf_counter()
        await asyncio.gather(*(user(u) for u in range(500)))
        elapsed = time.perf_counter() - began
    return {
        "messages": 2000,
        "seconds": round(elapsed, 3),
        "messages_per_second": round(2000 / elapsed, 1),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "peak_rss_mb": round(sampler.peak / 2**20, 1),
        "rss_growth_mb": round((sampler.process.memory_info().rss - rss_before) / 2**20, 1),
    }


def concurrent(name: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", name],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------ main


def ratio(a: dict[str, float], b: dict[str, float]) -> float:
    return round(a["median_us"] / b["median_us"], 2)


# Issue 15's goals for the kernel: medians, one message at a time.
MAX_OVERHEAD_VS_FLOOR = 1.5
MIN_LANGGRAPH_VS_AGENTFLOW = 50.0


def targets(
    floor: dict[str, float], agentflow: dict[str, float], langgraph: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """Both goals with the measured figure and whether it is met.

    `floor_bound` is what the LangGraph goal alone asks of agentflow in floor units
    (LangGraph's median / 50 / the floor's), `agentflow_median_needed_us` the same in us:
    below 1.0 (`beyond_the_floor`) the goal asks agentflow to take less time than the
    floor's plain functions take for the same stages, which no framework over them can.
    """
    overhead = ratio(agentflow, floor)
    below = ratio(langgraph, agentflow)
    bound = round(langgraph["median_us"] / MIN_LANGGRAPH_VS_AGENTFLOW / floor["median_us"], 2)
    return {
        "overhead_vs_floor": {
            "goal": f"<= {MAX_OVERHEAD_VS_FLOOR}",
            "value": overhead,
            "met": overhead <= MAX_OVERHEAD_VS_FLOOR,
        },
        "langgraph_vs_agentflow": {
            "goal": f">= {MIN_LANGGRAPH_VS_AGENTFLOW}",
            "value": below,
            "met": below >= MIN_LANGGRAPH_VS_AGENTFLOW,
            "floor_bound": bound,
            "agentflow_median_needed_us": round(
                langgraph["median_us"] / MIN_LANGGRAPH_VS_AGENTFLOW, 1
            ),
            "beyond_the_floor": bound < 1.0,
        },
    }


async def stage_medians(messages: int) -> dict[str, float]:
    """Where AgentFlow's time goes: median of each stage of `reply.timings_ms`, in us."""
    agent = await build_agentflow(KeywordClassifier())
    for i in range(200):
        await agent.process_message(*message(i, False))
    stages: dict[str, list[float]] = {}
    for i in range(messages):
        reply = await agent.process_message(*message(i, False))
        for stage, ms in reply.timings_ms.items():
            stages.setdefault(stage, []).append(ms * 1000.0)
    return {stage: round(statistics.median(v), 1) for stage, v in stages.items()}


async def floor_stage_medians(messages: int) -> dict[str, float]:
    """The floor's stages awaited one after the other, each timed: AgentFlow's stage
    medians next to what the same work costs bare (no tasks: `floor_gather` adds those)."""
    stages = Stages(KeywordClassifier())
    await stages.setup()
    run = floor_variant(stages, parallel=False)
    for i in range(200):
        await run(*message(i, False))
    clock = time.perf_counter
    timings: dict[str, list[float]] = {}
    for i in range(messages):
        user, text = message(i, False)
        marks = [clock()]
        intent, vector = await stages.classify(text)
        marks.append(clock())
        memory = await stages.recall(user, vector)
        marks.append(clock())
        knowledge = await stages.search(text, vector)
        marks.append(clock())
        response = await stages.respond(text, knowledge, memory)
        marks.append(clock())
        _, escalate = stages.evaluate(intent, response)
        answer = "" if escalate else response.content
        await stages.deliver(user, text, answer, intent.name, vector)
        marks.append(clock())
        names = ("classify", "memory", "knowledge", "respond", "evaluate_deliver")
        for name, began, ended in zip(names, marks, marks[1:]):  # noqa: B905 (marks is one longer)
            timings.setdefault(name, []).append((ended - began) * 1e6)
    return {stage: round(statistics.median(v), 1) for stage, v in timings.items()}


# What AgentFlow does per message that the floor does not (the floor stays the same five
# stages; these are the kernel's features, each measured on this benchmark's messages).
FLOOR_DIFFERENCES = [
    "session: per-user lock, session lookup and short-term history (the floor keeps none)",
    "small-talk check of every message before the classifier",
    "thread detection: keyword rules and the similarity of the message to every open "
    "thread's centroid, the thread created or updated (stage `thread`)",
    "memory search includes the shared pool of resolved cases of other users (anonymised): "
    "a second matrix product over up to 128 cases; the floor never resolves a thread, so "
    "its pool stays empty",
    "the prompt carries memory cases and up to the last 20 messages besides the knowledge; the "
    "answer's sources are typed (SourceRef) and the handler chain is consulted",
    "cost metering per call (RunState, ContextVar), a stage deadline, per-stage timings, the "
    "plan walk with its recorded path, the confidence verdict and a typed AgentReply",
    "the session saved after every message (the floor only appends messages and a case)",
]


async def main(messages: int) -> dict[str, Any]:
    names = list(DESCRIPTIONS)
    strict = await latency(names, KeywordClassifier(), messages=messages, rounds=10, unique=False)
    stages = await stage_medians(messages)
    floor_stages = await floor_stage_medians(messages)
    offline = await asyncio.to_thread(OfflineIntentClassifier, CATEGORIES)
    real = await latency(
        ["floor_inline", "agentflow_full"], offline, messages=300, rounds=3, unique=True
    )
    concurrent_runs = {
        name: concurrent(name)
        for name in [
            "floor_gather",
            "floor_inline",
            "agentflow",
            "agentflow_full",
            "langgraph",
            "langgraph_checkpointed",
        ]
    }
    floor = strict["floor_gather"]
    agentflow = strict["agentflow"]
    throughput = {name: run["messages_per_second"] for name, run in concurrent_runs.items()}
    return {
        "benchmark": "kernel_overhead",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "variants": DESCRIPTIONS,
        "latency": strict,
        "agentflow_stage_medians_us": stages,
        "floor_stage_medians_us": floor_stages,
        "floor_differences": FLOOR_DIFFERENCES,
        "ratios": {
            "agentflow_vs_floor": ratio(agentflow, floor),
            "agentflow_vs_floor_inline": ratio(agentflow, strict["floor_inline"]),
            "agentflow_full_vs_floor": ratio(strict["agentflow_full"], floor),
            "langgraph_vs_agentflow": ratio(strict["langgraph"], agentflow),
            "langgraph_checkpointed_vs_agentflow": ratio(
                strict["langgraph_checkpointed"], agentflow
            ),
            "throughput_floor_vs_agentflow": round(
                throughput["floor_gather"] / throughput["agentflow"], 2
            ),
            "throughput_agentflow_vs_langgraph": round(
                throughput["agentflow"] / throughput["langgraph"], 2
            ),
        },
        "overhead_vs_floor": ratio(agentflow, floor),
        "langgraph_vs_agentflow": ratio(strict["langgraph"], agentflow),
        "targets": targets(floor, agentflow, strict["langgraph"]),
        "concurrent_500_users_x_4": concurrent_runs,
        "real_stage_work": {
            "setup": "unique messages (every embedding computed) and the trained "
            "OfflineIntentClassifier (TF-IDF + linear SVM) in both; agentflow_full adds "
            "redaction and budgets",
            **real,
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(concurrent_child(args.child))))
    else:
        print(json.dumps(asyncio.run(main(args.messages)), indent=2))
