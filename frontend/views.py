"""Dashboard pages: sign-in, tenant selection, overview, runs and the review queue.

Views are thin: :mod:`frontend.access` decides who may see what, :mod:`frontend.queries`
reads, the apps' services write. A page that updates live also answers
``?fragment=<name>`` with the JSON its live JS re-applies after a reconnect.
"""

from __future__ import annotations

import json
from typing import Any, cast

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.templatetags.static import static
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from rest_framework.request import Request

from agentflow import orchestration
from agentflow.api.serializers import NO_RESULT, RunSerializer, StepSerializer
from agentflow.core.api.exceptions import ContractError, unprocessable
from agentflow.models import RunTransition, Step
from frontend import queries, trends
from frontend.access import DashboardView, resolve, select_tenant
from frontend.forms import DecisionForm, RunFilterForm
from hitl import configuration as hitl_configuration
from hitl import services as hitl_services
from hitl.api import reviewer_for
from hitl.models import HITLEvent, HITLRequest, Kind
from hitl.serializers import request_body


class LoginView(auth_views.LoginView):
    template_name = "frontend/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        # Signed in by now: reviewers start at their queue, everyone else at the overview.
        return resolve(self.request).landing_page

    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        # Reviewers are available by default once they sign in (issue 19): an explicit
        # call here, not a user_logged_in signal; a choice made since ("away") is kept.
        hitl_configuration.available_on_sign_in(user_id=form.get_user().pk)
        return response


class LogoutView(auth_views.LogoutView):
    next_page = "/login/"  # Django's LogoutView answers POST only: a link cannot sign out


