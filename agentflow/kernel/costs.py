"""Token and dollar accounting, budgets and preflight estimates (SPEC 4.10).

* `PriceTable` turns a provider's token usage into dollars, per model.
* `CostTracker` sums calls per scope: ``run:<id>``, ``agent:<id>``, ``tenant:<id>``,
  ``day:<YYYY-MM-DD>`` (UTC), the per-day variants ``agent:<id>:day:<date>`` and
  ``tenant:<id>:day:<date>``, and ``total``.
* `BudgetGuard` refuses a call *before* it is made when the spent amount plus the estimate
  (plus what concurrent calls have reserved) would pass a hard limit, and flags the soft one.
* `BudgetedProvider` wires the three around any `LLMProvider`.
* `estimate_cost` / `estimate_usage` give the preflight estimate of a call or a plan.
"""

from __future__ import annotations

import math
import re
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import structlog

from agentflow.kernel.llm.base import (
    BudgetExceeded,
    ChatMessage,
    EmbeddingResponse,
    LLMProvider,
    LLMResponse,
    TokenUsage,
    ToolSpec,
)

__all__ = [
    "DEFAULT_COMPLETION_TOKENS",
    "Budget",
    "BudgetGuard",
    "BudgetedProvider",
    "CostRecord",
    "CostTotals",
    "CostTracker",
    "ModelPrice",
    "PriceTable",
    "estimate_cost",
    "estimate_tokens",
    "estimate_usage",
    "scope_keys",
]

log = structlog.get_logger(__name__)

# When a call sets no max_tokens, a preflight assumes an answer of this many tokens.
DEFAULT_COMPLETION_TOKENS = 512
# Chat formats wrap every message in a few tokens of role markup.
_TOKENS_PER_MESSAGE = 4


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """US dollars per one million input (prompt) and output (completion) tokens."""

    input_per_million: float
    output_per_million: float = 0.0

    def __post_init__(self) -> None:
        if self.input_per_million < 0 or self.output_per_million < 0:
            raise ValueError("prices cannot be negative")

    def cost(self, usage: TokenUsage) -> float:
        return (
            usage.prompt_tokens * self.input_per_million
            + usage.completion_tokens * self.output_per_million
        ) / 1_000_000


FREE = ModelPrice(0.0, 0.0)

# Public list prices (USD per 1M tokens) at the time of writing; override them from config
# because they change, and add self-hosted models (usually at 0).
DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "gpt-5": ModelPrice(1.25, 10.0),
    "gpt-5-mini": ModelPrice(0.25, 2.0),
    "gpt-5-nano": ModelPrice(0.05, 0.40),
    "gpt-4.1": ModelPrice(2.0, 8.0),
    "gpt-4.1-mini": ModelPrice(0.40, 1.60),
    "gpt-4.1-nano": ModelPrice(0.10, 0.40),
    "gpt-4o": ModelPrice(2.50, 10.0),
    "gpt-4o-mini": ModelPrice(0.15, 0.60),
    "gpt-4-turbo": ModelPrice(10.0, 30.0),
    "gpt-4": ModelPrice(30.0, 60.0),
    "gpt-3.5-turbo": ModelPrice(0.50, 1.50),
    "o1": ModelPrice(15.0, 60.0),
    "o1-mini": ModelPrice(1.10, 4.40),
    "o3": ModelPrice(2.0, 8.0),
    "o3-mini": ModelPrice(1.10, 4.40),
    "o4-mini": ModelPrice(1.10, 4.40),
    "text-embedding-3-small": ModelPrice(0.02),
    "text-embedding-3-large": ModelPrice(0.13),
    "text-embedding-ada-002": ModelPrice(0.10),
}

# Dated snapshots ("gpt-4o-2024-08-06", "gpt-4-0613"), "-latest" aliases and Ollama's
# ":latest" tag ("llama3.2:latest" is "llama3.2") cost what their family costs; anything else
# unknown is priced at the table's default.
_SNAPSHOT_SUFFIX = re.compile(r"(-(\d{4}-\d{2}-\d{2}|\d{4}|latest)|:latest)$")
_FREE_PREFIXES = ("offline", "template")


