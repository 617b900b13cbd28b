"""The current tenant of a request, task or WebSocket, as a ContextVar.

Set only by the scoping entry points in :mod:`tenants.scoping` (the API base
view, the task decorator, consumers); read by the scoped managers, which fail
closed when it is unset.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import structlog

_current_tenant_id: ContextVar[int | None] = ContextVar("tenant_id", default=None)


def current_tenant_id() -> int | None:
    return _current_tenant_id.get()


@contextmanager
def tenant_scope(tenant_id: int) -> Iterator[int]:
    """Everything inside sees only ``tenant_id``'s rows."""
    if not isinstance(tenant_id, int) or isinstance(tenant_id, bool):
        raise TypeError(f"tenant_id must be an int, got {type(tenant_id).__name__}")
    token = _current_tenant_id.set(tenant_id)
    structlog.contextvars.bind_contextvars(tenant_id=tenant_id)
    try:
        yield tenant_id
    finally:
        _current_tenant_id.reset(token)
        structlog.contextvars.unbind_contextvars("tenant_id")


@contextmanager
def dangerously_no_tenant_scope() -> Iterator[None]:
    """Leave any tenant scope: for platform-wide work (admin, sweeps). Say why where used."""
    token = _current_tenant_id.set(None)
    try:
        yield
    finally:
        _current_tenant_id.reset(token)
