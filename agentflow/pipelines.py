"""Blueprints of platform agents, their config validation, and their kernel pipelines.

An `Agent` row holds a blueprint name and a config validated against that blueprint's
pydantic model; `get_pipeline(agent)` turns it into a kernel `AgentPipeline` with the
Django-backed stores and keeps it per worker process, keyed by (agent id, version): the
expensive part of a build is training the intent classifier, so a config change must bump
`Agent.version` to be picked up.

A config may name its planner (`agentflow.planners`: validated with the kernel's loader, every
error with its line). The other built-in blueprints (`agentflow.blueprints.catalog`) run a
kernel `StepAgent` through a `BlueprintRunner` instead of the support pipeline.

A tenant writes this config, the server runs it: a config may not read the server's
environment (every `${...}` is escaped, except an LLM `api_key` naming an allowed variable,
and MCP servers' `env`/`headers` values naming a variable of `MCP_SECRET_ENV_VARS`)
nor point an LLM provider or an MCP server anywhere the operator has not allowed
(`LLM_ALLOWED_BASE_URLS`, `MCP_ALLOWED_COMMANDS`, `MCP_ALLOWED_URLS`).
"""

from __future__ import annotations

import asyncio
import copy
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Literal, Protocol, cast

from django.conf import settings
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentflow.blueprints import (
    STEP_AGENT_PLANNERS,
    BlueprintConfig,
    BlueprintSpec,
    ToolGrantConfig,
)
from agentflow.blueprints.catalog import SPECS
from agentflow.builtin_tools import BuiltinToolSettings
from agentflow.core.prices import operator_price_table
from agentflow.kernel.builder import AgentFrameworkBuilder
from agentflow.kernel.config import (
    BudgetConfig,
    ConfigError,
    ConfigIssue,
    ConfigLoader,
    GuardrailsConfig,
    IntentCategoryConfig,
    LLMConfig,
    MemoryConfig,
    SentimentConfig,
    SessionConfig,
    ThreadsConfig,
    escape_env,
)
from agentflow.kernel.intents import OUT_OF_SCOPE
from agentflow.kernel.llm.base import LLMProvider
from agentflow.kernel.llm_chain import agent_price_table, guarded_chain, provider_from_config
from agentflow.kernel.pipeline import DEFAULT_ESCALATION_MESSAGE
from agentflow.kernel.results import AgentReply
from agentflow.kernel.tools import ToolGrant
from agentflow.knowledge import get_embedder
from agentflow.models import Agent
from agentflow.planners import DEFAULT_PLANNER, PlannerConfig, planner_issues
from agentflow.stores import (
    DjangoKnowledgeStore,
    DjangoMemoryStore,
    DjangoSessionStore,
    DjangoThreadStore,
)
from learning.stores import DjangoGoldenPathStore, DjangoProceduralStore

__all__ = [
    "BLUEPRINTS",
    "AgentConfigError",
    "AgentRunner",
    "Blueprint",
    "McpServerEntry",
    "SupportAgentConfig",
    "ToolGrantConfig",
    "build_pipeline",
    "clear_pipeline_cache",
    "evict_pipeline",
    "get_pipeline",
    "kernel_config",
    "runs_preflight",
    "validate_agent_config",
]

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
_INTENT_NAME_CHARS = 100  # Thread.intent, MemoryCase.intent
_ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_DEFAULT_KEY_ENV_VARS = ("OPENAI_API_KEY",)


class AgentConfigError(ConfigError):
    """An agent config that its blueprint refuses; `issues` name each field (HTTP 422)."""

    def by_field(self) -> dict[str, list[str]]:
        """`{"intent_categories[0].threshold": ["reason", ...]}`, for an API error body."""
        fields: dict[str, list[str]] = {}
        for issue in self.issues:
            fields.setdefault(issue.path or "config", []).append(issue.reason)
        return fields


# ------------------------------------------------------------------------ support_agent


def _category(
    name: str, description: str, examples: Sequence[str], threshold: float | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "examples": list(examples),
        "threshold": threshold,
    }