class PriceTable:
    """Dollar prices per model; offline models are free, unknown ones use ``default``.

    An unknown model is logged once (structlog warning) so a missing price is visible instead
    of silently costing nothing. The default is deliberately a mid-range paid price.
    ``override`` prices every model (an agent's own price, e.g. 0 for a self-hosted model)
    whatever the table says; `overriding` makes such a copy of a shared table.
    """

    def __init__(
        self,
        prices: Mapping[str, ModelPrice | tuple[float, float]] | None = None,
        *,
        default: ModelPrice | tuple[float, float] = ModelPrice(2.50, 10.0),
        include_defaults: bool = True,
        override: ModelPrice | tuple[float, float] | None = None,
    ) -> None:
        self._prices: dict[str, ModelPrice] = dict(DEFAULT_PRICES) if include_defaults else {}
        for model, price in (prices or {}).items():
            self.set(model, price)
        self.default = _as_price(default)
        self.override = None if override is None else _as_price(override)
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def overriding(self, price: ModelPrice | tuple[float, float]) -> PriceTable:
        """A copy of this table that prices every model at ``price``."""
        return PriceTable(
            self._prices, default=self.default, include_defaults=False, override=price
        )

    def set(self, model: str, price: ModelPrice | tuple[float, float]) -> None:
        self._prices[model] = _as_price(price)

    def known(self, model: str) -> bool:
        return self._lookup(model) is not None

    def price(self, model: str) -> ModelPrice:
        found = self._lookup(model)
        if found is not None:
            return found
        with self._lock:
            first_time = model not in self._warned
            self._warned.add(model)
        if first_time:
            log.warning(
                "llm.price_unknown",
                model=model,
                input_per_million=self.default.input_per_million,
                output_per_million=self.default.output_per_million,
            )
        return self.default

    def cost(self, model: str, usage: TokenUsage) -> float:
        return self.price(model).cost(usage)

    def _lookup(self, model: str) -> ModelPrice | None:
        free = model.startswith(_FREE_PREFIXES)
        if self.override is not None:
            # An agent's price is its model's: its offline fallback still costs nothing.
            return FREE if free else self.override
        if model in self._prices:
            return self._prices[model]
        if free:
            return FREE
        family = _SNAPSHOT_SUFFIX.sub("", model)
        return self._prices.get(family)


def _as_price(price: ModelPrice | tuple[float, float]) -> ModelPrice:
    return price if isinstance(price, ModelPrice) else ModelPrice(*price)


# ---------------------------------------------------------------------------- estimates


def estimate_tokens(text: str) -> int:
    """About four characters a token for English text (the usual rule for GPT tokenizers)."""
    return math.ceil(len(text) / 4) if text else 0


def estimate_usage(
    messages: Sequence[ChatMessage | str],
    max_tokens: int | None = None,
    *,
    tools: Sequence[ToolSpec] | None = None,
) -> TokenUsage:
    """Preflight usage: the prompt as sent, and the completion at its cap."""
    prompt = 0
    for message in messages:
        text = message if isinstance(message, str) else message.content
        prompt += estimate_tokens(text) + _TOKENS_PER_MESSAGE
    for tool in tools or ():
        prompt += estimate_tokens(f"{tool.name} {tool.description} {tool.parameters}")
    completion = DEFAULT_COMPLETION_TOKENS if max_tokens is None else max(max_tokens, 0)
    return TokenUsage(prompt_tokens=prompt, completion_tokens=completion)


def estimate_cost(
    model: str,
    messages: Sequence[ChatMessage | str],
    max_tokens: int | None = None,
    *,
    price_table: PriceTable | None = None,
    tools: Sequence[ToolSpec] | None = None,
) -> float:
    """Upper-bound-ish dollar estimate of one chat call, for budget checks before it runs.

    Sum it over the steps of a plan for the plan's preflight estimate.
    """
    table = price_table if price_table is not None else _DEFAULT_TABLE
    return table.cost(model, estimate_usage(messages, max_tokens, tools=tools))


_DEFAULT_TABLE = PriceTable()


# ----------------------------------------------------------------------------- tracking


def scope_keys(
    *,
    run_id: str | None = None,
    agent_id: str | None = None,
    tenant_id: str | None = None,
    day: date | None = None,
) -> list[str]:
    """Every scope a call counts against, in the order budgets are checked."""
    day_key = (day or datetime.now(UTC).date()).isoformat()
    keys = ["total", f"day:{day_key}"]
    if tenant_id is not None:
        keys += [f"tenant:{tenant_id}", f"tenant:{tenant_id}:day:{day_key}"]
    if agent_id is not None:
        keys += [f"agent:{agent_id}", f"agent:{agent_id}:day:{day_key}"]
    if run_id is not None:
        keys.append(f"run:{run_id}")
    return keys


@dataclass(frozen=True, slots=True)
class CostRecord:
    at: datetime
    model: str
    provider: str
    usage: TokenUsage
    cost_usd: float
    scopes: tuple[str, ...]


@dataclass(slots=True)
class CostTotals:
    calls: int = 0
    usage: TokenUsage = field(default_factory=TokenUsage)
    cost_usd: float = 0.0


