"""Escalation policies, review settings (SLA) and reviewer availability (/policies/).

Every member reads them. Operators and owners (``write``, those who manage the queue)
create, change and delete policies and settings through :mod:`hitl.configuration`, and
set anyone's availability; a reviewer sets only their own. Writes are audited there.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect

from agentflow.core.conf import setting_dict
from agentflow.models import Agent
from frontend import queries
from frontend.access import DashboardView
from frontend.forms import add_service_errors
from frontend.forms_ops import AvailabilityForm, PolicyForm, ReviewSettingsForm
from hitl import configuration, services
from hitl.models import EscalationPolicy, Priority, ReviewSettings
from hitl.policy import REVIEW_ROLES, default_policy
from hitl.serializers import ReviewerSerializer
from tenants.models import Membership


def _policy(raw_id: Any) -> EscalationPolicy:
    raw = str(raw_id)
    if not raw.isdigit() or len(raw) > 12:  # not an id: as unknown as another tenant's
        raise Http404
    policy = EscalationPolicy.objects.filter(pk=int(raw)).first()
    if policy is None:
        raise Http404
    return policy


def _policy_initial(policy: EscalationPolicy) -> dict[str, Any]:
    initial = {name: getattr(policy, name) for name in configuration.POLICY_FIELDS}
    initial["intents"] = ", ".join(policy.intents)
    initial["extra_emails"] = ", ".join(policy.extra_emails)
    return initial


class _PolicyPage(DashboardView):
    page = "policies"

    def _tenant_id(self) -> int:
        assert self.access.tenant is not None  # DashboardView: tenant pages have one
        return self.access.tenant.pk

    def _agent_choices(self, request: HttpRequest) -> list[tuple[str, str]]:
        names = queries.agents_by_id(user=request.user, tenant_id=self._tenant_id())
        return sorted(names.items(), key=lambda item: item[1].lower())

    def _save_policy(self, form: PolicyForm, policy: EscalationPolicy | None) -> bool:
        if not form.is_valid():
            return False
        try:
            if policy is None:
                configuration.create_policy(
                    actor=self.access.actor, tenant_id=self._tenant_id(), **form.cleaned_data
                )
            else:
                configuration.update_policy(
                    actor=self.access.actor, policy=policy, **form.cleaned_data
                )
        except configuration.ConfigurationError as exc:
            add_service_errors(form, exc.fields)
            return False
        return True


class PoliciesView(_PolicyPage):
    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request)

    def post(self, request: HttpRequest) -> HttpResponse:
        action = request.POST.get("action", "")
        if action == "availability":
            return self._availability(request)
        self.require(self.access.can_manage)
        if action == "create_policy":
            form = PolicyForm(request.POST)
            if not self._save_policy(form, None):
                return self._render(request, policy_form=form, status=422)
            messages.success(request, f"Policy {form.cleaned_data['name']} created.")
        elif action in ("enable_policy", "disable_policy", "delete_policy"):
            policy = _policy(request.POST.get("policy_id", ""))
            if action == "delete_policy":
                configuration.delete_policy(actor=self.access.actor, policy=policy)
            else:
                enabled = action == "enable_policy"
                configuration.update_policy(actor=self.access.actor, policy=policy, enabled=enabled)
            messages.success(request, f"Policy {policy.name} {action.split('_')[0]}d.")
        elif action == "settings":
            return self._settings(request)
        elif action == "delete_settings":
            self._delete_settings(request.POST.get("agent_id", ""))
            messages.success(request, "The agent follows the tenant's settings again.")
        else:
            messages.error(request, f"Unknown action {action!r}.")
            return self._render(request, status=422)
        return redirect("/policies/")

    def _settings(self, request: HttpRequest) -> HttpResponse:
        form = ReviewSettingsForm(request.POST, agent_choices=self._agent_choices(request))
        if not form.is_valid():
            return self._render(request, settings_form=form, status=422)
        agent_id = form.cleaned_data["agent"]
        try:
            configuration.save_review_settings(
                actor=self.access.actor,
                tenant_id=self._tenant_id(),
                agent=Agent.objects.get(pk=agent_id) if agent_id else None,
                sla_minutes=form.sla_minutes(),
                handoff_message=form.cleaned_data["handoff_message"],
                on_reject=form.cleaned_data["on_reject"],
            )
        except configuration.ConfigurationError as exc:
            add_service_errors(form, exc.fields)
            return self._render(request, settings_form=form, status=422)
        messages.success(request, "Review settings saved.")
        return redirect("/policies/")

    def _delete_settings(self, raw_agent_id: str) -> None:
        visible = dict(self._agent_choices(self.request))
        row = (
            ReviewSettings.objects.filter(agent_id=raw_agent_id).first()
            if raw_agent_id in visible
            else None
        )
        if row is None:
            raise Http404
        configuration.delete_review_settings(actor=self.access.actor, settings=row)

    def _availability(self, request: HttpRequest) -> HttpResponse:
        self.require(self.access.can_review)
        form = AvailabilityForm(request.POST)
        if not form.is_valid():
            return self._render(request, availability_form=form, status=422)
        user_id = form.cleaned_data["user_id"]
        self.require(self.access.can_manage or user_id == request.user.pk)
        try:
            services.set_availability(
                actor=self.access.actor,
                tenant_id=self._tenant_id(),
                user_id=user_id,
                available=form.cleaned_data["available"],
                capacity=form.cleaned_data["capacity"],
            )
        except ValueError as exc:  # not a reviewer of this tenant: as unknown as a stranger
            if "capacity" in str(exc):
                form.add_error("capacity", str(exc))
                return self._render(request, availability_form=form, status=422)
            raise Http404 from exc
        messages.success(request, "Availability saved.")
        return redirect("/policies/")

    def _render(
        self,
        request: HttpRequest,
        *,
        policy_form: PolicyForm | None = None,
        settings_form: ReviewSettingsForm | None = None,
        availability_form: AvailabilityForm | None = None,
        status: int = 200,
    ) -> HttpResponse:
        choices = self._agent_choices(request)
        names = dict(choices)
        assert self.access.tenant is not None
        tenant = self.access.tenant
        rows = ReviewSettings.objects.order_by("agent_id")
        tenant_row = next((r for r in rows if r.agent_id is None), None)
        agent_rows = [r for r in rows if r.agent_id and str(r.agent_id) in names]
        reviewers = Membership.objects.filter(role__in=REVIEW_ROLES).select_related("user")
        return self.render_page(
            request,
            "frontend/policies.html",
            {
                "title": "Escalation policies and SLAs",
                "policies": list(EscalationPolicy.objects.order_by("position", "pk")),
                "default_policy": default_policy(),
                "policy_form": policy_form or PolicyForm(),
                "tier_minutes": setting_dict("HITL_SLA_MINUTES").get(tenant.tier, {}),
                "priorities": Priority.values,
                "tenant_settings": tenant_row,
                "agent_settings": [{"row": r, "agent": names[str(r.agent_id)]} for r in agent_rows],
                "settings_form": settings_form or _settings_form(tenant_row, choices),
                "reviewers": ReviewerSerializer(
                    reviewers.order_by("user__username", "pk"), many=True
                ).data,
                "availability_form": availability_form,
            },
            status=status,
        )


def _settings_form(row: ReviewSettings | None, choices: list[tuple[str, str]]) -> Any:
    initial: dict[str, Any] = {}
    if row is not None:
        initial = {f"sla_{p}": m for p, m in row.sla_minutes.items()}
        initial |= {"handoff_message": row.handoff_message, "on_reject": row.on_reject}
    return ReviewSettingsForm(initial=initial, agent_choices=choices)


class PolicyEditView(_PolicyPage):
    def get(self, request: HttpRequest, policy_id: int) -> HttpResponse:
        policy = _policy(policy_id)
        return self._render(request, policy, PolicyForm(initial=_policy_initial(policy)))

    def post(self, request: HttpRequest, policy_id: int) -> HttpResponse:
        self.require(self.access.can_manage)
        policy = _policy(policy_id)
        form = PolicyForm(request.POST)
        if not self._save_policy(form, policy):
            policy.refresh_from_db()
            return self._render(request, policy, form, status=422)
        messages.success(request, f"Policy {policy.name} saved.")
        return redirect("/policies/")

    def _render(
        self, request: HttpRequest, policy: EscalationPolicy, form: PolicyForm, status: int = 200
    ) -> HttpResponse:
        return self.render_page(
            request,
            "frontend/policy_edit.html",
            {"title": f"Policy {policy.name}", "policy": policy, "form": form},
            status=status,
        )
