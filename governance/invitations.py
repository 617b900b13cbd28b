"""Invitations: how a person joins a tenant (issue 13, item 6).

A tenant assigns roles only to its own members (``services.assign_role(members_only=True)``);
bringing in someone new is an offer that the person accepts, signed in as themselves,
with the token sent to them. So a tenant can never make another tenant's user (or anyone)
its member on its own, and inviting reveals nothing about who exists on the platform: the
answer is the same whether the username or address belongs to an account or not.

Each write is one transaction with its audit event (``invitation.created``,
``invitation.accepted`` with ``membership.granted``, ``invitation.revoked``). The e-mail
with the token is sent after commit through Django's mail backend; the token is never
stored (only its SHA-256) nor put on a queue.
"""

from __future__ import annotations

import hashlib
import secrets
import smtplib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import QuerySet

from governance.audit import Actor, append
from governance.models import Invitation
from tenants import services as tenant_services
from tenants.context import tenant_scope
from tenants.models import Membership, Role, Tenant

log = structlog.get_logger(__name__)

DEFAULT_DAYS = 7
MAX_DAYS = 30
PENDING, ACCEPTED, REVOKED, EXPIRED = "pending", "accepted", "revoked", "expired"


class InvitationError(ValueError):
    """An invitation request that cannot be honoured; ``code`` says which rule, for the API."""

    def __init__(self, message: str, code: str, field: str = "non_field_errors") -> None:
        super().__init__(message)
        self.code = code
        self.field = field


@dataclass(frozen=True)
class Issued:
    invitation: Invitation
    token: str  # shown once: in the creating answer and the e-mail, never stored


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def status_of(invitation: Invitation, now: datetime | None = None) -> str:
    if invitation.accepted_at is not None:
        return ACCEPTED
    if invitation.revoked_at is not None:
        return REVOKED
    if invitation.expires_at <= (now or datetime.now(UTC)):
        return EXPIRED
    return PENDING


def _actor_label(actor: Actor) -> str:
    return f"{actor.type}:{actor.id}"[:120]


def invite_member(
    *,
    actor: Actor,
    tenant: Tenant,
    role: str,
    email: str = "",
    username: str = "",
    days: int = DEFAULT_DAYS,
    accept_url: str = "",
) -> Issued:
    """Offer ``role`` in ``tenant`` to one person, named by ``email`` or ``username``.

    Nobody is looked up by the address or name given (no existence oracle); only a
    username that is already a member here is refused (``already_member``), which the
    tenant's own member list shows anyway. ``accept_url``: where the e-mail says to accept.
    """
    if role not in Role.values:
        raise InvitationError(f"unknown role {role!r}", "invalid", "role")
    if bool(email) == bool(username):
        raise InvitationError("name the person by email or by username", "invalid", "email")
    if not 1 <= days <= MAX_DAYS:
        raise InvitationError(f"expires_in_days: 1 to {MAX_DAYS}", "invalid", "expires_in_days")
    token = secrets.token_urlsafe(32)
    with transaction.atomic(), tenant_scope(tenant.pk):
        if username and Membership.objects.filter(user__username=username).exists():
            raise InvitationError(
                "this user is already a member; change their role instead",
                "already_member",
                "username",
            )
        invitation = Invitation.objects.create(
            email=email.strip(),
            username=username,
            role=role,
            token_hash=hash_token(token),
            invited_by=_actor_label(actor),
            expires_at=datetime.now(UTC) + timedelta(days=days),
        )
        append(
            tenant_id=tenant.pk,
            actor=actor,
            action="invitation.created",
            target_type="invitation",
            target_id=invitation.pk,
            changes={"role": role, "email": invitation.email, "username": username},
        )
        transaction.on_commit(lambda: _send(tenant, invitation, token, accept_url))
    return Issued(invitation, token)


def _recipient(invitation: Invitation) -> str:
    if invitation.email:
        return invitation.email
    user = get_user_model().objects.filter(username=invitation.username).first()
    return str(getattr(user, "email", "") or "")


