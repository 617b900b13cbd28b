"""Webhook signing secrets at rest: Fernet-encrypted, because HMAC checks need the plaintext.

The encryption key is derived from ``WEBHOOK_SECRET_KEY`` when set, else from Django's
``SECRET_KEY``. Decryption also tries keys derived from ``SECRET_KEY_FALLBACKS`` (and
from ``SECRET_KEY`` once a dedicated key is configured), so either key can be rotated
without re-entering every provider's secret: the next endpoint rotation re-encrypts
with the current key.
"""

from __future__ import annotations

import base64
import hashlib
import secrets as pysecrets
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from agentflow.core.conf import setting_str

_CONTEXT = b"agentflow.webhooks.secret-at-rest.v1:"
GENERATED_SECRET_BYTES = 32


class SecretUnreadable(RuntimeError):
    """A stored secret cannot be decrypted with any configured key (the key was changed)."""


def _fernet_key(material: str) -> bytes:
    return base64.urlsafe_b64encode(hashlib.sha256(_CONTEXT + material.encode()).digest())


@cache
def _cipher(primary: str, fallbacks: tuple[str, ...]) -> MultiFernet:
    keys = [primary, *(key for key in fallbacks if key and key != primary)]
    return MultiFernet([Fernet(_fernet_key(key)) for key in keys])


def cipher() -> MultiFernet:
    dedicated = setting_str("WEBHOOK_SECRET_KEY")
    primary = dedicated or settings.SECRET_KEY
    fallbacks = [*getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    if dedicated:
        fallbacks.append(settings.SECRET_KEY)
    return _cipher(primary, tuple(fallbacks))


def generate() -> str:
    """A new secret: 256 random bits, URL-safe text (what providers accept as a secret)."""
    return pysecrets.token_urlsafe(GENERATED_SECRET_BYTES)


def encrypt(plaintext: str) -> str:
    return cipher().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return cipher().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable(
            "webhook secret cannot be decrypted with the configured keys"
        ) from exc
