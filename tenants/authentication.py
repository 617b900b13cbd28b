"""DRF authentication by tenant API key: ``Authorization: Bearer af_...``."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from governance.audit import Actor
from tenants.models import APIKey
from tenants.services import KeyRejected, authenticate_key


class TenantKeyUser(AnonymousUser):
    """The principal of a key-authenticated request: authenticated, but no Django user."""

    def __init__(self, key: APIKey) -> None:
        super().__init__()
        self.api_key = key

    @property
    def is_authenticated(self) -> bool:  # type: ignore[override]
        return True

    def __str__(self) -> str:
        return f"api_key:{self.api_key.prefix}"


class TenantInactive(exceptions.PermissionDenied):
    default_code = "tenant_inactive"


class APIKeyAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[Any, APIKey] | None:
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <key>'.")
        try:
            key = authenticate_key(header[1].decode("latin-1"))
        except KeyRejected as exc:
            if exc.error_type == "tenant_inactive":
                raise TenantInactive(f"API key rejected: {exc.reason}.") from exc
            raise exceptions.AuthenticationFailed(f"API key rejected: {exc.reason}.") from exc
        return TenantKeyUser(key), key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


def actor_for(request: Request) -> Actor:
    """Who the audit log names for a request: its API key (by prefix) or its user."""
    if isinstance(request.auth, APIKey):
        return Actor("api_key", request.auth.prefix)
    return Actor("user", str(request.user.pk))