class CostTracker:
    """Thread- and task-safe totals per scope, plus the most recent records for inspection.

    The lock is a plain `threading.Lock`: every critical section is a few dict updates with no
    ``await`` inside, so it is safe from both threads and coroutines.
    """

    def __init__(self, *, keep_records: int = 10_000) -> None:
        self._totals: dict[str, CostTotals] = {}
        self._records: deque[CostRecord] = deque(maxlen=keep_records)
        self._lock = threading.Lock()

    def record(
        self,
        *,
        model: str,
        usage: TokenUsage,
        cost_usd: float,
        provider: str = "",
        run_id: str | None = None,
        agent_id: str | None = None,
        tenant_id: str | None = None,
        at: datetime | None = None,
    ) -> CostRecord:
        when = at or datetime.now(UTC)
        keys = scope_keys(run_id=run_id, agent_id=agent_id, tenant_id=tenant_id, day=when.date())
        entry = CostRecord(when, model, provider, usage, cost_usd, tuple(keys))
        with self._lock:
            for key in keys:
                totals = self._totals.get(key)
                if totals is None:  # not setdefault: that builds a CostTotals every call
                    totals = self._totals[key] = CostTotals()
                totals.calls += 1
                totals.usage = totals.usage + usage
                totals.cost_usd += cost_usd
            self._records.append(entry)
        return entry

    def record_response(
        self,
        response: LLMResponse | EmbeddingResponse,
        *,
        run_id: str | None = None,
        agent_id: str | None = None,
        tenant_id: str | None = None,
    ) -> CostRecord:
        return self.record(
            model=response.model,
            usage=response.usage,
            cost_usd=response.cost_usd,
            provider=response.provider,
            run_id=run_id,
            agent_id=agent_id,
            tenant_id=tenant_id,
        )

    def totals(self, scope: str) -> CostTotals:
        with self._lock:
            found = self._totals.get(scope)
            return CostTotals(found.calls, found.usage, found.cost_usd) if found else CostTotals()

    def spent(self, scope: str) -> float:
        return self.totals(scope).cost_usd

    def tokens(self, scope: str) -> TokenUsage:
        return self.totals(scope).usage

    def snapshot(self) -> dict[str, CostTotals]:
        with self._lock:
            return {k: CostTotals(v.calls, v.usage, v.cost_usd) for k, v in self._totals.items()}

    def records(self) -> list[CostRecord]:
        with self._lock:
            return list(self._records)


# ------------------------------------------------------------------------------ budgets


@dataclass(frozen=True, slots=True)
class Budget:
    """Dollar limits of one scope: past ``soft_usd`` warn, past ``hard_usd`` refuse."""

    soft_usd: float | None = None
    hard_usd: float | None = None

    def __post_init__(self) -> None:
        for value in (self.soft_usd, self.hard_usd):
            if value is not None and (value < 0 or not math.isfinite(value)):
                raise ValueError("budget limits must be finite and non-negative")
        if (
            self.soft_usd is not None
            and self.hard_usd is not None
            and self.soft_usd > self.hard_usd
        ):
            raise ValueError("the soft budget cannot be above the hard budget")


