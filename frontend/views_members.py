"""The members page (/members/): who is in the tenant, with which role and agents; for
those who administer it, role changes, agent restrictions, removals and invitations
through the same service functions as ``/api/v1/governance/roles`` and ``/invitations``
(audited there).

Access follows the API's scopes: the member list is ``read`` (every member sees it);
changing roles and inviting is ``admin`` (owners, platform admins), and so is seeing the
invitations. An invitation's token is shown once, in the answer to the invite.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse

from frontend import queries
from frontend.access import DashboardView
from frontend.forms import InviteForm, RoleChangeForm, add_service_errors
from governance import invitations
from governance import services as governance
from governance.models import Invitation
from tenants.models import Role, Tenant


def _agent_choices(request: HttpRequest, tenant: Tenant) -> list[tuple[str, str]]:
    names = queries.agents_by_id(user=request.user, tenant_id=tenant.pk)
    return sorted(names.items(), key=lambda item: item[1].lower())


def _invitation(raw_id: str) -> Invitation:
    try:
        key = uuid.UUID(raw_id)
    except ValueError as exc:  # not an id: as unknown as another tenant's
        raise Http404 from exc
    invitation = Invitation.objects.filter(pk=key).first()
    if invitation is None:
        raise Http404
    return invitation


class MembersView(DashboardView):
    page = "members"

    def _tenant(self) -> Tenant:
        assert self.access.tenant is not None  # DashboardView: tenant pages have one
        return self.access.tenant

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request)

    def post(self, request: HttpRequest) -> HttpResponse:
        self.require(self.access.can_administer)
        action = request.POST.get("action", "")
        if action in ("role", "remove"):
            return self._role(request, remove=action == "remove")
        if action == "invite":
            return self._invite(request)
        if action == "revoke_invitation":
            invitation = _invitation(request.POST.get("invitation_id", ""))
            try:
                invitations.revoke_invitation(
                    actor=self.access.actor, tenant=self._tenant(), invitation=invitation
                )
            except invitations.InvitationError as exc:
                messages.error(request, str(exc))
                return self._render(request, status=409)
            messages.success(request, "Invitation withdrawn.")
            return redirect("/members/")
        messages.error(request, f"Unknown action {action!r}.")
        return self._render(request, status=422)

    def _role(self, request: HttpRequest, *, remove: bool) -> HttpResponse:
        tenant = self._tenant()
        data = request.POST.copy()
        if remove:
            data.setdefault("role", "viewer")  # unused: removal takes no role
        form = RoleChangeForm(data, agent_choices=_agent_choices(request, tenant))
        if not form.is_valid():
            return self._render(request, role_form=form, status=422)
        username = form.cleaned_data["username"]
        try:
            user = governance.member_by_username(tenant, username)
            if remove:
                governance.revoke_role(actor=self.access.actor, tenant=tenant, user=user)
            else:
                governance.assign_role(
                    actor=self.access.actor,
                    tenant=tenant,
                    user=user,
                    role=form.cleaned_data["role"],
                    agents=form.cleaned_data["agents"] or None,
                    members_only=True,
                )
        except governance.GovernanceError as exc:  # the last owner, not a member
            add_service_errors(form, {exc.field: [str(exc)]})
            status = 409 if isinstance(exc, governance.LastOwner) else 422
            return self._render(request, role_form=form, status=status)
        messages.success(request, f"{username} removed." if remove else f"{username} updated.")
        return redirect("/members/")

    def _invite(self, request: HttpRequest) -> HttpResponse:
        form = InviteForm(request.POST)
        if not form.is_valid():
            return self._render(request, invite_form=form, status=422)
        try:
            issued = invitations.invite_member(
                actor=self.access.actor,
                tenant=self._tenant(),
                role=form.cleaned_data["role"],
                email=form.cleaned_data["email"] or "",
                username=form.cleaned_data["username"] or "",
                days=form.cleaned_data["expires_in_days"],
                accept_url=request.build_absolute_uri(reverse("governance-invitation-accept")),
            )
        except invitations.InvitationError as exc:  # already a member
            add_service_errors(form, {exc.field: [str(exc)]})
            return self._render(request, invite_form=form, status=409)
        # Rendered, not redirected: the token exists only in this answer (and the e-mail).
        return self._render(request, issued=issued, status=201)

    def _render(
        self,
        request: HttpRequest,
        *,
        role_form: RoleChangeForm | None = None,
        invite_form: InviteForm | None = None,
        issued: invitations.Issued | None = None,
        status: int = 200,
    ) -> HttpResponse:
        tenant = self._tenant()
        names = queries.agents_by_id(user=request.user, tenant_id=tenant.pk)
        members = governance.member_views(tenant, governance.members(tenant).order_by("pk"))
        rows: list[dict[str, Any]] = [
            {"member": m, "agent_names": [names.get(a, a) for a in m.agents or []]} for m in members
        ]
        admin = self.access.can_administer
        pending = (
            list(invitations.invitations(tenant).order_by("-created_at")[:50]) if admin else []
        )
        return self.render_page(
            request,
            "frontend/members.html",
            {
                "title": "Members and roles",
                "rows": rows,
                "agent_choices": _agent_choices(request, tenant),
                "roles": Role.choices,
                "role_form": role_form,
                "invite_form": invite_form or InviteForm(),
                "invitations": [(i, invitations.status_of(i)) for i in pending],
                "issued": issued,
            },
            status=status,
        )
