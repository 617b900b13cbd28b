"""Sign-ins, sign-outs and failed sign-ins are audited on the platform chain."""

from __future__ import annotations

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.test import Client

from governance.models import AuditEvent
from governance.verify import verify_chain

pytestmark = pytest.mark.django_db


def _platform_actions() -> list[tuple[str, str, dict[str, object]]]:
    return list(
        AuditEvent.unscoped.filter(tenant=None)
        .order_by("sequence")
        .values_list("action", "target_id", "changes")
    )


def test_a_login_and_a_logout_are_audited() -> None:
    user = get_user_model().objects.create_user(
        "ada", password="correct horse battery", is_staff=True
    )
    client = Client()
    signed_in = client.post(
        "/admin/login/", {"username": "ada", "password": "correct horse battery"}
    )
    assert signed_in.status_code == 302
    assert client.post("/admin/logout/").status_code == 200
    assert _platform_actions() == [
        ("user.logged_in", str(user.pk), {"ip": "127.0.0.1"}),
        ("user.logged_out", str(user.pk), {"ip": "127.0.0.1"}),
    ]
    assert verify_chain(None).ok


def test_failed_logins_name_the_account_never_the_typed_text() -> None:
    """What someone typed as a username may be their password: it is not recorded."""
    user = get_user_model().objects.create_user("grace", password="correct horse battery")
    assert authenticate(username="grace", password="wrong") is None
    assert authenticate(username="hunter2-typed-in-the-wrong-box", password="x") is None
    events = _platform_actions()
    assert events == [
        ("user.login_failed", str(user.pk), {"known_user": True}),
        ("user.login_failed", "", {"known_user": False}),
    ]
    stored = str(list(AuditEvent.unscoped.values()))
    assert "hunter2" not in stored
    assert "wrong" not in stored
