"""Request-scoped context carried into logs, Celery tasks and audit events."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

import structlog

correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)

_VALID_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def accept_correlation_id(candidate: str | None) -> str:
    """Use the caller's id when it is safe to echo and log, else mint one."""
    if candidate and _VALID_CORRELATION_ID.match(candidate):
        return candidate
    return new_correlation_id()


def current_correlation_id() -> str | None:
    return correlation_id_var.get()


def bind_correlation_id(value: str) -> object:
    structlog.contextvars.bind_contextvars(correlation_id=value)
    return correlation_id_var.set(value)