DEFAULT_SUPPORT_CATEGORIES = (
    _category(
        "ACCOUNT_ACCESS",
        "Logging in, passwords, two-factor authentication and locked accounts",
        [
            "I can't log in to my account",
            "how do I reset my password",
            "the password reset email never arrives",
            "my account is locked",
            "two-factor code is not accepted",
        ],
    ),
    _category(
        "BILLING",
        "Invoices, payments, refunds and subscription plans",
        [
            "I was charged twice this month",
            "where can I download my invoice",
            "I want a refund",
            "how do I update my credit card",
            "how do I change my subscription plan",
        ],
    ),
    _category(
        "TECHNICAL_ISSUE",
        "Errors, bugs and features that do not work as expected",
        [
            "the app crashes when I upload a file",
            "I get an error 500 when saving",
            "the export button does nothing",
            "sync stopped working on my phone",
            "the page is very slow to load",
        ],
    ),
    _category(
        "OUTAGE",
        "The service is down or unreachable for everyone",
        [
            "your service is down",
            "the website is not loading at all",
            "is there an outage right now",
            "nothing works, all requests time out",
            "the API returns 503 for every call",
        ],
        threshold=0.7,
    ),
    _category(
        "HUMAN_AGENT",
        "The customer asks for a person or wants to complain",
        [
            "I want to talk to a human",
            "let me speak to a real person",
            "connect me with your manager",
            "I want to file a complaint",
            "stop the bot, I need an agent",
        ],
        threshold=0.0,
    ),
)


class McpServerEntry(BaseModel):
    """An MCP server whose tools the agent may be granted (as ``<name>.<tool>``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=50, pattern=r"^[A-Za-z0-9_-]+$")
    transport: Literal["stdio", "http"]
    command: list[Annotated[str, Field(min_length=1, max_length=500)]] | None = Field(
        None, max_length=50, description="stdio: [executable, *args]."
    )
    env: dict[str, Annotated[str, Field(max_length=2_000)]] = Field(
        default_factory=dict, description="stdio: extra environment of the server."
    )
    url: str | None = Field(None, max_length=2_000, description="http: the MCP endpoint.")
    headers: dict[str, Annotated[str, Field(max_length=2_000)]] = Field(
        default_factory=dict, description="http: request headers (secrets as ${VAR})."
    )
    timeout_seconds: float = Field(30.0, gt=0, le=300, description="Bound of one call.")


class SupportAgentConfig(BaseModel):
    """Config of the `support_agent` blueprint; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, title="support_agent config")

    intent_categories: list[IntentCategoryConfig] = Field(
        default_factory=lambda: [IntentCategoryConfig(**c) for c in DEFAULT_SUPPORT_CATEGORIES],
        description="Intents with examples; a category threshold of 0 always asks a human.",
    )
    default_threshold: Unit = Field(
        0.6, description="Answer confidence below which a human reviews the reply."
    )
    oos_threshold: Unit | None = Field(
        None, description="Intent confidence below which a message is out of scope."
    )
    novelty_keep: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Share of each intent's typical messages the out-of-scope gate keeps, "
        "once every intent has 20 examples (default: 0.965 with the wordllama encoder, 0.975 "
        "with MiniLM, 0.98 lexical): lower sends more off-topic messages to a person, and "
        "more on-topic ones.",
    )
    escalation_message: str = Field(
        DEFAULT_ESCALATION_MESSAGE,
        min_length=1,
        max_length=2_000,
        description="What the customer reads while a human reviews their message.",
    )
    llm: LLMConfig = Field(default_factory=LLMConfig)
    session: SessionConfig = Field(default_factory=SessionConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    threads: ThreadsConfig = Field(default_factory=ThreadsConfig)
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig)
    budget: BudgetConfig = Field(
        default_factory=BudgetConfig,
        description="Dollars the agent's runs may spend per UTC day, across every worker: "
        "over soft_usd a run warns; over hard_usd it goes to a person before any LLM call.",
    )
    golden_paths_scope: Literal["agent", "tenant"] = Field(
        "agent",
        description="Whose approved answers this agent answers from: its own, or every "
        "agent's of the tenant.",
    )
    planner: PlannerConfig | None = Field(
        None,
        description="{type: fsm | behavior_tree | llm, definition: YAML text or object}, "
        "validated when saved (errors name their lines); null: the default planner, the "
        "support FSM (the blueprint's default_planner).",
    )
    tools: list[str | ToolGrantConfig] = Field(
        default_factory=list,
        max_length=200,
        description="Tools the agent may call (deny by default): an id, or {id, safety_level} "
        "to set this agent's safety level for it (never below a tool's own 'dangerous').",
    )
    mcp_servers: list[McpServerEntry] = Field(
        default_factory=list,
        max_length=20,
        description="MCP servers (stdio or http) whose tools the agent sees as <name>.<tool>; "
        "commands and URLs must be allowed by the operator (MCP_ALLOWED_COMMANDS/URLS).",
    )
    tool_role: Literal["viewer", "reviewer", "operator", "owner"] = Field(
        "operator",
        description="The governance role a run calls tools as: its tool permission levels "
        "(PUT /agents/{id}/tool-permissions, capped by the role's ceiling) apply.",
    )
    sentiment: SentimentConfig | None = Field(
        None,
        description="{escalate_below (-1..0), drop_delta, window}: a customer message scored at "
        "or below escalate_below (VADER, as sentiment_monitor_agent scores it), or falling by "
        "drop_delta below the session's previous window messages, goes to a person with the "
        "reason 'frustrated'; null: off.",
    )
    tool_settings: BuiltinToolSettings = Field(
        default_factory=BuiltinToolSettings,
        description="Settings of the built-in tools (http_request, zendesk / jira tickets, "
        "send_email, lookup_order): a tool whose section is absent is not offered; URLs must "
        "be under TOOL_ALLOWED_URLS and secrets ${VAR} of TOOL_SECRET_ENV_VARS.",
    )


