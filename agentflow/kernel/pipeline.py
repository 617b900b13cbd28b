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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, partial
from operator import attrgetter
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from agentflow.kernel import tracing
from agentflow.kernel.confidence import ConfidenceDecision, ConfidenceEvaluator, EscalationReason
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
from agentflow.kernel.planning.compiled import SKIPPED, CompiledFSM, compile_fsm
from agentflow.kernel.planning.fsm import FSMPlan
from agentflow.kernel.planning.llm_planner import LLMPlanner
from agentflow.kernel.planning.model import (
    Action,
    FailsTheMessage,
    PlanResult,
    PlanState,
    Snapshot,
    StepOutcome,
)
from agentflow.kernel.planning.replanning import ReplanPolicy, run_with_replanning
from agentflow.kernel.planning.support import (
    SUPPORT_NATIVE_CONDITIONS,
    PipelinePlan,
    goes_on_without_the_turn,
    load_pipeline_plan,
    pauses_for_review,
)
from agentflow.kernel.results import AgentReply, PlanStep, SourceRef, StepOutcomeName
from agentflow.kernel.sentiment import (
    Assessment,
    FrustrationSettings,
    assess_messages,
    customer_text,
)
from agentflow.kernel.sessions import SessionManager
from agentflow.kernel.smalltalk import SMALL_TALK, small_talk_kind
from agentflow.kernel.stores import (
    ConversationThread,
    GoldenPathStore,
    KnowledgeStore,
    Session,
    new_id,
)
from agentflow.kernel.threads import ThreadManager, ThreadTransition
from agentflow.kernel.vectors import Embedder, Vector, embed_text

if TYPE_CHECKING:
    from agentflow.kernel.config import AgentFrameworkConfig, SentimentConfig
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


class PersistenceError(FailsTheMessage, RuntimeError):
    """A store failed to keep the conversation (session, thread or memory): no plan branch
    absorbs it, the message fails."""

    def __init__(self, stage: str, cause: BaseException) -> None:
        super().__init__(f"{stage} stage could not persist the conversation: {_describe(cause)}")
        self.stage = stage


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


_source_score: Callable[[SourceRef], float] = attrgetter("score")
_spent: Callable[[RunState], tuple[int, float]] = attrgetter("spent")


class _Laps:
    """Per-stage wall time in ms: each lap measures since the previous one."""

    __slots__ = ("_mark", "origin", "timings")

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._mark = self.origin = perf_counter()

    def lap(self, stage: str) -> None:
        mark = perf_counter()
        self.timings[stage] = (mark - self._mark) * 1000.0
        self._mark = mark


# A transition's value without the enum's descriptor (read twice per message).
_TRANSITION_NAMES: dict[ThreadTransition, str] = {t: t.value for t in ThreadTransition}

# Immutable, so every turn can start from the same one (a per-turn factory cost ~1 us).
_SKIPPED_INTENT = IntentResult(GENERAL_INTENT, 1.0, False, method="skipped")


@dataclass(slots=True)
class _Turn:
    """Where one message stands: what the session stage opened and the steps found so far.

    The defaults stand for a step the plan did not run: no classification (the general
    intent), no embedding (a zero vector), no thread, no context.
    """

    user_id: str
    text: str  # what models, tools and embeddings may see
    stored: str  # what the stores keep
    now: float
    session: Session
    created: bool
    persist: bool
    history: list[ChatMessage]
    vector: Vector
    intent: IntentResult = _SKIPPED_INTENT
    thread: ConversationThread | None = None
    transition: ThreadTransition = ThreadTransition.CONTINUATION
    thread_reason: str = ""
    gathered: Gathered | None = None  # None until the context step runs (if it does)
    sentiment: dict[str, Any] | None = None  # the frustration check's score, when configured


@dataclass(slots=True)
class _Generated:
    result: HandlerResult
    handler: str | None
    forced: str | None  # the escalation reason the generation forces, if any
    template: bool


_NOTHING_GENERATED = _Generated(HandlerResult(content="", confidence=0.0), None, None, False)


