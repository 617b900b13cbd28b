"""`AgentFrameworkBuilder`: configure an agent in a few chained calls, then `await build()`.

Everything the builder is given (config source, categories, thresholds, prompts,
plugins, rate limit, logging) is merged into one configuration dict and validated
once, at `build()`: any mistake is a `ConfigError` naming the field, before the
agent ever sees a message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Self

from agentflow.kernel.confidence import ConfidenceEvaluator
from agentflow.kernel.config import (
    AgentFrameworkConfig,
    ConfigError,
    ConfigIssue,
    ConfigLoader,
    IntentCategoryConfig,
    escape_env,
)
from agentflow.kernel.context import ContextGatherer, ToolBinding, ToolClient
from agentflow.kernel.costs import BudgetGuard, CostTracker, PriceTable
from agentflow.kernel.guardrails import PIIRedactor
from agentflow.kernel.handlers import BaseHandler, HandlerRegistry, ResolutionHandler
from agentflow.kernel.inmemory import (
    InMemoryGoldenPathStore,
    InMemoryKnowledgeStore,
    InMemoryMemoryStore,
    InMemoryProceduralStore,
    InMemorySessionStore,
    InMemoryThreadStore,
)
from agentflow.kernel.intents import IntentCategory
from agentflow.kernel.intents_fit import KEEP_UNUSED_DAYS
from agentflow.kernel.llm.base import LLMProvider
from agentflow.kernel.llm_chain import (
    agent_price_table,
    config_issue,
    guarded_chain,
    guarded_embedder,
    intent_classifier,
    resolve_providers,
)
from agentflow.kernel.memory import MemoryManager
from agentflow.kernel.middleware import (
    LoggingMiddleware,
    Middleware,
    MiddlewareChain,
    PIIRedactionMiddleware,
    RateLimitMiddleware,
)
from agentflow.kernel.pipeline import AgentPipeline, IntentClassifier
from agentflow.kernel.planning.replanning import ReplanPolicy
from agentflow.kernel.planning.source import PlanValidationError
from agentflow.kernel.planning.support import PipelinePlan, load_pipeline_plan
from agentflow.kernel.plugins import (
    DEFAULT_GROUP,
    PluginContributions,
    PluginError,
    PluginManager,
)
from agentflow.kernel.sessions import SessionManager
from agentflow.kernel.smalltalk import SmallTalkHandler
from agentflow.kernel.stores import (
    GoldenPath,
    GoldenPathStore,
    KnowledgeDocument,
    KnowledgeStore,
    MemoryStore,
    Playbook,
    ProceduralStore,
    SessionStore,
    ThreadStore,
)
from agentflow.kernel.threads import ThreadDetector, ThreadManager
from agentflow.kernel.vectors import Embedder, embed_texts

ConfigSource = AgentFrameworkConfig | Mapping[str, Any] | str | os.PathLike[str]


def _category_dict(category: object, where: str) -> dict[str, Any]:
    if isinstance(category, IntentCategoryConfig):
        return category.model_dump()
    if isinstance(category, Mapping):
        return dict(category)
    name = getattr(category, "name", None)
    if not isinstance(name, str):
        raise config_issue(where, f"expected an IntentCategory, got {type(category).__name__}")
    return {
        "name": name,
        "description": getattr(category, "description", ""),
        "examples": list(getattr(category, "examples", ())),
        "threshold": getattr(category, "threshold", None),
    }


def _document(item: KnowledgeDocument | Mapping[str, Any] | str, index: int) -> KnowledgeDocument:
    if isinstance(item, KnowledgeDocument):
        return item
    if isinstance(item, str):
        title = item.strip().splitlines()[0][:80] if item.strip() else f"Document {index + 1}"
        return KnowledgeDocument(id=f"doc-{index + 1}", title=title, text=item)
    if isinstance(item, Mapping) and isinstance(item.get("text"), str):
        return KnowledgeDocument(
            id=str(item.get("id") or f"doc-{index + 1}"),
            title=str(item.get("title") or f"Document {index + 1}"),
            text=item["text"],
            metadata=dict(item.get("metadata") or {}),
        )
    raise config_issue(
        f"knowledge[{index}]", "expected a KnowledgeDocument, a {'text': ...} or a string"
    )


def _golden_path(item: GoldenPath | Mapping[str, Any], index: int) -> GoldenPath:
    if isinstance(item, GoldenPath):
        return item
    if (
        isinstance(item, Mapping)
        and isinstance(item.get("question"), str)
        and isinstance(item.get("answer"), str)
    ):
        return GoldenPath(
            id=str(item.get("id") or f"gp-{index + 1}"),
            question=item["question"],
            answer=item["answer"],
            category=str(item.get("category") or ""),
        )
    raise config_issue(f"golden_paths[{index}]", "expected a GoldenPath or {'question', 'answer'}")


class _Stores(NamedTuple):
    sessions: SessionStore
    threads: ThreadStore
    memory: MemoryStore
    knowledge: KnowledgeStore
    golden_paths: GoldenPathStore
    procedures: ProceduralStore | None


async def _dimensions(embedder: Embedder) -> int:
    """The embedder's declared dimensions, else those of one probe embedding."""
    dimensions = getattr(embedder, "dimensions", None)
    if isinstance(dimensions, int) and dimensions > 0:
        return dimensions
    return int((await embed_texts(embedder, ["dimension probe"])).shape[1])