# Bounds on what a tenant can make a worker train on every build (BANKING77, 77 intents of
# about 130 examples, fits with room to spare).
_MAX_CATEGORIES = 200
_MAX_EXAMPLES = 500
_MAX_EXAMPLE_CHARS = 1_000


def _category_issues(config: SupportAgentConfig) -> list[ConfigIssue]:
    """Checks of the categories that the kernel's models leave to the classifier."""
    categories = config.intent_categories
    if len(categories) > _MAX_CATEGORIES:
        return [ConfigIssue("intent_categories", f"at most {_MAX_CATEGORIES} categories")]
    issues = []
    seen: set[str] = set()
    for index, category in enumerate(categories):
        where = f"intent_categories[{index}]"
        if category.name == OUT_OF_SCOPE:
            issues.append(ConfigIssue(f"{where}.name", f"{OUT_OF_SCOPE!r} is reserved"))
        elif len(category.name) > _INTENT_NAME_CHARS:
            issues.append(ConfigIssue(f"{where}.name", f"longer than {_INTENT_NAME_CHARS} chars"))
        elif category.name in seen:
            issues.append(ConfigIssue(f"{where}.name", f"duplicate name {category.name!r}"))
        seen.add(category.name)
        if len(category.examples) > _MAX_EXAMPLES:
            issues.append(ConfigIssue(f"{where}.examples", f"at most {_MAX_EXAMPLES} examples"))
        for number, example in enumerate(category.examples):
            if len(example) > _MAX_EXAMPLE_CHARS:
                reason = f"longer than {_MAX_EXAMPLE_CHARS} characters"
                issues.append(ConfigIssue(f"{where}.examples[{number}]", reason))
    return issues


def _provider_issues(config: SupportAgentConfig | BlueprintConfig) -> list[ConfigIssue]:
    """Providers may only use the API keys and endpoints the operator allows."""
    options = getattr(settings, "AGENTFLOW", {})
    key_vars = tuple(options.get("LLM_API_KEY_ENV_VARS", _DEFAULT_KEY_ENV_VARS))
    base_urls = tuple(options.get("LLM_ALLOWED_BASE_URLS", ()))
    issues = []
    for index, provider in enumerate(config.llm.providers):
        where = f"llm.providers[{index}]"
        if provider.api_key is not None:
            reference = _ENV_REFERENCE.match(provider.api_key.get_secret_value())
            if reference is None or reference.group(1) not in key_vars:
                allowed = ", ".join(f"${{{name}}}" for name in key_vars) or "none"
                issues.append(
                    ConfigIssue(
                        f"{where}.api_key",
                        "must name an environment variable of the server, not hold a key "
                        f"(allowed: {allowed})",
                    )
                )
        if provider.base_url is not None and provider.base_url.rstrip("/") not in {
            url.rstrip("/") for url in base_urls
        }:
            allowed = ", ".join(base_urls) or "none: leave it unset for the provider's default"
            issues.append(
                ConfigIssue(
                    f"{where}.base_url", f"not an allowed LLM endpoint (allowed: {allowed})"
                )
            )
    return issues