class BudgetGuard:
    """Checks budgets against a `CostTracker` before calls are made.

    ``reserve`` also holds the estimate of an in-flight call against the budget until the call
    settles, so concurrent calls cannot all slip under the same hard limit.
    """

    def __init__(self, tracker: CostTracker, budgets: Mapping[str, Budget] | None = None) -> None:
        self.tracker = tracker
        self._budgets: dict[str, Budget] = dict(budgets or {})
        self._reserved: dict[str, float] = {}
        self._lock = threading.Lock()

    def set_budget(self, scope: str, budget: Budget) -> None:
        with self._lock:
            self._budgets[scope] = budget

    def budget(self, scope: str) -> Budget | None:
        return self._budgets.get(scope)

    def check(self, scope: str, estimate_usd: float) -> bool:
        """Raise `BudgetExceeded` past the hard limit; return True (and log) past the soft one."""
        with self._lock:
            return self._check_locked(scope, estimate_usd)

    def check_all(self, scopes: Sequence[str], estimate_usd: float) -> bool:
        """`check` every scope (all hard limits first); True when any soft limit is passed."""
        with self._lock:
            return self._check_all_locked(scopes, estimate_usd)

    @contextmanager
    def reserve(self, scopes: Sequence[str], estimate_usd: float) -> Iterator[bool]:
        """Check, then hold ``estimate_usd`` against every scope until the block exits.

        Record the actual cost in the tracker inside the block; the hold is released after.
        Yields the soft-warning flag.
        """
        with self._lock:
            soft = self._check_all_locked(scopes, estimate_usd)
            for scope in scopes:
                self._reserved[scope] = self._reserved.get(scope, 0.0) + estimate_usd
        try:
            yield soft
        finally:
            with self._lock:
                for scope in scopes:
                    left = self._reserved.get(scope, 0.0) - estimate_usd
                    if left > 1e-12:
                        self._reserved[scope] = left
                    else:
                        self._reserved.pop(scope, None)

    def _check_all_locked(self, scopes: Sequence[str], estimate_usd: float) -> bool:
        for scope in scopes:
            self._check_hard_locked(scope, estimate_usd)
        # Every hard limit held (under the same lock): only the soft ones are left to check.
        return any([self._check_soft_locked(scope, estimate_usd) for scope in scopes])

    def _committed(self, scope: str) -> float:
        return self.tracker.spent(scope) + self._reserved.get(scope, 0.0)

    def _check_hard_locked(self, scope: str, estimate_usd: float) -> None:
        budget = self._budgets.get(scope)
        if budget is None or budget.hard_usd is None:
            return
        committed = self._committed(scope)
        if committed + estimate_usd > budget.hard_usd:
            log.warning(
                "budget.hard_refusal",
                scope=scope,
                limit_usd=budget.hard_usd,
                spent_usd=committed,
                estimate_usd=estimate_usd,
            )
            raise BudgetExceeded(scope, budget.hard_usd, committed, estimate_usd)

    def _check_locked(self, scope: str, estimate_usd: float) -> bool:
        self._check_hard_locked(scope, estimate_usd)
        return self._check_soft_locked(scope, estimate_usd)

    def _check_soft_locked(self, scope: str, estimate_usd: float) -> bool:
        budget = self._budgets.get(scope)
        if budget is None or budget.soft_usd is None:
            return False
        committed = self._committed(scope)
        if committed + estimate_usd > budget.soft_usd:
            log.warning(
                "budget.soft_exceeded",
                scope=scope,
                limit_usd=budget.soft_usd,
                spent_usd=committed,
                estimate_usd=estimate_usd,
            )
            return True
        return False


class BudgetedProvider:
    """Any provider, with budgets checked before each call and its cost recorded after.

    The scopes of a call come from ``metadata`` keys ``run_id``, ``agent_id`` and
    ``tenant_id``. A refused call raises `BudgetExceeded` and never reaches the provider.
    Responses carry ``metadata["budget_warning"]`` when a soft limit was passed.
    """

    def __init__(
        self,
        provider: LLMProvider,
        guard: BudgetGuard,
        *,
        price_table: PriceTable | None = None,
        model: str | None = None,
    ) -> None:
        self.provider = provider
        self.guard = guard
        self.name = provider.name
        self.price_table = price_table or PriceTable()
        # The model a preflight prices a call at when the call names none.
        self.model = model or str(getattr(provider, "model", "unknown"))

    async def chat(
        self,
        messages: list[ChatMessage],
        *,
        model: str | None = None,
        tools: list[ToolSpec] | None = None,
        json_schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> LLMResponse:
        run_id, agent_id, tenant_id = _scope_ids(metadata)
        scopes = scope_keys(run_id=run_id, agent_id=agent_id, tenant_id=tenant_id)
        estimate = estimate_cost(
            model or self.model, messages, max_tokens, price_table=self.price_table, tools=tools
        )
        with self.guard.reserve(scopes, estimate) as soft_warning:
            response = await self.provider.chat(
                messages,
                model=model,
                tools=tools,
                json_schema=json_schema,
                temperature=temperature,
                max_tokens=max_tokens,
                metadata=metadata,
            )
            self.guard.tracker.record_response(
                response, run_id=run_id, agent_id=agent_id, tenant_id=tenant_id
            )
        if soft_warning:
            response.metadata["budget_warning"] = True
        return response

    async def embed(self, texts: list[str], *, model: str | None = None) -> EmbeddingResponse:
        # Embeddings are a few hundredths of a cent: they are recorded but not gated.
        response = await self.provider.embed(texts, model=model)
        self.guard.tracker.record_response(response)
        return response

    async def aclose(self) -> None:
        closer = getattr(self.provider, "aclose", None)
        if closer is not None:
            await closer()


def _scope_ids(metadata: Mapping[str, Any] | None) -> tuple[str | None, str | None, str | None]:
    meta = metadata or {}

    def pick(key: str) -> str | None:
        value = meta.get(key)
        return None if value is None else str(value)

    return pick("run_id"), pick("agent_id"), pick("tenant_id")