def _send(tenant: Tenant, invitation: Invitation, token: str, link: str) -> None:
    """Mail the token to the person (best effort: the inviter also got it in the answer)."""
    recipient = _recipient(invitation)
    if not recipient:
        return
    lines = [
        f"You are invited to join {tenant.name} on AgentFlow as {invitation.role}.",
        "",
        "Sign in to AgentFlow as yourself, then accept it: POST",
        f"  {link or '/api/v1/governance/invitations/accept'}",
        "with the body",
        f'  {{"token": "{token}"}}',
        "",
        f"The invitation expires at {invitation.expires_at.isoformat()}.",
        "If you did not expect it, ignore this e-mail.",
    ]
    try:
        send_mail(
            f"[AgentFlow] Invitation to {tenant.name}",
            "\n".join(lines),
            settings.DEFAULT_FROM_EMAIL,
            [recipient],
            fail_silently=False,
        )
    except (smtplib.SMTPException, OSError) as exc:  # it stands: the inviter holds the token
        log.warning("invitation.email_failed", invitation_id=str(invitation.pk), error=str(exc))


def _addressed_to(invitation: Invitation, user: Any) -> bool:
    if invitation.username:
        return bool(user.get_username() == invitation.username)
    address = str(getattr(user, "email", "") or "")
    return bool(address) and address.casefold() == invitation.email.casefold()


def accept_invitation(*, user: Any, token: str) -> tuple[Invitation, Membership]:
    """``user`` (signed in) joins the invitation's tenant with its role, once.

    A token that is unknown or addressed to someone else is ``not_found`` alike, so a
    leaked token tells its holder nothing. Expired, revoked and used invitations say so
    (only to their addressee).
    """
    now = datetime.now(UTC)
    with transaction.atomic():
        invitation = (
            Invitation.unscoped.select_for_update(of=("self",))
            .select_related("tenant")
            .filter(token_hash=hash_token(token))
            .first()
        )
        if invitation is None or not _addressed_to(invitation, user):
            raise InvitationError("no such invitation", "not_found", "token")
        state = status_of(invitation, now)
        if state != PENDING:
            raise InvitationError(f"this invitation is {state}", f"invitation_{state}", "token")
        tenant = invitation.tenant
        actor = Actor("user", str(user.pk))
        with tenant_scope(tenant.pk):
            if Membership.objects.filter(user=user).exists():
                raise InvitationError(
                    "you are already a member of this tenant", "already_member", "token"
                )
            membership = tenant_services.add_member(
                actor=actor, tenant=tenant, user=user, role=invitation.role
            )
            Invitation.objects.filter(pk=invitation.pk).update(accepted_at=now, accepted_by=user)
            append(
                tenant_id=tenant.pk,
                actor=actor,
                action="invitation.accepted",
                target_type="invitation",
                target_id=invitation.pk,
                changes={"role": invitation.role, "user_id": user.pk},
            )
    invitation.accepted_at, invitation.accepted_by = now, user
    return invitation, membership


def revoke_invitation(*, actor: Actor, tenant: Tenant, invitation: Invitation) -> Invitation:
    """Withdraw a pending invitation (again: a no-op); an accepted one is ``invitation_accepted``
    (remove the member instead)."""
    now = datetime.now(UTC)
    with transaction.atomic():  # inside the tenant's scope: the API view (or dashboard) entered it
        locked = Invitation.objects.select_for_update().get(pk=invitation.pk)
        state = status_of(locked, now)
        if state == ACCEPTED:
            raise InvitationError(
                "this invitation was accepted; remove the member instead",
                "invitation_accepted",
            )
        if locked.revoked_at is None:
            locked.revoked_at = now
            locked.save(update_fields=["revoked_at"])
            append(
                tenant_id=tenant.pk,
                actor=actor,
                action="invitation.revoked",
                target_type="invitation",
                target_id=locked.pk,
                changes={"role": locked.role, "was": state},
            )
    return locked


def invitations(tenant: Tenant) -> QuerySet[Invitation]:
    """The tenant's invitations (called inside its scope, by the API view)."""
    return Invitation.objects.all()