def _tool_issues(config: SupportAgentConfig | BlueprintConfig) -> list[ConfigIssue]:
    """Grants: well-formed ids, each granted once."""
    issues = []
    seen: set[str] = set()
    for index, entry in enumerate(config.tools):
        tool_id = entry if isinstance(entry, str) else entry.id
        where = f"tools[{index}]" if isinstance(entry, str) else f"tools[{index}].id"
        try:
            ToolGrant(tool_id)
        except ValueError as exc:
            issues.append(ConfigIssue(where, str(exc)))
            continue
        if tool_id in seen:
            issues.append(ConfigIssue(where, f"{tool_id!r} is granted twice"))
        seen.add(tool_id)
    return issues


def _granted_ids(config: SupportAgentConfig) -> list[str]:
    return [entry if isinstance(entry, str) else entry.id for entry in config.tools]


_SECRET_NAME = re.compile(r"(?i)authorization|key|token|secret|password|cookie|credential")


def _secret_issues(where: str, values: Mapping[str, str]) -> list[ConfigIssue]:
    """A ``${VAR}`` must name an allowed variable; a secret-looking entry must be one."""
    allowed = tuple(getattr(settings, "AGENTFLOW", {}).get("MCP_SECRET_ENV_VARS", ()))
    listed = ", ".join(f"${{{name}}}" for name in allowed) or "none"
    issues = []
    for name, value in values.items():
        reference = _ENV_REFERENCE.match(value)
        if reference is not None and reference.group(1) in allowed:
            continue
        if reference is not None or "${" in value or _SECRET_NAME.search(name):
            reason = f"secrets only as an allowed ${{VAR}} reference (allowed: {listed})"
            issues.append(ConfigIssue(f"{where}.{name}", reason))
    return issues


def _mcp_server_issues(index: int, server: McpServerEntry) -> list[ConfigIssue]:
    options = getattr(settings, "AGENTFLOW", {})
    where = f"mcp_servers[{index}]"
    if server.transport == "stdio":
        commands = tuple(options.get("MCP_ALLOWED_COMMANDS", ()))
        misplaced = {"url": server.url is not None, "headers": bool(server.headers)}
        issues = [
            ConfigIssue(f"{where}.{key}", "only for the http transport")
            for key, given in misplaced.items()
            if given
        ]
        if not server.command:
            issues.append(ConfigIssue(f"{where}.command", "stdio needs [executable, *args]"))
        elif server.command[0] not in commands:
            allowed = ", ".join(commands) or "none (MCP_ALLOWED_COMMANDS is empty)"
            reason = f"not an allowed executable (allowed: {allowed})"
            issues.append(ConfigIssue(f"{where}.command", reason))
        return issues + _secret_issues(f"{where}.env", server.env)
    prefixes = tuple(options.get("MCP_ALLOWED_URLS", ()))
    misplaced = {"command": server.command is not None, "env": bool(server.env)}
    issues = [
        ConfigIssue(f"{where}.{key}", "only for the stdio transport")
        for key, given in misplaced.items()
        if given
    ]
    if not server.url:
        issues.append(ConfigIssue(f"{where}.url", "http needs the server's URL"))
    elif not server.url.startswith(("http://", "https://")) or not any(
        server.url.startswith(prefix) for prefix in prefixes
    ):
        allowed = ", ".join(prefixes) or "none (MCP_ALLOWED_URLS is empty)"
        issues.append(ConfigIssue(f"{where}.url", f"not an allowed MCP URL (allowed: {allowed})"))
    return issues + _secret_issues(f"{where}.headers", server.headers)


def _mcp_issues(config: SupportAgentConfig) -> list[ConfigIssue]:
    """Servers run only what the operator allows; names are unique."""
    issues = []
    seen: set[str] = set()
    for index, server in enumerate(config.mcp_servers):
        if server.name in seen:
            reason = f"duplicate server name {server.name!r}"
            issues.append(ConfigIssue(f"mcp_servers[{index}].name", reason))
        seen.add(server.name)
        issues += _mcp_server_issues(index, server)
    return issues


# ----------------------------------------------------------------------------- blueprints


