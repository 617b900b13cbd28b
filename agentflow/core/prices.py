"""What the platform prices an agent's LLM calls at (docs/local-llm.md, "Cost").

Three levels, the first that knows the model wins: the agent's own ``llm.prices`` (every call
of that agent), the operator's ``LLM_MODEL_PRICES`` (per model), the kernel's built-in
table (`agentflow.kernel.costs.DEFAULT_PRICES`, unknown models at its default). The run's
cost and its preflight both price through `agent_prices`, so budgets and
``agentflow costs`` follow.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

from agentflow.core.conf import optional_setting
from agentflow.kernel.costs import ModelPrice, PriceTable

__all__ = ["agent_prices", "operator_price_table"]


def operator_price_table() -> PriceTable:
    """The built-in prices with ``LLM_MODEL_PRICES`` over them (validated at start-up).

    One table per distinct setting, so an unknown model is logged once per process.
    """
    table = optional_setting("LLM_MODEL_PRICES") or {}
    return _table(json.dumps(table, sort_keys=True))


@functools.lru_cache(maxsize=8)
def _table(key: str) -> PriceTable:
    prices: dict[str, Any] = json.loads(key)
    return PriceTable(
        {
            model: ModelPrice(float(p["input_per_million"]), float(p["output_per_million"]))
            for model, p in prices.items()
        }
    )


def agent_prices(config: Mapping[str, Any]) -> PriceTable:
    """The prices of an agent's calls, from its normalised config: its ``llm.prices`` (when
    set) over the operator's table."""
    own = (config.get("llm") or {}).get("prices")
    table = operator_price_table()
    if not own:
        return table
    return table.overriding(
        ModelPrice(float(own["input_per_million"]), float(own["output_per_million"]))
    )
