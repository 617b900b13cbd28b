"""Assembly of an agent's LLM side: providers, the guarded chain, embedder, classifier.

Split from the builder so that each stays small; everything here raises `ConfigError`
naming the offending field, like the rest of the build.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agentflow.kernel.config import AgentFrameworkConfig, ConfigError, ConfigIssue
from agentflow.kernel.costs import (
    Budget,
    BudgetedProvider,
    BudgetGuard,
    CostTracker,
    ModelPrice,
    PriceTable,
)
from agentflow.kernel.guardrails import PIIRedactor
from agentflow.kernel.intents import IntentCategory, LLMIntentClassifier, OfflineIntentClassifier
from agentflow.kernel.intents_fit import KEEP_UNUSED_DAYS, cached_classifier
from agentflow.kernel.llm.base import LLMProvider
from agentflow.kernel.llm.embeddings import OfflineEmbedder, SentenceTransformerEmbedder
from agentflow.kernel.llm.offline import OfflineProvider
from agentflow.kernel.llm.resilience import FailoverProvider
from agentflow.kernel.metering import GuardedEmbedder, GuardedProvider
from agentflow.kernel.pipeline import IntentClassifier
from agentflow.kernel.vectors import Embedder

_LOCAL_EMBEDDERS = (OfflineEmbedder, SentenceTransformerEmbedder)


def config_issue(path: str, reason: str) -> ConfigError:
    return ConfigError([ConfigIssue(path, reason)], source="AgentFrameworkBuilder")


def agent_price_table(
    config: AgentFrameworkConfig, prices: PriceTable | None = None
) -> PriceTable | None:
    """``prices`` (the shared table; None: the defaults), overridden by the agent's
    ``llm.prices`` when it sets them: the agent's own price wins over any table."""
    own = config.llm.prices
    if own is None:
        return prices
    price = ModelPrice(own.input_per_million, own.output_per_million)
    return (prices if prices is not None else PriceTable()).overriding(price)


def resolve_providers(
    llm_client: Any, config: AgentFrameworkConfig, prices: PriceTable | None = None
) -> list[LLMProvider]:
    """The providers of ``llm_client``, or of the config; ``prices`` prices what the
    providers built here answer (an `LLMProvider` given ready-made keeps its own)."""
    if llm_client is None:
        return [provider_from_config(i, config, prices) for i in range(len(config.llm.providers))]
    clients = list(llm_client) if isinstance(llm_client, list | tuple) else [llm_client]
    if not clients:
        raise config_issue("llm_client", "an empty list of providers")
    providers: list[LLMProvider] = []
    for index, client in enumerate(clients):
        if isinstance(client, LLMProvider):
            providers.append(client)
        elif type(client).__module__.startswith("openai") and hasattr(client, "chat"):
            from agentflow.kernel.llm.openai_provider import OpenAIProvider

            model = next(
                (p.model for p in config.llm.providers if p.kind == "openai"), "gpt-4o-mini"
            )
            providers.append(OpenAIProvider(model, client=client, price_table=prices))
        else:
            raise config_issue(
                f"llm_client[{index}]",
                f"expected an LLMProvider or openai.AsyncOpenAI, got {type(client).__name__}",
            )
    return providers


def provider_from_config(
    index: int, config: AgentFrameworkConfig, prices: PriceTable | None = None
) -> LLMProvider:
    """Provider ``index`` of the config; its answers are priced with ``prices`` (None: the
    default table)."""
    spec = config.llm.providers[index]
    if spec.kind == "offline":
        return OfflineProvider()
    from agentflow.kernel.llm.openai_provider import OpenAIProvider

    try:
        return OpenAIProvider(
            spec.model,
            api_key=spec.api_key.get_secret_value() if spec.api_key else None,
            base_url=spec.base_url,
            timeout_seconds=spec.timeout_seconds,
            max_retries=spec.max_retries,
            price_table=prices,
        )
    except ValueError as exc:
        raise config_issue(f"llm.providers[{index}]", str(exc)) from exc


def guarded_chain(
    providers: list[LLMProvider],
    config: AgentFrameworkConfig,
    *,
    tracker: CostTracker | None = None,
    guard: BudgetGuard | None = None,
    prices: PriceTable | None = None,
) -> tuple[GuardedProvider, CostTracker | None]:
    """Failover (for more than one provider), budgets (when any), then the guarded door."""
    if len(providers) == 1:
        # A chain of one needs no failover: if it fails, the handler fails and the run
        # answers with the template and escalates, exactly as after a failover.
        chain: LLMProvider = providers[0]
    else:
        chain = FailoverProvider(providers, config.llm.template_answer)
    redactor = PIIRedactor() if config.guardrails.redact_pii else None
    has_budget = config.budget.soft_usd is not None or config.budget.hard_usd is not None
    if guard is None and tracker is None and not has_budget:
        # Nothing aggregates or limits costs: every reply still carries its own usage
        # and cost, and each call skips the tracker's bookkeeping (~20 us).
        # No budget scopes to tag either: calls carry no agent id.
        return GuardedProvider(chain, redactor=redactor), None
    if guard is None:
        guard = BudgetGuard(tracker if tracker is not None else CostTracker())
    if has_budget:
        guard.set_budget(
            f"agent:{config.name}", Budget(config.budget.soft_usd, config.budget.hard_usd)
        )
    budgeted = BudgetedProvider(chain, guard, price_table=prices)
    return GuardedProvider(budgeted, redactor=redactor, agent_id=config.name), guard.tracker


async def intent_classifier(
    categories: list[IntentCategory],
    config: AgentFrameworkConfig,
    llm: LLMProvider,
    providers: list[LLMProvider],
    *,
    model_cache: Path | None = None,
    model_cache_keep_days: float | None = KEEP_UNUSED_DAYS,
) -> IntentClassifier | None:
    if not categories:
        return None
    options: dict[str, Any] = {}
    if config.intents.oos_threshold is not None:
        options["oos_threshold"] = config.intents.oos_threshold
    if config.intents.novelty_keep is not None:
        options["novelty_keep"] = config.intents.novelty_keep
    try:
        # Training is CPU work (seconds for thousands of examples): keep the loop free.
        if model_cache is None:
            offline = await asyncio.to_thread(OfflineIntentClassifier, categories, **options)
        else:
            # Trained in a child process (scikit-learn never enters this one), then cached.
            options["keep_unused_days"] = model_cache_keep_days
            offline = await asyncio.to_thread(cached_classifier, categories, model_cache, **options)
    except ValueError as exc:
        raise config_issue("intents.categories", str(exc)) from exc
    members = [
        member
        for provider in providers
        for member in (provider.providers if isinstance(provider, FailoverProvider) else [provider])
    ]
    if all(isinstance(member, OfflineProvider) for member in members):
        return offline
    return LLMIntentClassifier(llm, categories, fallback=offline)


def guarded_embedder(embedder: Embedder | None, llm: GuardedProvider) -> Embedder:
    """The offline embedder by default; a remote one goes through redaction and metering."""
    chosen: Embedder = embedder if embedder is not None else OfflineEmbedder()
    if llm.redactor is not None and not isinstance(chosen, _LOCAL_EMBEDDERS):
        # Knowledge articles and messages embedded remotely leave the process too.
        return GuardedEmbedder(chosen, redact=llm.redact_text)
    return chosen