@dataclass(slots=True)
class _Answer:
    content: str  # what the customer is shown
    proposed: str | None  # the answer a reviewer is asked about
    sources: list[SourceRef]


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
        plan: PipelinePlan | None = None,
    ) -> None:
        self.config = config
        # Loaded and checked once: a message only walks the compiled plan.
        self.plan = plan if plan is not None else _default_plan()
        # A plan that waits at human_review runs through FSMPlan.run, which pauses; one with
        # replanning rules through run_with_replanning.
        self.pauses_for_review = pauses_for_review(self.plan)
        self.replanning = config.planner.replanning if config.planner is not None else None
        self._compiled: CompiledFSM[_TurnSteps] | None = (
            compile_fsm(self.plan, _STEPS, SUPPORT_NATIVE_CONDITIONS)
            if isinstance(self.plan, FSMPlan)
            and not self.pauses_for_review
            and self.replanning is None
            else None
        )
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
        self._frustration = _frustration_check(config.sentiment)

    # ------------------------------------------------------------------ public API

    async def process_message(
        self, user_id: str, message: str, context: Mapping[str, Any] | None = None
    ) -> AgentReply:
        if not isinstance(user_id, str) or not user_id:
            raise ValueError("user_id must be a non-empty string")
        if not isinstance(message, str):
            raise TypeError(f"message must be a string, not {type(message).__name__}")
        ctx: dict[str, Any] = dict(context) if context else {}
        # Spans only when an SDK records them: otherwise not even a no-op span is entered.
        process = self._traced if tracing.active() else self._process
        chain = self.middleware
        if not chain:
            return await process(user_id, message, ctx)
        try:
            message, ctx = await chain.before(user_id, message, ctx)
            reply = await process(user_id, message, ctx)
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

    async def _traced(self, user_id: str, message: str, ctx: dict[str, Any]) -> AgentReply:
        """`_process` inside the run's span (only while an OpenTelemetry SDK records)."""
        with tracing.run_span(ctx) as span:
            reply = await self._process(user_id, message, ctx)
            tracing.record_reply(span, reply)
            return reply

    async def _process(self, user_id: str, message: str, ctx: dict[str, Any]) -> AgentReply:
        trace = ctx.get("trace_id") or ctx.get("correlation_id")
        tenant = ctx.get("tenant_id")
        run = RunState(str(trace) if trace else new_id(), None if tenant is None else str(tenant))
        token = CURRENT_RUN.set(run)
        sessions = self.sessions
        try:
            # Messages of one user run one at a time: most find nobody there.
            if not sessions.try_acquire(user_id):
                await sessions.acquire(user_id)
        except BaseException:
            CURRENT_RUN.reset(token)
            raise
        try:
            return await self._stages(user_id, message, ctx, run)
        finally:
            sessions.release(user_id)
            CURRENT_RUN.reset(token)

    async def _stages(
        self, user_id: str, message: str, ctx: dict[str, Any], run: RunState
    ) -> AgentReply:
        degraded: list[dict[str, str]] = []
        laps = _Laps()
        turn = await self._open_turn(user_id, message, run, degraded, laps)  # stage 1
        # Stages 2-7, in the order and with the branches the planner chooses.
        steps = _TurnSteps(self, turn, ctx, run, degraded, laps)
        compiled = self._compiled
        if compiled is not None:  # the hot path, without a coroutine around the walk
            # The meter reads the run's `spent` without a Python frame (it runs per step).
            meter = partial(_spent, run)
            walked = await compiled.run(steps, steps.plan_state, perf_counter, meter, laps.origin)
            completed, path = walked.completed, walked.path
        else:
            completed, path = await self._follow_plan(steps, laps.origin)
        generated = steps.generated or _NOTHING_GENERATED
        verdict = steps.verdict or steps.decide()
        escalate = steps.escalate
        if escalate is None:  # the plan ended before deliver or human review
            escalate = verdict.escalate or not completed
        verdict = _final_verdict(verdict, escalate)
        answer = self._answer(generated, escalate)

        # 8. Session, thread and memory update.
        try:
            await self._update(turn, answer.content, escalated=escalate)
        except Exception as exc:
            self._persistence_failed("update", exc)
            degraded.append({"stage": "update", "error": _describe(exc)})
        laps.lap("update")
        reply = self._reply(turn, run, generated, verdict, answer, degraded, laps.timings, path)
        if steps.snapshot is not None:  # paused for a person: the plan continues after
            reply.plan_snapshot = steps.snapshot.to_dict()
        return reply

    async def _follow_plan(self, steps: _TurnSteps, origin: float) -> tuple[bool, list[PlanStep]]:
        """Run a plan that is not compiled over the message's steps: (completed, its path).

        Tool states call through the context's ``tool_invoker`` (a `ToolInvoker` the caller
        supplies, e.g. the platform's, which records each call); without one a tool state is
        an error outcome. Compiled plans have no tool states.
        """
        tools = steps.ctx.get("tool_invoker")
        if isinstance(self.plan, LLMPlanner):
            # The agent's model proposes the plan (metered into the run like any call); the
            # LLM planner records its steps on the wall clock.
            wall_origin = origin + (time.time() - perf_counter())
            planned = await self.plan.run(steps.plan_state, self.llm, steps, tools=tools)
            return planned.status == "completed", plan_path(planned, wall_origin)
        if self.replanning is not None:
            # Rules per run: a policy counts its attempts and records its decisions. A
            # `fallback` ends the plan (this message's steps already ran): a person decides.
            policy = ReplanPolicy.from_config(self.replanning)
            result = await run_with_replanning(
                self.plan, steps.plan_state, steps, policy, tools=tools, clock=perf_counter
            )
        else:
            result = await self.plan.run(steps.plan_state, steps, clock=perf_counter, tools=tools)
        if result.status == "paused" and goes_on_without_the_turn(self.plan, result.node or ""):
            steps.snapshot = result.snapshot  # the plan goes on after the decision
        return result.status == "completed", plan_path(result, origin)

    async def _open_turn(
        self,
        user_id: str,
        message: str,
        run: RunState,
        degraded: list[dict[str, str]],
        laps: _Laps,
    ) -> _Turn:
        """Stage 1: the session and short-term memory of the message."""
        now = self._clock()
        session, created, history, persist = await self._open_session(user_id, run, now, degraded)
        # What models, tools and embeddings may see; what stores keep.
        text = self.llm.redact_text(message)
        stored = text if self._persist_redacted else message
        laps.lap("session")
        return _Turn(
            user_id=user_id,
            text=text,
            stored=stored,
            now=now,
            session=session,
            created=created,
            persist=persist,
            history=history,
            vector=self._zero_vector,
        )

    async def _open_session(
        self, user_id: str, run: RunState, now: float, degraded: list[dict[str, str]]
    ) -> tuple[Session, bool, list[ChatMessage], bool]:
        """(session, created, history, persist); a one-off session if the store fails."""
        try:
            session, created = await self.sessions.get_or_create(user_id)
            history = [] if created else await self.memory.history(session.session_id)
            return session, created, history, True
        except Exception as exc:
            self._persistence_failed("session", exc)
            degraded.append({"stage": "session", "error": _describe(exc)})
            return Session(f"ephemeral-{run.trace_id}", user_id, now, now), True, [], False

    def _processing_context(
        self, turn: _Turn, ctx: dict[str, Any], run: RunState
    ) -> ProcessingContext:
        gathered = turn.gathered if turn.gathered is not None else Gathered()
        return ProcessingContext(
            message=turn.text,
            user_id=turn.user_id,
            session=turn.session,
            thread=turn.thread,
            intent=turn.intent,
            transition=_TRANSITION_NAMES[turn.transition],
            llm=self.llm,
            history=turn.history,
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

    async def _generate(
        self,
        text: str,
        intent: IntentResult,
        pctx: ProcessingContext,
        run: RunState,
        degraded: list[dict[str, str]],
    ) -> _Generated:
        """Route to the handlers; a failure or timeout of all of them forces an escalation."""
        forced: str | None = None
        handler: str | None = None
        try:
            with self._deadlines.scope(self._stage_timeout):
                outcome = await self.handlers.route(text, intent, pctx)
            result, handler = outcome.result, outcome.handler
            failures = outcome.failures
        except (AllHandlersFailed, TimeoutError) as exc:
            failures = (
                exc.failures
                if isinstance(exc, AllHandlersFailed)
                else [{"handler": "*", "error": f"timeout after {self._stage_timeout}s"}]
            )
            result = HandlerResult(content="", confidence=0.0)
            forced = EscalationReason.LLM_UNAVAILABLE
        if failures:
            degraded.extend(
                {"stage": f"handler:{f['handler']}", "error": f["error"]} for f in failures
            )
        template = bool(result.metadata.get("template"))
        if run.budget_error is not None and (forced or template):
            forced = EscalationReason.BUDGET_EXCEEDED
        elif template:
            forced = EscalationReason.LLM_UNAVAILABLE
        elif result.escalate:
            forced = result.escalation_reason or EscalationReason.HANDLER_REQUESTED
        return _Generated(result, handler, forced, template)

    def _verdict(
        self,
        intent: IntentResult,
        generated: _Generated,
        pctx: ProcessingContext,
        frustrated: bool = False,
    ) -> ConfidenceDecision:
        """The confidence evaluator's verdict on the generated answer.

        A reason the generation forces comes first (it decides what the customer is shown);
        then a frustrated customer, whatever the answer's confidence.
        """
        forced = generated.forced
        if forced is None and frustrated:
            forced = EscalationReason.FRUSTRATED
        result = generated.result
        sources = result.sources
        best = max(map(_source_score, sources)) if sources else pctx.best_score()
        return self.confidence.evaluate(
            intent.name,
            intent.confidence,
            out_of_scope=intent.out_of_scope,
            reported=result.confidence,
            best_retrieval=best,
            forced_reason=forced,
            skip_check=result.skip_confidence_check,
        )

    def _frustrated(self, turn: _Turn) -> bool:
        """Whether the customer's message calls for a person; its score kept on the turn."""
        check = self._frustration
        if check is None:
            return False
        previous = [m.content for m in turn.history if m.role == "user"]
        assessment = check(turn.text, previous)
        turn.sentiment = {
            "score": assessment.sentiment.compound,
            "label": assessment.sentiment.label,
            "frustrated": assessment.alert,
            "reasons": list(assessment.reasons),
            # The trend only when the check compares with earlier messages.
            "trend": assessment.trend["customer"]
            if assessment.trend["customer"]["delta"] is not None
            else None,
        }
        return assessment.alert

    def _answer(self, generated: _Generated, escalate: bool) -> _Answer:
        """What the customer is shown and what a reviewer is asked about."""
        result, forced = generated.result, generated.forced
        real_answer = bool(result.content) and forced not in (
            EscalationReason.LLM_UNAVAILABLE,
            EscalationReason.BUDGET_EXCEEDED,
        )
        if escalate:
            # Without an answer to review (no provider, no budget) the customer gets the
            # configured template answer; otherwise the escalation message.
            content = self._escalation_message if real_answer else self._template_answer
            proposed = result.content if real_answer else None
        else:
            content, proposed = result.content, None
        return _Answer(content, proposed, list(result.sources) if real_answer else [])

    async def _update(self, turn: _Turn, shown: str, *, escalated: bool) -> None:
        session, thread = turn.session, turn.thread
        session.message_count += 1
        if turn.persist:
            await self.sessions.save(session)
        await self.memory.remember(
            session_id=session.session_id,
            user_id=turn.user_id,
            question=turn.stored,
            shown=shown,
            answer="" if escalated else shown,
            intent=turn.intent.name,
            thread_id=None if thread is None else thread.thread_id,
            vector=turn.vector,
            now=turn.now,
            as_case=turn.transition is not ThreadTransition.RESOLUTION,
        )
        if turn.transition is ThreadTransition.RESOLUTION and thread is not None:
            await self.memory.resolve_thread(turn.user_id, thread.thread_id)

    def _reply(
        self,
        turn: _Turn,
        run: RunState,
        generated: _Generated,
        verdict: ConfidenceDecision,
        answer: _Answer,
        degraded: list[dict[str, str]],
        timings: dict[str, float],
        path: list[PlanStep],
    ) -> AgentReply:
        metadata: dict[str, Any] = {
            "trace_id": run.trace_id,
            "offline": run.offline,
            "provider": run.provider,
            "model": run.model,
            "fallbacks": run.fallbacks,
            "template_answer": generated.template,
            "llm_calls": run.calls,
            "handler": generated.handler,
            "intent_method": turn.intent.method,
            "threshold": verdict.threshold,
            "thread_reason": turn.thread_reason,
            "new_session": turn.created,
        }
        gathered = turn.gathered
        if gathered is not None and gathered.playbook is not None:
            # The procedure suggested before the answer, named in the trace (SPEC 9).
            metadata["playbook"] = gathered.playbook.summary()
        if gathered is not None and gathered.tools:  # what the answer could use (qa_test_agent)
            metadata["tool_calls"] = [item.title for item in gathered.tools]
        if turn.sentiment is not None:
            metadata["sentiment"] = turn.sentiment
        if degraded:
            metadata["degraded"] = degraded
        if run.budget_error is not None:
            metadata["budget"] = str(run.budget_error)
        return AgentReply(
            content=answer.content,
            user_id=turn.user_id,
            session_id=turn.session.session_id,
            intent=turn.intent.name,
            intent_confidence=turn.intent.confidence,
            confidence=verdict.confidence,
            thread_id="" if turn.thread is None else turn.thread.thread_id,
            transition=_TRANSITION_NAMES[turn.transition],
            escalated=verdict.escalate,
            escalation_reason=verdict.reason,
            proposed_answer=answer.proposed,
            sources=answer.sources,
            timings_ms=timings,
            usage=run.usage,
            cost_usd=run.cost_usd,
            metadata=metadata,
            plan_path=path,
        )

    def _persistence_failed(self, stage: str, exc: Exception) -> None:
        if self.strict_persistence:
            raise PersistenceError(stage, exc) from exc

    def _intent_at_once(self, text: str, degraded: list[dict[str, str]]) -> IntentResult | None:
        """The intent when nothing is awaited (small talk, no classifier, a synchronous one);
        None when the classifier's coroutine must decide (`_classify`)."""
        if small_talk_kind(text) is not None:  # nothing to classify, nobody to bother
            return IntentResult(SMALL_TALK, 1.0, False, method="small_talk")
        if self.classifier is None:
            return IntentResult(GENERAL_INTENT, 1.0, False, method="none")
        classify_sync = self._classify_sync
        if classify_sync is None:
            return None
        try:
            result: IntentResult = classify_sync(text)
            return result
        except Exception as exc:
            return _classification_failed(exc, degraded)

    async def _classify(
        self, text: str, history: list[ChatMessage], degraded: list[dict[str, str]]
    ) -> IntentResult:
        intent = self._intent_at_once(text, degraded)
        if intent is not None:
            return intent
        assert self.classifier is not None
        try:
            with self._deadlines.scope(self._stage_timeout):
                return await self.classifier.classify(text, history)
        except Exception as exc:
            return _classification_failed(exc, degraded)

    async def _embed(self, text: str, degraded: list[dict[str, str]]) -> Vector:
        try:
            return await embed_text(self.embedder, text)
        except Exception as exc:
            degraded.append({"stage": "embed", "error": _describe(exc)})
            return self._zero_vector


def _classification_failed(exc: Exception, degraded: list[dict[str, str]]) -> IntentResult:
    degraded.append({"stage": "classify", "error": _describe(exc)})
    return IntentResult(OUT_OF_SCOPE, 0.0, True, method="failed")


def _frustration_check(
    config: SentimentConfig | None,
) -> Callable[[str, Sequence[str]], Assessment] | None:
    """The sentiment_monitor's assessment with the agent's thresholds; None when not configured."""
    if config is None:
        return None
    trend = config.drop_delta is not None
    settings = FrustrationSettings(
        frustration_threshold=config.escalate_below,
        drop_delta=config.drop_delta if config.drop_delta is not None else float("inf"),
        window=config.window,
    )

    def check(message: str, previous: Sequence[str]) -> Assessment:
        # Without a trend check the previous messages are not scored at all.
        earlier = [customer_text(text) for text in previous[-config.window :]] if trend else []
        return assess_messages(customer_text(message), earlier, settings=settings)

    return check


@cache
def _default_plan() -> PipelinePlan:
    return load_pipeline_plan(None)


_OUTCOMES: dict[str, StepOutcomeName] = {"ok": "success", "paused": "paused"}
# What the human_review step returns when the plan waits there for the decision.
_PAUSED_FOR_REVIEW = object()


class _TurnSteps:
    """The pipeline's built-in steps over one message: the planner's `StepExecutor`.

    Each step reads what earlier steps left in the `_Turn`, adds its own part, and writes
    what conditions may test into the plan state (`intent`, `response`, `state.threshold`,
    `state.escalate`). ``deliver`` and ``human_review`` record the plan's decision; the
    pipeline answers and remembers the exchange after the plan ends.
    """

    __slots__ = (
        "ctx",
        "degraded",
        "escalate",
        "generated",
        "laps",
        "pctx",
        "pipeline",
        "plan_state",
        "run",
        "snapshot",
        "turn",
        "verdict",
    )

    def __init__(
        self,
        pipeline: AgentPipeline,
        turn: _Turn,
        ctx: dict[str, Any],
        run: RunState,
        degraded: list[dict[str, str]],
        laps: _Laps,
    ) -> None:
        self.pipeline = pipeline
        self.turn = turn
        self.ctx = ctx
        self.run = run
        self.degraded = degraded
        self.laps = laps
        self.plan_state = PlanState(message=turn.text, user={"id": turn.user_id})
        self.pctx: ProcessingContext | None = None
        self.generated: _Generated | None = None
        self.verdict: ConfidenceDecision | None = None
        self.escalate: bool | None = None
        self.snapshot: Snapshot | None = None  # where the plan paused, if it did

    async def execute(self, action: Action, state: PlanState) -> StepOutcome:
        step = _STEPS.get(action.name) if action.kind == "step" else None
        if step is None:
            return StepOutcome.failed(f"the pipeline has no step `{action}`")
        run = self.run
        tokens, cost = run.spent
        output = await step(self, state)
        if output is _PAUSED_FOR_REVIEW:
            return StepOutcome("paused", None, "waiting for a human review")
        spent_tokens, spent_cost = run.spent
        return StepOutcome("ok", output, None, spent_tokens - tokens, spent_cost - cost)

    async def classify(self, state: PlanState) -> Any:
        """Stages 2-3: the intent, then the thread the message belongs to."""
        pipeline, turn, degraded = self.pipeline, self.turn, self.degraded
        intent = pipeline._intent_at_once(turn.text, degraded)  # no coroutine when it can
        if intent is None:
            intent = await pipeline._classify(turn.text, turn.history, degraded)
        turn.intent = intent
        self.laps.lap("classify")
        turn.vector = vector = await pipeline._embed(turn.text, degraded)
        try:
            decision = await pipeline.threads.process(
                turn.session,
                turn.text,
                vector,
                intent=intent.name,
                out_of_scope=intent.out_of_scope,
                now=turn.now,
            )
        except Exception as exc:  # the turn keeps its defaults: no thread, a continuation
            pipeline._persistence_failed("thread", exc)
            degraded.append({"stage": "thread", "error": _describe(exc)})
        else:
            turn.thread, turn.transition = decision.thread, decision.transition
            turn.thread_reason = decision.reason
        self.laps.lap("thread")
        state.intent = {"name": intent.name, "confidence": intent.confidence}
        return None

    async def context(self, state: PlanState) -> Any:
        """Stage 4: memory, knowledge, golden paths, tools and playbook, in parallel."""
        turn, degraded = self.turn, self.degraded
        try:
            gathered = await self.pipeline.gatherer.gather(
                turn.user_id, turn.text, turn.vector, turn.intent.name
            )
        except Exception as exc:
            degraded.append({"stage": "context", "error": _describe(exc)})
            gathered = Gathered()
        if gathered.failures:
            degraded.extend(gathered.failures)
        turn.gathered = gathered
        self.laps.lap("context")
        return None

    async def generate_response(self, state: PlanState) -> Any:
        """Stage 5: handler routing and response generation."""
        self.pctx = pctx = self.pipeline._processing_context(self.turn, self.ctx, self.run)
        generated = await self.pipeline._generate(
            self.turn.text, self.turn.intent, pctx, self.run, self.degraded
        )
        self.generated = generated
        self.laps.lap("generate")
        state.response["content"] = generated.result.content
        state.response["data_sources"] = [source.id for source in generated.result.sources]
        return None

    async def evaluate(self, state: PlanState) -> Any:
        """Stage 6: the confidence verdict, for the plan's conditions to branch on."""
        if self.generated is None:
            return SKIPPED
        verdict = self.decide()
        self.laps.lap("evaluate")
        state.response["confidence"] = float(verdict.confidence)
        # The check the plan makes (none when the handler skips it); any reason but low
        # confidence sends the answer to a human whatever the check says.
        skip = self.generated.result.skip_confidence_check
        state.state["threshold"] = 0.0 if skip else float(verdict.threshold)
        reason = verdict.reason
        state.state["escalate"] = reason is not None and reason != EscalationReason.LOW_CONFIDENCE
        return None

    def decide(self) -> ConfidenceDecision:
        """The evaluator's verdict on what was generated (nothing, if generation was skipped)."""
        if self.verdict is None:
            pctx = self.pctx or self.pipeline._processing_context(self.turn, self.ctx, self.run)
            generated = self.generated or _NOTHING_GENERATED
            frustrated = self.pipeline._frustrated(self.turn)
            self.verdict = self.pipeline._verdict(self.turn.intent, generated, pctx, frustrated)
        return self.verdict

    async def deliver(self, state: PlanState) -> Any:
        self.escalate = False
        return None

    async def human_review(self, state: PlanState) -> Any:
        self.escalate = True
        if self.pipeline.pauses_for_review:  # the plan goes on after the decision
            return _PAUSED_FOR_REVIEW
        return None


_STEPS: dict[str, Callable[[_TurnSteps, PlanState], Awaitable[Any]]] = {
    "classify": _TurnSteps.classify,
    "context": _TurnSteps.context,
    "generate_response": _TurnSteps.generate_response,
    "evaluate": _TurnSteps.evaluate,
    "deliver": _TurnSteps.deliver,
    "human_review": _TurnSteps.human_review,
}


def _final_verdict(verdict: ConfidenceDecision, escalate: bool) -> ConfidenceDecision:
    """The evaluator's verdict, overruled where the plan decided otherwise."""
    if verdict.escalate is escalate:
        return verdict
    reason = EscalationReason.PLANNED if escalate else None
    return verdict._replace(escalate=escalate, reason=reason)


def plan_path(result: PlanResult, origin: float) -> list[PlanStep]:
    """The path a planner took, as a reply's `PlanStep`s (offsets from ``origin``)."""
    return [
        PlanStep(
            node=record.node,
            action=_action_name(record.action),
            outcome="skipped"
            if record.output is SKIPPED
            else _OUTCOMES.get(record.status, "error"),
            started_ms=(record.started_at - origin) * 1000.0,
            duration_ms=(record.finished_at - record.started_at) * 1000.0,
            transition=record.transition,
            via=record.via,
            condition=record.condition,
            error=record.error,
            tokens=record.tokens,
            cost_usd=record.cost_usd,
        )
        for record in result.path
    ]


def _action_name(described: Mapping[str, Any]) -> str:
    for kind in ("step", "tool", "agent", "human"):
        if kind in described:
            return f"{kind}:{described[kind]}"
    return "none"


__all__ = [
    "DEFAULT_ESCALATION_MESSAGE",
    "GENERAL_INTENT",
    "AgentPipeline",
    "PersistenceError",
    "plan_path",
]
