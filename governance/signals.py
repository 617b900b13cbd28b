"""Sign-ins and sign-outs go to the platform audit chain (they belong to no one tenant)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.http import HttpRequest

from governance.audit import Actor, append


def _client(request: HttpRequest | None) -> dict[str, Any]:
    if request is None:
        return {}
    return {"ip": request.META.get("REMOTE_ADDR", "")}


def _logged_in(sender: Any, request: HttpRequest | None, user: Any, **_: Any) -> None:
    append(
        tenant_id=None,
        actor=Actor("user", str(user.pk)),
        action="user.logged_in",
        target_type="user",
        target_id=user.pk,
        changes=_client(request),
    )


def _logged_out(sender: Any, request: HttpRequest | None, user: Any, **_: Any) -> None:
    if user is None:
        return  # nobody was signed in: nothing happened
    append(
        tenant_id=None,
        actor=Actor("user", str(user.pk)),
        action="user.logged_out",
        target_type="user",
        target_id=user.pk,
        changes=_client(request),
    )


def _login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **_: Any
) -> None:
    # What was typed as a username may be a password typed in the wrong box: the event names
    # an existing account, never the raw input.
    model = get_user_model()
    username = str(credentials.get(model.USERNAME_FIELD) or credentials.get("username") or "")
    user_id = (
        model._default_manager.filter(**{model.USERNAME_FIELD: username[:150]})
        .values_list("pk", flat=True)
        .first()
    )
    append(
        tenant_id=None,
        actor=Actor.system("auth"),
        action="user.login_failed",
        target_type="user",
        target_id=user_id if user_id is not None else "",
        changes={**_client(request), "known_user": user_id is not None},
    )


def connect() -> None:
    user_logged_in.connect(_logged_in, dispatch_uid="governance.audit.logged_in")
    user_logged_out.connect(_logged_out, dispatch_uid="governance.audit.logged_out")
    user_login_failed.connect(_login_failed, dispatch_uid="governance.audit.login_failed")
