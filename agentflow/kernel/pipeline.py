"""The per-message pipeline (SPEC 4.1).

session → intent → thread → context (parallel) → handler + generation →
confidence → deliver or escalate → session, thread and memory update.

Every stage is timed. A failing stage degrades instead of failing the run: a
session store error gives a one-off session, a classifier error an out-of-scope
intent (hence a human), an embedding error a zero vector (no retrieval), a
context branch error that branch's absence, a provider failure or a budget
refusal an escalation with the reason. What degraded is listed in
`reply.metadata["degraded"]`.

Persistence is the exception when the pipeline is strict (the platform's always are):
a session, thread or memory store that fails to keep the conversation raises
`PersistenceError` instead of answering from a conversation that will not be there
next time. A lenient pipeline (the library's default) degrades as above.

Messages of one user are processed one at a time, in order; different users
run concurrently.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from agentflow.kernel.confidence import ConfidenceEvaluator, EscalationReason
from agentflow.kernel.context import ContextGatherer, Gathered
from agentflow.kernel.deadlines import Deadlines
from agentflow.kernel.handlers import (
    AllHandlersFailed,
    HandlerRegistry,
    HandlerResult,
    ProcessingContext,
)
from agentflow.kernel.intents import OUT_OF_SCOPE, IntentResult
from agentflow.kernel.llm.base import ChatMessage
from agentflow.kernel.memory import MemoryManager
from agentflow.kernel.metering import CURRENT_RUN, GuardedProvider, RunState
from agentflow.kernel.middleware import MiddlewareChain
from agentflow.kernel.results import AgentReply
from agentflow.kernel.sessions import SessionManager
from agentflow.kernel.stores import (
    ConversationThread,
    GoldenPath,
    GoldenPathStore,
    KnowledgeDocument,
    KnowledgeStore,
    Session,
    new_id,
)
from agentflow.kernel.threads import ThreadManager, ThreadTransition
from agentflow.kernel.vectors import Embedder, Vector, embed_text

if TYPE_CHECKING:
    from agentflow.kernel.config import AgentFrameworkConfig
    from agentflow.kernel.costs import CostTracker

# The intent of every message when an agent defines no categories.
GENERAL_INTENT = "GENERAL"
DEFAULT_ESCALATION_MESSAGE = (
    "Thanks for your patience. I've passed your message to a colleague, who will get back "
    "to you shortly."
)


class IntentClassifier(Protocol):
    async def classify(
        self, text: str, history: Sequence[ChatMessage] | None = None
    ) -> IntentResult: ...


class PersistenceError(RuntimeError):
    """A store failed to keep the conversation (session, thread or memory)."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage} stage could not persist the conversation: {_describe(cause)}")
        self.stage = stage


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class AgentPipeline:
    """A built agent: `await agent.process_message(user_id, message)`.

    Create it with `AgentFrameworkBuilder`; the constructor takes the finished parts.
    """

    def __init__(
        self,
        *,
        config: AgentFrameworkConfig,
        classifier: IntentClassifier | None,
        sessions: SessionManager,
        threads: ThreadManager,
        memory: MemoryManager,
        gatherer: ContextGatherer,
        handlers: HandlerRegistry,
        confidence: ConfidenceEvaluator,
        middleware: MiddlewareChain,
        llm: GuardedProvider,
        embedder: Embedder,
        embedding_dimensions: int,
        cost_tracker: CostTracker | None,
        clock: Any = time.time,
        strict_persistence: bool = False,
    ) -> None:
        self.config = config
        self.strict_persistence = strict_persistence
        self.name = config.name
        self.classifier = classifier
        # The offline classifier is synchronous underneath: skip its coroutine.
        self._classify_sync = getattr(classifier, "classify_sync", None)
        self.sessions = sessions
        self.threads = threads
        self.memory = memory
        self.gatherer = gatherer
        self.handlers = handlers
        self.confidence = confidence
        self.middleware = middleware
        self.llm = llm
        self.embedder = embedder
        self.cost_tracker = cost_tracker
        self._clock = clock
        self._zero_vector: Vector = np.zeros(embedding_dimensions, dtype=np.float32)
        self._stage_timeout = config.timeouts.stage_seconds
        self._deadlines = Deadlines()
        self._persist_redacted = config.guardrails.redact_before_persistence
        self._prompts = dict(config.prompts)
        self._escalation_message = self._prompts.get(
            "escalation_message", DEFAULT_ESCALATION_MESSAGE
        )
        self._template_answer = config.llm.template_answer
        self._model = next((p.model for p in config.llm.providers if p.kind == "openai"), None)

    # ------------------------------------------------------------------ public API

    async def process_message(
        self, user_id: str, message: str, context: Mapping[str, Any] | None = None
    ) -> AgentReply:
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        if not isinstance(message, str):
            raise TypeError(f"message must be a string, not {type(message).__name__}")
        ctx: dict[str, Any] = dict(context) if context else {}
        chain = self.middleware
        if not chain:
            return await self._process(user_id, message, ctx)
        try:
            message, ctx = await chain.before(user_id, message, ctx)
            reply = await self._process(user_id, message, ctx)
            return await chain.after(user_id, reply, ctx)
        except Exception as exc:
            replacement = await chain.error(user_id, exc, ctx)
            if replacement is None:
                raise
            return replacement

    @property
    def knowledge(self) -> KnowledgeStore | None:
        return self.gatherer.knowledge

    @property
    def golden_paths(self) -> GoldenPathStore | None:
        return self.gatherer.golden_paths

    async def add_knowledge(self, documents: Sequence[KnowledgeDocument]) -> None:
        if self.gatherer.knowledge is None:
            raise RuntimeError("this agent has no knowledge store")
        await self.gatherer.knowledge.add(documents)

    async def add_golden_paths(self, paths: Sequence[GoldenPath]) -> None:
        if self.gatherer.golden_paths is None:
            raise RuntimeError("this agent has no golden-path store")
        await self.gatherer.golden_paths.add(paths)

    async def session(self, user_id: str) -> Session | None:
        return await self.sessions.store.get(user_id)

    async def threads_of(self, user_id: str) -> list[ConversationThread]:
        session = await self.sessions.store.get(user_id)
        if session is None:
            return []
        return await self.threads.store.list_threads(session.session_id)

    async def history(self, user_id: str) -> list[ChatMessage]:
        session = await self.sessions.store.get(user_id)
        return [] if session is None else await self.memory.history(session.session_id)

    async def forget_user(self, user_id: str) -> None:
        """Erase the user's session and episodic memory (GDPR erasure of kernel state)."""
        async with self.sessions.lock(user_id):
            await self.sessions.end(user_id)
            await self.memory.forget_user(user_id)

    async def aclose(self) -> None:
        await self.llm.aclose()

    # -------------------------------------------------------------------- stages

    async def _process(self, user_id: str, message: str, ctx: dict[str, Any]) -> AgentReply:
        trace = ctx.get("trace_id") or ctx.get("correlation_id")
        tenant = ctx.get("tenant_id")
        run = RunState(str(trace) if trace else new_id(), None if tenant is None else str(tenant))
        token = CURRENT_RUN.set(run)
        await self.sessions.acquire(user_id)
        try:
            return await self._stages(user_id, message, ctx, run)
        finally:
            self.sessions.release(user_id)
            CURRENT_RUN.reset(token)

    async def _stages(
        self, user_id: str, message: str, ctx: dict[str, Any], run: RunState
    ) -> AgentReply:
        timings: dict[str, float] = {}
        degraded: list[dict[str, str]] = []
        now = self._clock()
        start = perf_counter()

        # 1. Session and short-term memory.
        persist = True
        try:
            session, created = await self.sessions.get_or_create(user_id)
            history = [] if created else await self.memory.history(session.session_id)
        except Exception as exc:
            self._persistence_failed("session", exc)
            degraded.append({"stage": "session", "error": _describe(exc)})
            session = Session(f"ephemeral-{run.trace_id}", user_id, now, now)
            created, history, persist = True, [], False
        # What models, tools and embeddings may see; what stores keep.
        text = self.llm.redact_text(message)
        stored = text if self._persist_redacted else message
        mark = perf_counter()
        timings["session"] = (mark - start) * 1000.0

        # 2. Intent.
        intent = await self._classify(text, history, degraded)
        start, mark = mark, perf_counter()
        timings["classify"] = (mark - start) * 1000.0

        # 3. Thread.
        vector = await self._embed(text, degraded)
        thread: ConversationThread | None = None
        transition = ThreadTransition.CONTINUATION
        thread_reason = ""
        try:
            decision = await self.threads.process(
                session, text, vector, intent=intent.name, out_of_scope=intent.out_of_scope, now=now
            )
            thread, transition, thread_reason = (
                decision.thread,
                decision.transition,
                decision.reason,
            )
        except Exception as exc:
            self._persistence_failed("thread", exc)
            degraded.append({"stage": "thread", "error": _describe(exc)})
        start, mark = mark, perf_counter()
        timings["thread"] = (mark - start) * 1000.0

        # 4. Context, in parallel.
        try:
            gathered = await self.gatherer.gather(user_id, text, vector, intent.name)
        except Exception as exc:
            degraded.append({"stage": "context", "error": _describe(exc)})
            gathered = Gathered()
        if gathered.failures:
            degraded.extend(gathered.failures)
        start, mark = mark, perf_counter()
        timings["context"] = (mark - start) * 1000.0

        # 5. Handler routing and response generation.
        pctx = ProcessingContext(
            message=text,
            user_id=user_id,
            session=session,
            thread=thread,
            intent=intent,
            transition=transition.value,
            llm=self.llm,
            history=history,
            knowledge=gathered.knowledge,
            golden_paths=gathered.golden_paths,
            memory=gathered.memory,
            tools=gathered.tools,
            playbook=gathered.playbook,
            prompts=self._prompts,
            extra=ctx,
            agent_name=self.name,
            model=self._model,
            trace_id=run.trace_id,
        )
        forced: str | None = None
        handler: str | None = None
        try:
            async with self._deadlines.scope(self._stage_timeout):
                outcome = await self.handlers.route(text, intent, pctx)
            result, handler = outcome.result, outcome.handler
            degraded.extend(
                {"stage": f"handler:{f['handler']}", "error": f["error"]} for f in outcome.failures
            )
        except (AllHandlersFailed, TimeoutError) as exc:
            failures = (
                exc.failures
                if isinstance(exc, AllHandlersFailed)
                else [{"handler": "*", "error": f"timeout after {self._stage_timeout}s"}]
            )
            degraded.extend(
                {"stage": f"handler:{f['handler']}", "error": f["error"]} for f in failures
            )
            result = HandlerResult(content="", confidence=0.0)
            forced = EscalationReason.LLM_UNAVAILABLE
        template = bool(result.metadata.get("template"))
        if run.budget_error is not None and (forced or template):
            forced = EscalationReason.BUDGET_EXCEEDED
        elif template:
            forced = EscalationReason.LLM_UNAVAILABLE
        elif result.escalate:
            forced = result.escalation_reason or EscalationReason.HANDLER_REQUESTED
        start, mark = mark, perf_counter()
        timings["generate"] = (mark - start) * 1000.0

        # 6-7. Confidence, then deliver or escalate.
        sources = result.sources
        best = max((s.score for s in sources), default=None) if sources else pctx.best_score()
        verdict = self.confidence.evaluate(
            intent.name,
            intent.confidence,
            out_of_scope=intent.out_of_scope,
            reported=result.confidence,
            best_retrieval=best,
            forced_reason=forced,
            skip_check=result.skip_confidence_check,
        )
        real_answer = bool(result.content) and forced not in (
            EscalationReason.LLM_UNAVAILABLE,
            EscalationReason.BUDGET_EXCEEDED,
        )
        if verdict.escalate:
            # Without an answer to review (no provider, no budget) the customer gets the
            # configured template answer; otherwise the escalation message.
            content = self._escalation_message if real_answer else self._template_answer
            proposed = result.content if real_answer else None
        else:
            content, proposed = result.content, None
        start, mark = mark, perf_counter()
        timings["evaluate"] = (mark - start) * 1000.0

        # 8. Session, thread and memory update.
        try:
            session.message_count += 1
            if persist:
                await self.sessions.save(session)
            await self.memory.remember(
                session_id=session.session_id,
                user_id=user_id,
                question=stored,
                shown=content,
                answer="" if verdict.escalate else content,
                intent=intent.name,
                thread_id=None if thread is None else thread.thread_id,
                vector=vector,
                now=now,
                as_case=transition is not ThreadTransition.RESOLUTION,
            )
            if transition is ThreadTransition.RESOLUTION and thread is not None:
                await self.memory.resolve_thread(user_id, thread.thread_id)
        except Exception as exc:
            self._persistence_failed("update", exc)
            degraded.append({"stage": "update", "error": _describe(exc)})
        timings["update"] = (perf_counter() - mark) * 1000.0

        metadata: dict[str, Any] = {
            "trace_id": run.trace_id,
            "offline": run.offline,
            "provider": run.provider,
            "model": run.model,
            "fallbacks": run.fallbacks,
            "template_answer": template,
            "llm_calls": run.calls,
            "handler": handler,
            "intent_method": intent.method,
            "threshold": verdict.threshold,
            "thread_reason": thread_reason,
            "new_session": created,
        }
        if gathered.playbook is not None:
            # The procedure suggested before the answer, named in the trace (SPEC 9).
            metadata["playbook"] = gathered.playbook.summary()
        if degraded:
            metadata["degraded"] = degraded
        if run.budget_error is not None:
            metadata["budget"] = str(run.budget_error)
        return AgentReply(
            content=content,
            user_id=user_id,
            session_id=session.session_id,
            intent=intent.name,
            intent_confidence=intent.confidence,
            confidence=verdict.confidence,
            thread_id="" if thread is None else thread.thread_id,
            transition=transition.value,
            escalated=verdict.escalate,
            escalation_reason=verdict.reason,
            proposed_answer=proposed,
            sources=list(sources) if real_answer else [],
            timings_ms=timings,
            usage=run.usage,
            cost_usd=run.cost_usd,
            metadata=metadata,
        )

    def _persistence_failed(self, stage: str, exc: Exception) -> None:
        if self.strict_persistence:
            raise PersistenceError(stage, exc) from exc

    async def _classify(
        self, text: str, history: list[ChatMessage], degraded: list[dict[str, str]]
    ) -> IntentResult:
        if self.classifier is None:
            return IntentResult(GENERAL_INTENT, 1.0, False, method="none")
        try:
            if self._classify_sync is not None:
                result: IntentResult = self._classify_sync(text)
                return result
            async with self._deadlines.scope(self._stage_timeout):
                return await self.classifier.classify(text, history)
        except Exception as exc:
            degraded.append({"stage": "classify", "error": _describe(exc)})
            return IntentResult(OUT_OF_SCOPE, 0.0, True, method="failed")

    async def _embed(self, text: str, degraded: list[dict[str, str]]) -> Vector:
        try:
            return await embed_text(self.embedder, text)
        except Exception as exc:
            degraded.append({"stage": "embed", "error": _describe(exc)})
            return self._zero_vector


__all__ = ["DEFAULT_ESCALATION_MESSAGE", "GENERAL_INTENT", "AgentPipeline", "PersistenceError"]
