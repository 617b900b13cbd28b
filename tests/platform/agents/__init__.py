"""Tests of the agents app's kernel stores, knowledge ingestion and pipelines.

Helpers shared by the modules of this package (they are plain functions, not fixtures:
async tests call them inside their own tenant scope).
"""

from __future__ import annotations

from typing import Any

from agentflow.models import Agent
from tenants.models import Tenant


async def make_tenant(slug: str) -> Tenant:
    return await Tenant.objects.acreate(name=slug.title(), slug=slug)


async def make_agent(name: str = "support", config: dict[str, Any] | None = None) -> Agent:
    """An agent of the current tenant scope (the scoped save sets its tenant)."""
    return await Agent.objects.acreate(name=name, blueprint="support_agent", config=config or {})
