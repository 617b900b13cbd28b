"""Event rules (/rules/, /rules/<id>/): list, create, edit, enable or disable, delete,
through the same service functions as ``/api/v1/activity/rules`` (audited there).

Access follows the API's scopes: every member reads the rules (``read``); operators and
owners change them (``write``). A member restricted to some agents sees, and picks, only
those agents' rules. A rule's reply URL may embed a token: only those who change rules see it.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect

from agentflow.models import Agent
from frontend import queries
from frontend.access import DashboardView
from frontend.forms import add_service_errors
from frontend.forms_ops import RuleForm
from governance.services import restrict_to_visible_agents
from learning import services
from learning.models import EventRule


def _rules(request: HttpRequest, tenant_id: int) -> QuerySet[EventRule]:
    rules = EventRule.objects.select_related("agent")
    return restrict_to_visible_agents(rules, request.user, tenant_id)


def _agent_choices(request: HttpRequest, tenant_id: int) -> list[tuple[str, str]]:
    names = queries.agents_by_id(user=request.user, tenant_id=tenant_id)
    return sorted(names.items(), key=lambda item: item[1].lower())


def _rule(request: HttpRequest, tenant_id: int, raw_id: Any) -> EventRule:
    try:
        key = uuid.UUID(str(raw_id))
    except ValueError as exc:  # not an id: as unknown as another tenant's
        raise Http404 from exc
    rule = _rules(request, tenant_id).filter(pk=key).first()
    if rule is None:
        raise Http404
    return rule


def _initial(rule: EventRule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "event_kind": rule.event_kind,
        "agent": str(rule.agent_id),
        "conditions": rule.conditions,
        "priority": rule.priority,
        "reply_url": rule.reply_url,
        "enabled": rule.enabled,
    }


def _fields(form: RuleForm) -> dict[str, Any]:
    data = dict(form.cleaned_data)
    # The choice holds only agents the user may see, all of the current tenant.
    data["agent"] = Agent.objects.get(pk=data["agent"])
    return data


class _RuleView(DashboardView):
    page = "rules"

    def _tenant_id(self) -> int:
        assert self.access.tenant is not None  # DashboardView: tenant pages have one
        return self.access.tenant.pk

    def _save(self, request: HttpRequest, form: RuleForm, rule: EventRule | None) -> bool:
        """Create or update through the service; a duplicate name goes back on the form."""
        if not form.is_valid():
            return False
        actor = self.access.actor
        try:
            if rule is None:
                services.create_rule(actor=actor, tenant_id=self._tenant_id(), **_fields(form))
            else:
                services.update_rule(actor=actor, rule=rule, **_fields(form))
        except services.DuplicateRuleName:
            add_service_errors(form, {"name": ["Another rule already has this name."]})
            return False
        return True


class RulesView(_RuleView):
    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request)

    def post(self, request: HttpRequest) -> HttpResponse:
        self.require(self.access.can_manage)
        action = request.POST.get("action", "")
        tenant_id = self._tenant_id()
        if action == "create":
            form = RuleForm(request.POST, agent_choices=_agent_choices(request, tenant_id))
            if not self._save(request, form, None):
                return self._render(request, form=form, status=422)
            messages.success(request, f"Rule {form.cleaned_data['name']} created.")
            return redirect("/rules/")
        if action in ("enable", "disable", "delete"):
            rule = _rule(request, tenant_id, request.POST.get("rule_id", ""))
            if action == "delete":
                services.delete_rule(actor=self.access.actor, rule=rule)
                messages.success(request, f"Rule {rule.name} deleted.")
            else:
                services.update_rule(actor=self.access.actor, rule=rule, enabled=action == "enable")
                messages.success(request, f"Rule {rule.name} {action}d.")
            return redirect("/rules/")
        messages.error(request, f"Unknown action {action!r}.")
        return self._render(request, status=422)

    def _render(
        self, request: HttpRequest, *, form: RuleForm | None = None, status: int = 200
    ) -> HttpResponse:
        tenant_id = self._tenant_id()
        choices = _agent_choices(request, tenant_id)
        return self.render_page(
            request,
            "frontend/rules.html",
            {
                "title": "Event rules",
                "rules": list(_rules(request, tenant_id).order_by("created_at", "pk")),
                "form": form or RuleForm(agent_choices=choices),
                "has_agents": bool(choices),
            },
            status=status,
        )


class RuleEditView(_RuleView):
    def get(self, request: HttpRequest, rule_id: Any) -> HttpResponse:
        rule = _rule(request, self._tenant_id(), rule_id)
        form = RuleForm(initial=_initial(rule), agent_choices=self._choices(request))
        return self._render(request, rule, form)

    def post(self, request: HttpRequest, rule_id: Any) -> HttpResponse:
        self.require(self.access.can_manage)
        rule = _rule(request, self._tenant_id(), rule_id)
        form = RuleForm(request.POST, agent_choices=self._choices(request))
        if not self._save(request, form, rule):
            rule.refresh_from_db()  # the page shows the rule as stored, the form as typed
            return self._render(request, rule, form, status=422)
        messages.success(request, f"Rule {rule.name} saved.")
        return redirect("/rules/")

    def _choices(self, request: HttpRequest) -> list[tuple[str, str]]:
        return _agent_choices(request, self._tenant_id())

    def _render(
        self, request: HttpRequest, rule: EventRule, form: RuleForm, status: int = 200
    ) -> HttpResponse:
        return self.render_page(
            request,
            "frontend/rule_edit.html",
            {"title": f"Rule {rule.name}", "rule": rule, "form": form},
            status=status,
        )