@dataclass(frozen=True)
class Blueprint:
    name: str
    description: str
    config_model: type[BaseModel]
    default_config: Mapping[str, Any] = field(default_factory=dict)
    config_schema: Mapping[str, Any] = field(default_factory=dict)
    # The planner an agent runs when its config names none.
    default_planner: Mapping[str, Any] | None = None
    # A blueprint on a kernel `StepAgent`; None: the support pipeline (`build_pipeline`).
    spec: BlueprintSpec | None = None

    @classmethod
    def of(
        cls,
        name: str,
        description: str,
        config_model: type[BaseModel],
        default_planner: Mapping[str, Any] | None = None,
    ) -> Blueprint:
        return cls(
            name=name,
            description=description,
            config_model=config_model,
            default_config=_dump(config_model()),
            config_schema=config_model.model_json_schema(),
            default_planner=default_planner,
        )

    @classmethod
    def of_spec(cls, spec: BlueprintSpec) -> Blueprint:
        return cls(
            name=spec.name,
            description=spec.description,
            config_model=spec.config_model,
            default_config=_dump(spec.config_model()),
            config_schema=spec.config_model.model_json_schema(),
            default_planner=spec.agent_class.default_planner or None,
            spec=spec,
        )

    def to_dict(self) -> dict[str, Any]:
        """A copy safe to hand out (and to change): the blueprint itself stays as it is."""
        return copy.deepcopy(
            {
                "name": self.name,
                "description": self.description,
                "default_config": self.default_config,
                "config_schema": self.config_schema,
                "default_planner": self.default_planner,
            }
        )


def _dump(model: BaseModel) -> dict[str, Any]:
    # reveal_secrets: an api_key is a "${VAR}" reference, which must be stored as written.
    return model.model_dump(mode="json", context={"reveal_secrets": True})


BLUEPRINTS: Mapping[str, Blueprint] = MappingProxyType(
    {
        "support_agent": Blueprint.of(
            "support_agent",
            "Answers customer-support questions from its knowledge base, past resolutions "
            "and approved answers; asks a human when it is not sure.",
            SupportAgentConfig,
            default_planner=DEFAULT_PLANNER,
        ),
        **{spec.name: Blueprint.of_spec(spec) for spec in SPECS},
    }
)


