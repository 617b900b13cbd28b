"""The current tenant of a request, task or WebSocket, as a ContextVar.

Set only by the tenant scoping entry points (API base view, task decorator,
consumers); read by the scoped managers, which fail closed when it is unset.
"""

from __future__ import annotations

from contextvars import ContextVar

_current_tenant_id: ContextVar[int | None] = ContextVar("tenant_id", default=None)


def current_tenant_id() -> int | None:
    return _current_tenant_id.get()