class AgentFrameworkBuilder:
    """Chain `with_*` calls, then `agent = await builder.build(llm_client)`."""

    def __init__(self) -> None:
        self._config_source: ConfigSource | None = None
        self._categories: list[Any] = []
        self._handlers: list[BaseHandler] = []
        self._thresholds: dict[str, float] = {}
        self._prompts: dict[str, str] = {}
        self._middleware: list[Middleware] = []
        self._rate_limit: int | None = None
        self._logging: dict[str, Any] | None = None
        self._plugin_specs: list[str] = []
        self._discover_groups: list[str] = []
        self._stores: dict[str, Any] = {}
        self._knowledge: list[KnowledgeDocument] = []
        self._golden_paths: list[GoldenPath] = []
        self._playbooks: list[Playbook] = []
        self._tools: dict[str, Mapping[str, Any]] = {}
        self._embedder: Embedder | None = None
        self._tracker: CostTracker | None = None
        self._guard: BudgetGuard | None = None
        self._price_table: PriceTable | None = None
        self._clock: Callable[[], float] = time.time
        self._classifier_override: IntentClassifier | None = None
        self._intent_model_cache: Path | None = None
        self._intent_model_keep_days: float | None = KEEP_UNUSED_DAYS
        self._strict_persistence = False

    # ------------------------------------------------------------ configuration

    def with_config(self, config: ConfigSource) -> Self:
        """A config object, a dict, or a .yaml/.yml/.json path (validated at build)."""
        self._config_source = config
        return self

    def with_intent_categories(self, categories: Iterable[Any]) -> Self:
        """`IntentCategory` objects (or dicts / `IntentCategoryConfig`); calls add up."""
        # `...` stands for "more categories" in documentation snippets: skip it.
        self._categories.extend(c for c in categories if c is not Ellipsis)
        return self

    def with_intent_classifier(self, classifier: IntentClassifier) -> Self:
        """Your own classifier (`async classify(text, history)`, optionally `classify_sync`)
        instead of the one trained on the categories; thresholds still come from them."""
        self._classifier_override = classifier
        return self

    def with_intent_model_cache(
        self, directory: str | Path | None, *, keep_unused_days: float | None = KEEP_UNUSED_DAYS
    ) -> Self:
        """Train the offline intent classifier in a child process and keep the trained model
        in `directory` (intents_fit), so scikit-learn never stays resident in this process;
        None or "" trains in process. Models unused for `keep_unused_days` are deleted when
        the folder next gains one (None: kept forever)."""
        self._intent_model_cache = Path(directory) if directory else None
        self._intent_model_keep_days = keep_unused_days
        return self

    async def _intent_classifier(
        self,
        categories: list[IntentCategory],
        config: AgentFrameworkConfig,
        llm: LLMProvider,
        providers: list[LLMProvider],
    ) -> IntentClassifier | None:
        return await intent_classifier(
            categories,
            config,
            llm,
            providers,
            model_cache=self._intent_model_cache,
            model_cache_keep_days=self._intent_model_keep_days,
        )

    def with_handlers(self, handlers: Iterable[BaseHandler]) -> Self:
        self._handlers.extend(handlers)
        return self

    def with_confidence_thresholds(self, thresholds: Mapping[str, float]) -> Self:
        """Per-intent answer thresholds; 0.0 means "always ask a human"."""
        self._thresholds.update(thresholds)
        return self

    def with_prompts(self, prompts: Mapping[str, str]) -> Self:
        """Prompt templates, e.g. "system", "escalation_message", "resolution_message"."""
        self._prompts.update(prompts)
        return self

    def with_middleware(self, middleware: Middleware | Iterable[Middleware]) -> Self:
        if isinstance(middleware, Middleware):
            self._middleware.append(middleware)
        else:
            self._middleware.extend(middleware)
        return self

    def with_rate_limiting(self, requests_per_minute: int = 60) -> Self:
        self._rate_limit = requests_per_minute
        return self

    def with_logging(
        self,
        level: str | None = None,
        *,
        json: bool | None = None,
        log_content: bool = False,
        logger: Any = None,
    ) -> Self:
        """Log one structured line per message (to stderr, or to your structlog `logger`)."""
        self._logging = {"level": level, "json": json, "log_content": log_content, "logger": logger}
        return self

    def with_plugins(self, plugins: Iterable[str]) -> Self:
        """Plugins by module path: "package.module" or "package.module:factory"."""
        self._plugin_specs.extend(plugins)
        return self

    def auto_discover_plugins(self, group: str = DEFAULT_GROUP) -> Self:
        """Load every plugin installed under the entry-point group."""
        self._discover_groups.append(group)
        return self

    def with_stores(
        self,
        *,
        sessions: SessionStore | None = None,
        threads: ThreadStore | None = None,
        memory: MemoryStore | None = None,
        knowledge: KnowledgeStore | None = None,
        golden_paths: GoldenPathStore | None = None,
        procedures: ProceduralStore | None = None,
    ) -> Self:
        """Plug your own stores (the platform's database-backed ones); others stay in memory."""
        given = {
            "sessions": sessions,
            "threads": threads,
            "memory": memory,
            "knowledge": knowledge,
            "golden_paths": golden_paths,
            "procedures": procedures,
        }
        self._stores.update({k: v for k, v in given.items() if v is not None})
        return self

    def with_knowledge(
        self, documents: Iterable[KnowledgeDocument | Mapping[str, Any] | str]
    ) -> Self:
        """Articles for the knowledge base: `{"id", "title", "text"}` dicts or plain strings."""
        start = len(self._knowledge)
        self._knowledge.extend(_document(d, start + i) for i, d in enumerate(documents))
        return self

    def with_golden_paths(self, paths: Iterable[GoldenPath | Mapping[str, Any]]) -> Self:
        """Approved answers: `{"question", "answer"}` dicts."""
        start = len(self._golden_paths)
        self._golden_paths.extend(_golden_path(p, start + i) for i, p in enumerate(paths))
        return self

    def with_playbooks(self, playbooks: Iterable[Playbook]) -> Self:
        self._playbooks.extend(playbooks)
        return self

    def with_tools(self, tools: Mapping[str, Mapping[str, Any]]) -> Self:
        """Tools called while gathering context (see `ToolBinding`); needs `tool_client`."""
        self._tools.update(tools)
        return self

    def with_embedder(self, embedder: Embedder) -> Self:
        self._embedder = embedder
        return self

    def with_costs(
        self,
        *,
        tracker: CostTracker | None = None,
        guard: BudgetGuard | None = None,
        price_table: PriceTable | None = None,
    ) -> Self:
        """Share a cost tracker / budget guard between agents (tenant budgets), and the
        price table their calls are priced with (the config's ``llm.prices`` wins over it)."""
        self._tracker = tracker
        self._guard = guard
        self._price_table = price_table
        return self

    def with_clock(self, clock: Callable[[], float]) -> Self:
        """Wall-clock seconds source for TTLs and inactivity (tests and simulations)."""
        self._clock = clock
        return self

    def with_strict_persistence(self, strict: bool = True) -> Self:
        """Fail the message (`PersistenceError`) when a store cannot keep the conversation.

        Off by default for the library (in-memory stores do not fail); the platform's
        database-backed pipelines are always strict, so a lost thread or memory is never
        hidden in ``metadata["degraded"]``.
        """
        self._strict_persistence = strict
        return self

    # -------------------------------------------------------------------- build

    async def build(
        self,
        llm_client: LLMProvider | Sequence[LLMProvider] | Any = None,
        tool_client: ToolClient | None = None,
    ) -> AgentPipeline:
        """Validate everything and assemble the agent.

        `llm_client`: None for the providers of the config (the offline provider by
        default), an `LLMProvider` or a list of them (tried in order, then the config's
        template answer), or an `openai.AsyncOpenAI` client.
        """
        config, contributions, categories = self._resolved_config()
        plan = _pipeline_plan(config)
        tools = self._tool_bindings({**contributions.tools, **self._tools}, tool_client)

        prices = agent_price_table(config, self._price_table)
        providers = resolve_providers(llm_client, config, prices)
        llm, tracker = guarded_chain(
            providers, config, tracker=self._tracker, guard=self._guard, prices=prices
        )
        embedder = guarded_embedder(self._embedder, llm)
        classifier = self._classifier_override
        if classifier is None:
            classifier = await self._intent_classifier(categories, config, llm, providers)

        stores = await self._seeded_stores(config, embedder)
        redactor = PIIRedactor()
        memory = self._memory_manager(stores.memory, config, redactor)
        gatherer = ContextGatherer(
            memory=memory,
            knowledge=stores.knowledge,
            golden_paths=stores.golden_paths,
            procedures=stores.procedures,
            tool_client=tool_client,
            tools=tools,
            knowledge_top_k=config.memory.knowledge_top_k,
            golden_top_k=config.memory.knowledge_top_k,
            timeout_seconds=config.timeouts.context_branch_seconds,
            redact=redactor.redact_mapping if config.guardrails.redact_pii else None,
        )
        handlers = HandlerRegistry(
            [SmallTalkHandler(), ResolutionHandler(), *contributions.handlers, *self._handlers]
        )
        confidence = ConfidenceEvaluator(
            default_threshold=config.confidence.default_threshold,
            thresholds=config.confidence.thresholds,
            category_thresholds={c.name: c.threshold for c in categories},
        )
        threads = ThreadManager(
            stores.threads,
            ThreadDetector(
                similarity_threshold=config.threads.similarity_threshold,
                inactivity_seconds=config.threads.inactivity_seconds,
            ),
        )
        dimensions = await _dimensions(embedder)
        return AgentPipeline(
            config=config,
            classifier=classifier,
            sessions=SessionManager(stores.sessions, clock=self._clock),
            threads=threads,
            memory=memory,
            gatherer=gatherer,
            handlers=handlers,
            confidence=confidence,
            middleware=self._middleware_chain(config, redactor),
            llm=llm,
            embedder=embedder,
            embedding_dimensions=dimensions,
            cost_tracker=tracker,
            clock=self._clock,
            strict_persistence=self._strict_persistence,
            plan=plan,
        )

    def _resolved_config(
        self,
    ) -> tuple[AgentFrameworkConfig, PluginContributions, list[IntentCategory]]:
        """The config merged with the plugins' contributions, and its intent categories."""
        base = ConfigLoader.load(self._config_source)
        manager = self._load_plugins([*base.plugins, *self._plugin_specs])
        try:
            contributions = manager.collect()
        except PluginError as exc:
            raise config_issue("plugins", str(exc)) from exc
        config = self._merge(base, contributions.categories, contributions.prompts)
        try:
            categories = [IntentCategory(**c.model_dump()) for c in config.intents.categories]
        except (TypeError, ValueError) as exc:
            raise config_issue("intents.categories", str(exc)) from exc
        return config, contributions, categories

    async def _seeded_stores(self, config: AgentFrameworkConfig, embedder: Embedder) -> _Stores:
        """The given stores, in-memory ones for the rest, seeded with the builder's content."""
        stores = self._stores
        ttl, max_sessions = config.session.ttl_seconds, config.session.max_sessions
        clock = self._clock
        # `is None`, not `or`: an empty in-memory store is falsy (it has a length).
        session_store = stores.get("sessions")
        if session_store is None:
            session_store = InMemorySessionStore(
                ttl_seconds=ttl, max_sessions=max_sessions, clock=clock
            )
        thread_store = stores.get("threads")
        if thread_store is None:
            thread_store = InMemoryThreadStore(
                ttl_seconds=ttl, max_sessions=max_sessions, clock=clock
            )
        memory_store = stores.get("memory")
        if memory_store is None:
            memory_store = InMemoryMemoryStore(
                short_term_messages=config.memory.short_term_messages,
                ttl_seconds=ttl,
                episodic_limit=config.memory.episodic_limit,
                max_sessions=max_sessions,
                clock=clock,
            )
        knowledge = stores.get("knowledge")
        if knowledge is None:
            knowledge = InMemoryKnowledgeStore(embedder)
        golden = stores.get("golden_paths")
        if golden is None:
            golden = InMemoryGoldenPathStore(embedder)
        if self._knowledge:
            await knowledge.add(self._knowledge)
        if self._golden_paths:
            await golden.add(self._golden_paths)
        procedures = await self._procedures(stores.get("procedures"))
        return _Stores(session_store, thread_store, memory_store, knowledge, golden, procedures)

    async def _procedures(self, given: ProceduralStore | None) -> ProceduralStore | None:
        if given is None:
            return InMemoryProceduralStore(self._playbooks) if self._playbooks else None
        for playbook in self._playbooks:
            await given.save_playbook(playbook)
        return given

    @staticmethod
    def _memory_manager(
        store: MemoryStore, config: AgentFrameworkConfig, redactor: PIIRedactor
    ) -> MemoryManager:
        return MemoryManager(
            store,
            # Other users' cases are anonymised whatever guardrails.redact_pii says.
            anonymise=lambda text: redactor.redact(text).text,
            short_term_messages=config.memory.short_term_messages,
            recall_limit=config.memory.knowledge_top_k,
        )

    def _load_plugins(self, specs: Sequence[str]) -> PluginManager:
        manager = PluginManager()
        for index, spec in enumerate(dict.fromkeys(specs)):
            try:
                manager.load(spec)
            except PluginError as exc:
                raise config_issue(f"plugins[{index}]", str(exc)) from exc
        for group in self._discover_groups:
            try:
                manager.discover(group)
            except PluginError as exc:
                raise config_issue("plugins", f"entry-point group {group!r}: {exc}") from exc
        return manager

    def _merge(
        self,
        base: AgentFrameworkConfig,
        plugin_categories: Sequence[Any],
        plugin_prompts: Mapping[str, str],
    ) -> AgentFrameworkConfig:
        """One dict of the config plus everything given to the builder, validated once."""
        data = escape_env(base.to_dict(reveal_secrets=True))
        extra = [
            _category_dict(c, f"intent categories[{i}]") for i, c in enumerate(self._categories)
        ]
        extra += [
            _category_dict(c, f"plugin categories[{i}]") for i, c in enumerate(plugin_categories)
        ]
        data["intents"]["categories"] += escape_env(extra)
        # Plugin prompts are defaults: the config file, then the builder, override them.
        data["prompts"] = {**escape_env(dict(plugin_prompts)), **data["prompts"]}
        data["prompts"].update(escape_env(self._prompts))
        data["confidence"]["thresholds"].update(self._thresholds)
        data["plugins"] = list(dict.fromkeys([*data["plugins"], *self._plugin_specs]))
        if self._rate_limit is not None:
            data["rate_limit"] = {"enabled": True, "requests_per_minute": self._rate_limit}
        if self._logging is not None:
            for key in ("level", "json"):
                if self._logging[key] is not None:
                    data["logging"][key] = self._logging[key]
        return ConfigLoader.from_dict(data, source="AgentFrameworkBuilder")

    def _tool_bindings(
        self, tools: Mapping[str, Mapping[str, Any]], tool_client: ToolClient | None
    ) -> list[ToolBinding]:
        if tool_client is not None and not callable(getattr(tool_client, "call_tool", None)):
            raise config_issue("tool_client", f"{type(tool_client).__name__} has no call_tool()")
        if self._tools and tool_client is None:
            raise config_issue("tools", "tools are configured but build() got no tool_client")
        bindings = []
        for key, spec in tools.items():
            try:
                bindings.append(ToolBinding.from_config(key, spec))
            except ValueError as exc:
                raise config_issue(f"tools.{key}", str(exc)) from exc
        return bindings

    def _middleware_chain(
        self, config: AgentFrameworkConfig, redactor: PIIRedactor
    ) -> MiddlewareChain:
        chain = MiddlewareChain()
        if self._logging is not None:
            chain.add(
                LoggingMiddleware(
                    self._logging["logger"],
                    level=config.logging.level,
                    json=config.logging.json,
                    log_content=self._logging["log_content"],
                )
            )
        if config.rate_limit.enabled:
            chain.add(RateLimitMiddleware(config.rate_limit.requests_per_minute))
        if config.guardrails.redact_before_persistence:
            chain.add(PIIRedactionMiddleware(redactor))
        for middleware in self._middleware:
            chain.add(middleware)
        return chain


def _pipeline_plan(config: AgentFrameworkConfig) -> PipelinePlan:
    """The planner the pipeline follows, loaded and checked once; every error at once."""
    spec = None if config.planner is None else config.planner.model_dump(exclude={"replanning"})
    _check_replanning(config)
    try:
        return load_pipeline_plan(spec)
    except PlanValidationError as exc:
        issues = [
            ConfigIssue(
                f"planner.definition.{error.path}" if error.path else "planner.definition",
                str(error),
                error.pos.line or None,
            )
            for error in exc.errors
        ]
        raise ConfigError(issues, source="AgentFrameworkBuilder") from exc


def _check_replanning(config: AgentFrameworkConfig) -> None:
    """The planner's replanning rules: known triggers and strategies, an FSM or a tree."""
    planner = config.planner
    if planner is None or planner.replanning is None:
        return
    problem = None
    if planner.type == "llm":
        problem = "an llm planner repairs and falls back on its own (its `fallback`)"
    else:
        try:
            ReplanPolicy.from_config(planner.replanning)
        except ValueError as exc:
            problem = str(exc)
    if problem is not None:
        issue = ConfigIssue("planner.replanning", problem)
        raise ConfigError([issue], source="AgentFrameworkBuilder")