def _format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(root: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        found = model.model_fields.get(part)
        annotation = getattr(found, "annotation", None)
        inner = getattr(annotation, "__args__", (annotation,))[-1]
        model = inner if isinstance(inner, type) and issubclass(inner, BaseModel) else None
    return model


def _issues(error: ValidationError, root: type[BaseModel]) -> list[ConfigIssue]:
    issues = []
    for item in error.errors():
        loc = [part for part in item["loc"] if part != "[key]"]
        path = _format_loc(loc)
        reason = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            parent = _model_at(root, loc[:-1])
            allowed = ", ".join(parent.model_fields) if parent is not None else ""
            reason = f"unknown key (allowed: {allowed})" if allowed else "unknown key"
        elif item["type"] != "missing" and "api_key" not in path:
            value = item.get("input")
            if isinstance(value, bool | int | float) or (
                isinstance(value, str) and len(value) <= 40
            ):
                reason += f" (got {value!r})"
        issues.append(ConfigIssue(path, reason))
    return issues


def validate_agent_config(blueprint: str, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The normalised config (defaults filled in) or `AgentConfigError` naming each bad field."""
    found = BLUEPRINTS.get(blueprint) if isinstance(blueprint, str) else None
    if found is None:
        reason = f"unknown blueprint {blueprint!r}; available: {', '.join(BLUEPRINTS)}"
        raise AgentConfigError([ConfigIssue("blueprint", reason)], source="agent")
    source = f"{found.name} config"
    if config is None:
        config = {}
    if not isinstance(config, Mapping):
        reason = f"must be an object, not {type(config).__name__}"
        raise AgentConfigError([ConfigIssue("config", reason)], source=source)
    try:
        model = found.config_model.model_validate(dict(config))
    except ValidationError as exc:
        raise AgentConfigError(_issues(exc, found.config_model), source=source) from None
    if isinstance(model, SupportAgentConfig):
        issues = [
            *_category_issues(model),
            *_provider_issues(model),
            *planner_issues(
                model.planner, tools=[t if isinstance(t, str) else t.id for t in model.tools]
            ),
            *_tool_issues(model),
            *_mcp_issues(model),
        ]
    elif found.spec is not None:
        issues = _blueprint_issues(found.spec, model)
    else:
        issues = []
    if issues:
        raise AgentConfigError(issues, source=source)
    return _dump(model)


def _blueprint_issues(spec: BlueprintSpec, model: BaseModel) -> list[ConfigIssue]:
    """A StepAgent blueprint's own checks, and its planner and LLM providers' if it has them."""
    issues: list[ConfigIssue] = []
    if isinstance(model, BlueprintConfig):
        issues += _provider_issues(model)
        issues += planner_issues(
            model.planner,
            known=spec.known_with(model.tools),
            runnable=STEP_AGENT_PLANNERS,
            runner=f"the {spec.name} blueprint",
            replans=False,
        )
        issues += _tool_issues(model)
    if spec.check is not None:
        issues += spec.check(model)
    return issues


def blueprint_llm(agent_id: str, config: Mapping[str, Any]) -> LLMProvider | None:
    """The failover chain of a StepAgent's configured providers; None when all are offline.

    Built like the support pipeline's: the tenant's text never reaches the server's
    environment (every ``$`` escaped) except an allowed ``api_key`` reference.
    """
    llm = config.get("llm") or {}
    providers = list(llm.get("providers") or [])
    if all(p.get("kind") == "offline" for p in providers):
        return None
    data = escape_env({"name": agent_id, "llm": llm})
    for provider, given in zip(data["llm"]["providers"], providers, strict=True):
        if given.get("api_key"):
            provider["api_key"] = given["api_key"]
    framework = ConfigLoader.load(data)
    prices = agent_price_table(framework, operator_price_table())
    chain = [
        provider_from_config(i, framework, prices) for i in range(len(framework.llm.providers))
    ]
    guarded, _ = guarded_chain(chain, framework, prices=prices)
    return guarded


def runs_preflight(blueprint: str) -> bool:
    """Whether runs of `blueprint` are priced before they start (the support pipeline's)."""
    found = BLUEPRINTS.get(blueprint)
    return found is not None and found.spec is None


def kernel_config(name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The kernel `AgentFrameworkConfig` dict of a normalised support_agent config."""
    data = escape_env(
        {
            "name": name,
            "intents": {
                "categories": config["intent_categories"],
                "oos_threshold": config["oos_threshold"],
                "novelty_keep": config["novelty_keep"],
            },
            "confidence": {"default_threshold": config["default_threshold"]},
            "prompts": {"escalation_message": config["escalation_message"]},
            "llm": config["llm"],
            "session": config["session"],
            "memory": config["memory"],
            "threads": config["threads"],
            "guardrails": config["guardrails"],
            # No kernel budget: the kernel's guard counts one process's spend since it
            # started; the platform enforces the agent's budget per day across every
            # worker before the run (`agentflow.budgets`).
        }
    )
    if config.get("sentiment"):  # absent from configs saved before the check existed
        data["sentiment"] = config["sentiment"]
    if config.get("planner"):
        # The kernel loads and checks it again when the pipeline is built (validated on save).
        data["planner"] = config["planner"]
    # The one substitution a tenant may ask for: an allowed API key variable (validated).
    for provider, given in zip(data["llm"]["providers"], config["llm"]["providers"], strict=True):
        if given.get("api_key"):
            provider["api_key"] = given["api_key"]
    return data


# -------------------------------------------------------------------------------- cache


class AgentRunner(Protocol):
    """What runs an agent's messages: the support `AgentPipeline` or a `BlueprintRunner`."""

    plan: Any

    async def process_message(
        self, *, user_id: str, message: str, context: Mapping[str, Any] | None = None
    ) -> AgentReply: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Entry:
    pipeline: AgentRunner
    loop: weakref.ref[asyncio.AbstractEventLoop]


class _PipelineCache:
    """A small LRU of built pipelines, one per (agent, version) and event loop.

    A pipeline belongs to the loop it was built on: its per-user asyncio locks bind to
    that loop (and are not thread-safe), and so do the HTTP pools of network LLM clients.
    Threaded workers therefore get one pipeline per thread's loop; prefork workers, one.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, int, int], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int], loop: asyncio.AbstractEventLoop) -> AgentRunner | None:
        slot = (*key, id(loop))
        with self._lock:
            entry = self._items.get(slot)
            if entry is None or entry.loop() is not loop:  # id() reused by a new loop
                return None
            self._items.move_to_end(slot)
            return entry.pipeline

    def put(
        self, key: tuple[str, int], pipeline: AgentRunner, loop: asyncio.AbstractEventLoop
    ) -> None:
        slot = (*key, id(loop))
        with self._lock:
            # An older version of the agent will never be asked for again.
            for stale in [k for k in self._items if k[0] == key[0] and k[1] < key[1]]:
                del self._items[stale]
            self._items[slot] = _Entry(pipeline, weakref.ref(loop))
            self._items.move_to_end(slot)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def evict(self, agent_id: str) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] == agent_id]:
                del self._items[key]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


_cache = _PipelineCache(int(getattr(settings, "AGENTFLOW", {}).get("PIPELINE_CACHE_SIZE", 64)))
# Builds in progress, so concurrent first messages to an agent train its classifier once.
# Futures belong to one event loop: a caller on another loop builds on its own.
_building: dict[tuple[str, int], tuple[asyncio.AbstractEventLoop, asyncio.Future[AgentRunner]]] = {}
_building_lock = threading.Lock()


def _intent_model_keep_days() -> float | None:
    """INTENT_MODEL_CACHE_KEEP_DAYS as the builder takes it: 0 keeps every model (None)."""
    return cast(float, settings.AGENTFLOW["INTENT_MODEL_CACHE_KEEP_DAYS"]) or None


async def build_pipeline(agent: Agent) -> AgentRunner:
    """A new runner for `agent` (no cache); `AgentConfigError` if its config is bad.

    The support pipeline for ``support_agent``; a `BlueprintRunner` over the blueprint's
    kernel agent for the others.
    """
    config = validate_agent_config(agent.blueprint, agent.config)
    spec = BLUEPRINTS[agent.blueprint].spec
    if spec is not None:
        llm = blueprint_llm(str(agent.id), config)
        return spec.build(agent, config, llm=llm, runner_of=get_pipeline)
    agent_id = str(agent.id)
    builder = (
        AgentFrameworkBuilder()
        .with_config(kernel_config(agent_id, config))
        # Classifiers train in a child process into this cache (docs/configuration.md).
        .with_intent_model_cache(
            str(settings.AGENTFLOW.get("INTENT_MODEL_CACHE_DIR") or ""),
            keep_unused_days=_intent_model_keep_days(),
        )
        .with_embedder(get_embedder())
        # The operator's LLM_MODEL_PRICES; the config's own llm.prices wins over them.
        .with_costs(price_table=operator_price_table())
        .with_stores(
            sessions=DjangoSessionStore(agent_id),
            threads=DjangoThreadStore(agent_id),
            memory=DjangoMemoryStore(
                agent_id,
                episodic_limit=config["memory"]["episodic_limit"],
                short_term_ttl_seconds=config["session"]["ttl_seconds"],
            ),
            knowledge=DjangoKnowledgeStore(agent_id),
            golden_paths=DjangoGoldenPathStore(
                agent_id, tenant_wide=config["golden_paths_scope"] == "tenant"
            ),
            procedures=DjangoProceduralStore(agent_id),
        )
        # A conversation the database failed to keep fails the run, loudly (issue 13).
        .with_strict_persistence()
    )
    return await builder.build()


async def get_pipeline(agent: Agent) -> AgentRunner:
    """The kernel pipeline of `agent`, built once per (id, version) per worker process.

    A pipeline that talks to a network LLM is reused only on the event loop it was built
    on (its HTTP connection pool belongs to that loop): run a worker's async work on one
    long-lived loop, not `asyncio.run` per task, or such agents are rebuilt every time.
    """
    key = (str(agent.id), int(agent.version))
    loop = asyncio.get_running_loop()
    pipeline = _cache.get(key, loop)
    if pipeline is not None:
        return pipeline
    with _building_lock:
        pending = _building.get(key)
        if pending is None or pending[0] is not loop:
            pending = None
            future: asyncio.Future[AgentRunner] = loop.create_future()
            _building[key] = (loop, future)
    if pending is not None:
        try:
            return await asyncio.shield(pending[1])
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this caller was cancelled
            return await get_pipeline(agent)  # the builder was: build it here
    try:
        pipeline = await build_pipeline(agent)
    except asyncio.CancelledError:
        future.cancel()
        raise
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved here: nobody else may be waiting for it
        raise
    else:
        future.set_result(pipeline)
        _cache.put(key, pipeline, loop)
        return pipeline
    finally:
        with _building_lock:
            if _building.get(key) == (loop, future):
                del _building[key]


def evict_pipeline(agent_id: object) -> None:
    """Forget the cached pipelines of an agent (deleted, or changed without a version bump)."""
    _cache.evict(str(agent_id))


def clear_pipeline_cache() -> None:
    _cache.clear()
