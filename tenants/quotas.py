"""Tier defaults for every quota (SPEC 7); a tenant may override any of them."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from decimal import Decimal
from typing import Any


class Tier:
    FREE = "free"
    STARTER = "starter"
    PROFESSIONAL = "professional"
    ENTERPRISE = "enterprise"
    CHOICES = [
        (FREE, "Free"),
        (STARTER, "Starter"),
        (PROFESSIONAL, "Professional"),
        (ENTERPRISE, "Enterprise"),
    ]
    ALL = (FREE, STARTER, PROFESSIONAL, ENTERPRISE)


@dataclass(frozen=True)
class Quotas:
    """Limits of one tenant. ``None`` means unlimited."""

    requests_per_minute: int | None
    requests_per_minute_per_key: int | None
    concurrent_runs: int | None
    runs_per_month: int | None
    tokens_per_month: int | None
    dollars_per_month: Decimal | None
    knowledge_bytes: int | None
    agents: int | None

    def with_overrides(self, overrides: dict[str, Any]) -> Quotas:
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown quota(s): {', '.join(sorted(unknown))}")
        coerced: dict[str, Any] = {}
        for name, value in overrides.items():
            if value is None:
                coerced[name] = None
            elif name == "dollars_per_month":
                coerced[name] = Decimal(str(value))
            else:
                coerced[name] = int(value)
            if coerced[name] is not None and coerced[name] < 0:
                raise ValueError(f"quota {name} must not be negative")
        return replace(self, **coerced)


TIER_DEFAULTS: dict[str, Quotas] = {
    Tier.FREE: Quotas(60, 30, 2, 1_000, 500_000, Decimal("5"), 5_000_000, 2),
    Tier.STARTER: Quotas(300, 120, 10, 20_000, 10_000_000, Decimal("100"), 50_000_000, 10),
    Tier.PROFESSIONAL: Quotas(
        1_200, 600, 50, 200_000, 100_000_000, Decimal("1000"), 500_000_000, 50
    ),
    Tier.ENTERPRISE: Quotas(
        6_000, 3_000, 500, 5_000_000, 2_000_000_000, Decimal("20000"), 5_000_000_000, 500
    ),
}
