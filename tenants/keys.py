"""API key format: ``af_<prefix>_<secret>``, looked up by prefix, compared by hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_PREFIX = "af_"


@dataclass(frozen=True)
class GeneratedKey:
    plaintext: str  # shown to the caller once, never stored
    prefix: str
    secret_hash: str


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> GeneratedKey:
    prefix = secrets.token_hex(6)  # 12 hex chars: the public, indexed part
    secret = secrets.token_urlsafe(32)  # 256 bits
    return GeneratedKey(f"{KEY_PREFIX}{prefix}_{secret}", prefix, hash_secret(secret))


def parse_key(plaintext: str) -> tuple[str, str] | None:
    """Split a presented key into (prefix, secret), or None when it is not one of ours."""
    if not plaintext.startswith(KEY_PREFIX):
        return None
    prefix, sep, secret = plaintext[len(KEY_PREFIX) :].partition("_")
    if not sep or len(prefix) != 12 or not secret or len(secret) > 128:
        return None
    return prefix, secret


def secret_matches(secret: str, expected_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), expected_hash)