def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask /favicon.ico of every site: point them at the static one."""
    return redirect(static("frontend/favicon.ico"), permanent=True)


def _safe_next(request: HttpRequest, default: str = "/") -> str:
    target = request.POST.get("next") or request.GET.get("next") or default
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


class TenantSelectView(LoginRequiredMixin, View):
    login_url = "/login/"
    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        raw = request.POST.get("tenant_id", "")
        if not raw.isdigit() or len(raw) > 12 or not select_tenant(request, int(raw)):
            messages.error(request, "You cannot select that tenant.")
        return redirect(_safe_next(request))


def _fragment(request: HttpRequest) -> str | None:
    return request.GET.get("fragment") or None


# --- overview -------------------------------------------------------------------------------


class OverviewView(DashboardView):
    page = "overview"

    def live_events(self) -> tuple[str, ...]:
        return ("run.updated", "hitl.*")

    def get(self, request: HttpRequest) -> HttpResponse:
        fragment = _fragment(request)
        if fragment == "trends":
            return self._trends_fragment(request)
        data = queries.overview(self.access.tenant, all_tenants=self.access.is_platform_admin)
        if fragment == "metrics":
            return JsonResponse(queries.OverviewSerializer(data).data)
        offline = None
        if self.access.tenant is not None and not self.access.is_platform_admin:
            offline = queries.tenant_is_offline(user=request.user, tenant_id=self.access.tenant.pk)
        context: dict[str, Any] = {"title": "Overview", "data": data, "offline": offline}
        status = 200
        if self.access.tenant is not None:  # trends are one tenant's (the current one)
            form, chart = self._trends(request)
            context.update(
                trend_form=form,
                trends=chart,
                trend_windows=list(trends.WINDOWS),
                agents=form.agent_choices,
            )
            status = 400 if form.errors else 200
        return self.render_page(request, "frontend/overview.html", context, status=status)

    def _trends(self, request: HttpRequest) -> tuple[trends.TrendFilterForm, dict[str, Any]]:
        """The trend filter (invalid fields fall back to their defaults) and its figures."""
        assert self.access.tenant is not None
        tenant_id = self.access.tenant.pk
        agents = queries.agents_by_id(user=request.user, tenant_id=tenant_id)
        form = trends.TrendFilterForm(request.GET, agents=agents)
        form.is_valid()
        cleaned = getattr(form, "cleaned_data", {})  # valid fields only
        window = trends.WINDOWS[cleaned.get("window") or trends.DEFAULT_WINDOW]
        scope = trends.Scope(request.user, tenant_id, cleaned.get("agent") or None)
        return form, trends.trends(scope, window, agents)

    def _trends_fragment(self, request: HttpRequest) -> HttpResponse:
        if self.access.tenant is None:
            return JsonResponse({"errors": {"tenant": ["Select a tenant first."]}}, status=400)
        form, chart = self._trends(request)
        if form.errors:
            return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
        return JsonResponse(chart)


# --- runs -------------------------------------------------------------------------------------


class RunListView(DashboardView):
    page = "runs"

    def live_events(self) -> tuple[str, ...]:
        return ("run.updated",)

    def get(self, request: HttpRequest) -> HttpResponse:
        form = RunFilterForm(request.GET or None)
        cleaned: dict[str, Any] = {}
        if form.is_bound:
            form.is_valid()
            cleaned = getattr(form, "cleaned_data", {})  # valid fields only
        filters = queries.RunFilters(
            status=cleaned.get("status") or None,
            agent=str(cleaned["agent"]) if cleaned.get("agent") else None,
            since=cleaned.get("since"),
        )
        tenant_id = self._tenant_id()
        rows = queries.run_rows(filters, user=request.user, tenant_id=tenant_id)
        offline = queries.offline_agents(user=request.user, tenant_id=tenant_id)
        for row in rows:
            row["offline"] = row["agent_id"] in offline
        if _fragment(request) == "rows":
            return JsonResponse({"rows": rows, "filters": filters.as_data()})
        return self.render_page(
            request,
            "frontend/runs.html",
            {
                "title": "Runs",
                "form": form,
                "rows": rows,
                "filters": filters.as_data(),
                "agents": queries.agents_by_id(user=request.user, tenant_id=tenant_id),
                "offline_agents": offline,
                "limit": queries.RUNS_LIMIT,
            },
            status=400 if form.is_bound and form.errors else 200,
        )

    def _tenant_id(self) -> int:
        assert self.access.tenant is not None  # DashboardView: tenant pages have one
        return self.access.tenant.pk


class RunDetailView(DashboardView):
    page = "runs"

    def live_events(self) -> tuple[str, ...]:
        return ("run.updated",)

    def get(self, request: HttpRequest, run_id: Any) -> HttpResponse:
        assert self.access.tenant is not None
        run = queries.run_detail(run_id, user=request.user, tenant_id=self.access.tenant.pk)
        if run is None:
            raise Http404
        if _fragment(request) == "run":
            return JsonResponse({"run": RunSerializer(run, context=NO_RESULT).data})
        result = run.result or {}
        reviews = list(HITLRequest.objects.filter(run=run).order_by("created_at"))
        reason = result.get("escalation_reason") or next(
            (r.escalation_reason for r in reviews if r.escalation_reason), ""
        )
        return self.render_page(
            request,
            "frontend/run_detail.html",
            {
                "title": f"Run {run.pk}",
                "run": run,
                "row": RunSerializer(run, context=NO_RESULT).data,
                "result": result,
                "steps": StepSerializer(
                    Step.objects.filter(run=run).order_by("index"), many=True
                ).data,
                "transitions": RunTransition.objects.filter(run=run).order_by("at", "id"),
                "sources": queries.run_sources(run),
                "offline": queries.is_offline(run.agent.config),
                "plan_path": queries.run_plan_path(run),
                "in_flight": run.status in queries.ACTIVE_RUN_STATUSES,
                "escalation_reason": reason,
                "reviews": reviews,
                "tool_calls": queries.run_tool_calls(run),
            },
        )


# --- review queue ------------------------------------------------------------------------------


class QueueView(DashboardView):
    page = "hitl"

    def live_events(self) -> tuple[str, ...]:
        return ("hitl.*",)

    def get(self, request: HttpRequest) -> HttpResponse:
        assert self.access.tenant is not None
        rows = queries.queue_rows(user=request.user, tenant_id=self.access.tenant.pk)
        if _fragment(request) == "rows":
            return JsonResponse({"rows": rows})
        return self.render_page(
            request,
            "frontend/hitl.html",
            {
                "title": "Review queue",
                "rows": rows,
                "agents": queries.agents_by_id(user=request.user, tenant_id=self.access.tenant.pk),
            },
        )


ACTIONS = ("claim", "unclaim", "approve", "edit", "reject")
DONE = {
    "claim": "Claimed: it is yours to decide.",
    "unclaim": "Given back to the queue.",
    "approve": "Approved: the answer went to the customer.",
    "edit": "Your edited answer went to the customer.",
    "reject": "Rejected.",
}
# An action request's decision is about a tool call, not an answer.
ACTION_DONE = {
    **DONE,
    "approve": "Approved: the tool call runs once, then the run continues.",
    "edit": "Approved with your arguments: the tool call runs once, then the run continues.",
    "reject": "Rejected: the tool call will not run.",
}


class RequestDetailView(DashboardView):
    page = "hitl"

    def live_events(self) -> tuple[str, ...]:
        return ("hitl.*",)

    def _item(self, request: HttpRequest, request_id: Any) -> HITLRequest:
        assert self.access.tenant is not None
        item = queries.review_request(
            request_id, user=request.user, tenant_id=self.access.tenant.pk
        )
        if item is None:
            raise Http404
        return item

    def get(self, request: HttpRequest, request_id: Any) -> HttpResponse:
        item = self._item(request, request_id)
        if _fragment(request) == "request":
            return JsonResponse({"request": request_body(item)})
        return self._render(request, item, DecisionForm())

    def post(self, request: HttpRequest, request_id: Any) -> HttpResponse:
        item = self._item(request, request_id)  # 404 before anything else: no oracle
        action = request.POST.get("action", "")
        form = DecisionForm(request.POST)
        if action not in ACTIONS:
            form.add_error(None, f"Unknown action {action!r}.")
            return self._render(request, item, form, status=422)
        self.require(self.access.can_review)
        if not form.is_valid():
            return self._render(request, item, form, status=422)
        try:
            self._act(request, item, action, form.cleaned_data)
        except ContractError as exc:
            _form_errors(form, exc)
            if not form.errors:
                form.add_error(None, str(exc.detail))
            return self._render(request, self._item(request, request_id), form, exc.status_code)
        done = ACTION_DONE if item.kind == Kind.ACTION else DONE
        messages.success(request, done[action])
        return redirect(f"/hitl/{item.pk}/")

    def _act(
        self, request: HttpRequest, item: HITLRequest, action: str, data: dict[str, Any]
    ) -> None:
        # The same Reviewer the HITL API builds: a session has no API key (auth is None).
        request.auth = None  # type: ignore[attr-defined]
        reviewer = reviewer_for(cast(Request, request))
        if action == "claim":
            hitl_services.claim(reviewer=reviewer, request=item)
        elif action == "unclaim":
            hitl_services.unclaim(reviewer=reviewer, request=item, reason=data["reason"])
        elif action == "approve":
            orchestration.decide_review(reviewer=reviewer, request=item, decision="approve")
        elif action == "edit" and item.kind == Kind.ACTION:
            orchestration.decide_review(
                reviewer=reviewer,
                request=item,
                decision="edit",
                arguments=_edited_arguments(data["arguments"]),
            )
        elif action == "edit":
            response = data["response"]
            if not response.strip():
                raise _field_error("response", "An edit needs the new answer.")
            orchestration.decide_review(
                reviewer=reviewer, request=item, decision="edit", response=response
            )
        else:
            reason = data["reason"].strip()
            if not reason:
                raise _field_error("reason", "A rejection needs a reason.")
            orchestration.decide_review(
                reviewer=reviewer, request=item, decision="reject", reason=reason
            )

    def _render(
        self, request: HttpRequest, item: HITLRequest, form: DecisionForm, status: int = 200
    ) -> HttpResponse:
        row = request_body(item)
        # Judged against the agent's own texts: a draft that is no answer offers no Approve.
        action = queries.proposed_action(item)
        blocked = hitl_services.approval_block(item) if item.is_open and action is None else None
        history = list(HITLEvent.objects.filter(request=item).order_by("at", "id"))
        return self.render_page(
            request,
            "frontend/hitl_detail.html",
            {
                "title": "Review request",
                "item": item,
                "row": row,
                "form": form,
                "history": history,
                "names": queries.actor_names(history),
                "sources": queries.readable_sources(row.get("sources"), str(item.run.agent_id)),
                "is_open": item.is_open,
                "mine": item.assignee_id == request.user.pk,
                "approve_block": blocked,
                "action": action,
            },
            status=status,
        )


def _field_error(name: str, reason: str) -> ContractError:
    return unprocessable(reason, {name: [reason]})


def _form_errors(form: DecisionForm, exc: ContractError) -> None:
    """A refusal's field errors on the form; a path inside the edited arguments
    (``arguments.amount``) goes on the arguments field, named."""
    for name, reasons in (exc.extra.get("errors") or {}).items():
        for reason in reasons:
            if name in form.fields:
                form.add_error(name, reason)
            elif name.startswith("arguments."):
                form.add_error("arguments", f"{name}: {reason}")
            else:
                form.add_error(None, reason)


def _edited_arguments(raw: str) -> dict[str, Any]:
    """The reviewer's JSON text as the call's arguments; the tool's input schema is checked
    by the decision itself (the same check the API's edit gets)."""
    if not raw.strip():
        raise _field_error("arguments", "An edit needs the call's arguments (a JSON object).")
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        reason = f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        raise _field_error("arguments", reason) from exc
    if not isinstance(parsed, dict):
        raise _field_error("arguments", "The arguments must be a JSON object: {...}.")
    return parsed
