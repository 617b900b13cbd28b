"""Turn DATABASE_URL / REDIS_URL into what Django, Celery and Channels expect.

Both embedded servers listen on unix sockets, so the parsers accept the
``?host=/socket/dir`` form of PostgreSQL URIs and ``unix://`` Redis URLs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


def database_config(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got scheme {parts.scheme!r}")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    host = query.pop("host", None) or unquote(parts.hostname or "")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "OPTIONS": query,
    }


def celery_redis_url(url: str) -> str:
    """Celery (kombu) spells a unix-socket Redis URL ``redis+socket://``."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        # Built by hand: urlunsplit drops the empty authority ("//") of unknown schemes.
        return f"redis+socket://{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return url


def redis_py_url(url: str) -> str:
    """redis-py spells it ``unix://``; accept kombu's spelling too."""
    parts = urlsplit(url)
    if parts.scheme == "redis+socket":
        return f"unix://{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return url
