"""Dashboard pages that manage things: agents and knowledge, tenants and keys, the audit trail.

Writes go through the apps' services (which audit them); a refusal is shown on the form it
came from and changes nothing. Only owners, operators and platform admins manage agents
and keys; creating, suspending and activating tenants is for platform admins.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect

from agentflow import knowledge
from agentflow import services as agent_services
from agentflow.core.api.exceptions import ContractError
from agentflow.models import Agent
from agentflow.pipelines import BLUEPRINTS
from frontend import playground, queries
from frontend.access import MANAGERS, PLATFORM_ADMIN, DashboardView
from frontend.forms import (
    AgentCreateForm,
    AgentEditForm,
    AuditFilterForm,
    KeyCreateForm,
    KnowledgeUploadForm,
    PlaygroundForm,
    TenantCreateForm,
    add_service_errors,
)
from frontend.schema_forms import add_config_errors, config_form
from governance import checkpoints
from governance.audit import seal_chain
from governance.models import AuditEvent
from governance.verify import verify_chain_incrementally
from tenants import services as tenant_services
from tenants.context import tenant_scope
from tenants.models import APIKey, Tenant, TenantStatus
from tenants.roles import ROLES
from tenants.services import ALL_SCOPES, TenantError

AUDIT_PAGE_SIZE = 25


def _service_refusal(form: Any, exc: ContractError) -> None:
    fields = exc.extra.get("errors") if isinstance(exc.extra, dict) else None
    if fields:
        add_service_errors(form, fields)
    else:
        form.add_error(None, str(exc.detail))


# --- agents ---------------------------------------------------------------------------------


class AgentListView(DashboardView):
    page = "agents"

    def get(self, request: HttpRequest, form: AgentCreateForm | None = None) -> HttpResponse:
        assert self.access.tenant is not None
        return self.render_page(
            request,
            "frontend/agents.html",
            {
                "title": "Agents",
                "agents": queries.agent_rows(user=request.user, tenant_id=self.access.tenant.pk),
                "form": form or AgentCreateForm(initial={"blueprint": "support_agent"}),
                "blueprints": BLUEPRINTS.values(),
            },
            status=422 if form is not None else 200,
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        self.require(self.access.can_manage)
        assert self.access.tenant is not None
        form = AgentCreateForm(request.POST)
        if not form.is_valid():
            return self.get(request, form)
        try:
            agent = agent_services.create_agent(
                actor=self.access.actor,
                tenant=self.access.tenant,
                name=form.cleaned_data["name"],
                blueprint=form.cleaned_data["blueprint"],
                config=form.cleaned_data["config"],
            )
        except agent_services.AgentConfigInvalid as exc:
            add_service_errors(form, exc.fields)
            return self.get(request, form)
        except ContractError as exc:
            _service_refusal(form, exc)
            return self.get(request, form)
        messages.success(request, f"Agent {agent.name} created.")
        return redirect(f"/agents/{agent.pk}/")


class AgentNewView(DashboardView):
    """Create an agent of one blueprint with a form built from its config schema."""

    page = "agents"

    def _blueprint(self, name: str) -> Any:
        self.require(self.access.can_manage)
        found = BLUEPRINTS.get(name)
        if found is None:
            raise Http404
        return found

    def get(self, request: HttpRequest, blueprint: str, form: Any = None) -> HttpResponse:
        found = self._blueprint(blueprint)
        form_class = config_form(found.config_schema, found.default_config)
        return self.render_page(
            request,
            "frontend/agent_new.html",
            {"title": f"New {found.name}", "blueprint": found, "form": form or form_class()},
            status=422 if form is not None else 200,
        )

    def post(self, request: HttpRequest, blueprint: str) -> HttpResponse:
        found = self._blueprint(blueprint)
        assert self.access.tenant is not None
        form = config_form(found.config_schema, found.default_config)(request.POST)
        if not form.is_valid():
            return self.get(request, blueprint, form)
        try:
            agent = agent_services.create_agent(
                actor=self.access.actor,
                tenant=self.access.tenant,
                name=form.cleaned_data["name"],
                blueprint=found.name,
                config=form.config(),
            )
        except agent_services.AgentConfigInvalid as exc:
            add_config_errors(form, exc.fields)
            return self.get(request, blueprint, form)
        except ContractError as exc:
            _service_refusal(form, exc)
            return self.get(request, blueprint, form)
        messages.success(request, f"Agent {agent.name} created.")
        return redirect(f"/agents/{agent.pk}/")


class AgentDetailView(DashboardView):
    page = "agents"

    def live_events(self) -> tuple[str, ...]:
        return ("run.updated",)  # the playground follows a run that outlived the wait

    def _agent(self, request: HttpRequest, agent_id: Any) -> Agent:
        assert self.access.tenant is not None
        agent = queries.agent_detail(agent_id, user=request.user, tenant_id=self.access.tenant.pk)
        if agent is None:
            raise Http404
        return agent

    def get(self, request: HttpRequest, agent_id: Any) -> HttpResponse:
        return self._render(request, self._agent(request, agent_id))

    def post(self, request: HttpRequest, agent_id: Any) -> HttpResponse:
        agent = self._agent(request, agent_id)
        self.require(self.access.can_manage)
        if request.POST.get("form") == "upload":
            return self._upload(request, agent)
        if request.POST.get("form") == "playground":
            return self._try(request, agent)
        form = AgentEditForm(request.POST)
        if not form.is_valid():
            return self._render(request, agent, edit_form=form, status=422)
        try:
            agent_services.update_agent(
                actor=self.access.actor,
                agent=Agent.objects.get(pk=agent.pk),  # a fresh copy: a refusal leaves none
                name=form.cleaned_data["name"],
                config=form.cleaned_data["config"],
            )
        except agent_services.AgentConfigInvalid as exc:
            add_service_errors(form, exc.fields)
            return self._render(request, agent, edit_form=form, status=422)
        except ContractError as exc:
            _service_refusal(form, exc)
            return self._render(request, agent, edit_form=form, status=exc.status_code)
        messages.success(request, "Configuration saved.")
        return redirect(f"/agents/{agent.pk}/")

    def _upload(self, request: HttpRequest, agent: Agent) -> HttpResponse:
        form = KnowledgeUploadForm(request.POST, request.FILES)
        if not form.is_valid():
            return self._render(request, agent, upload_form=form, status=422)
        try:
            document = knowledge.ingest_document(
                agent=agent,
                title=form.cleaned_data["title"] or "",
                content_type=form.cleaned_data["content_type"],
                text=form.cleaned_data["text"],
            )
        except knowledge.KnowledgeError as exc:
            form.add_error(None, str(exc))
            return self._render(request, agent, upload_form=form, status=422)
        messages.success(request, f"Document {document.title} added to the knowledge base.")
        return redirect(f"/agents/{agent.pk}/")

    def _try(self, request: HttpRequest, agent: Agent) -> HttpResponse:
        """The playground: one message as the user's test user, answered on this page."""
        form = PlaygroundForm(request.POST)
        if not form.is_valid():
            return self._render(request, agent, playground_form=form, status=422)
        try:
            run = playground.send(
                actor=self.access.actor,
                agent=Agent.objects.select_related("tenant").get(pk=agent.pk),
                user=request.user,
                message=form.cleaned_data["message"],
            )
        except ContractError as exc:  # a quota or rate limit: said on the form, nothing runs
            _service_refusal(form, exc)
            return self._render(request, agent, playground_form=form, status=exc.status_code)
        return redirect(f"/agents/{agent.pk}/?run={run.pk}#playground")

    def _playground(self, request: HttpRequest, agent: Agent) -> dict[str, Any]:
        runs = playground.history(agent, request.user)
        wanted = request.GET.get("run", "")
        shown = next((r for r in runs if str(r.pk) == wanted), runs[0] if runs else None)
        return {
            "runs": runs,
            "shown": shown,
            "result": (shown.result or {}) if shown else {},
            "sources": queries.readable_sources(
                (shown.result or {}).get("sources") if shown else None, str(agent.pk)
            ),
            "plan_path": queries.run_plan_path(shown) if shown else [],
            "in_flight": shown is not None and shown.status in queries.ACTIVE_RUN_STATUSES,
            "user_id": playground.user_id(request.user),
        }

    def _render(
        self,
        request: HttpRequest,
        agent: Agent,
        *,
        edit_form: AgentEditForm | None = None,
        upload_form: KnowledgeUploadForm | None = None,
        playground_form: PlaygroundForm | None = None,
        status: int = 200,
    ) -> HttpResponse:
        blueprint = BLUEPRINTS.get(agent.blueprint)
        return self.render_page(
            request,
            "frontend/agent_detail.html",
            {
                "title": agent.name,
                "agent": agent,
                "blueprint": blueprint,
                "thresholds": queries.thresholds(agent.config),
                "documents": queries.documents(agent),
                "edit_form": edit_form
                or AgentEditForm(initial={"name": agent.name, "config": agent.config}),
                "upload_form": upload_form or KnowledgeUploadForm(),
                "playground_form": playground_form or PlaygroundForm(),
                "playground": self._playground(request, agent),
                "offline": queries.is_offline(agent.config),
            },
            status=status,
        )


# --- tenants and keys -------------------------------------------------------------------------


def grantable_scopes(role: str | None) -> list[str]:
    """Key scopes a role may hand out: never more than the role itself holds, so an
    operator cannot mint a tenant-administration key (owners and platform admins can)."""
    if role is None or role not in MANAGERS:
        return []
    return [scope for scope in ALL_SCOPES if scope in ROLES[role].scopes]


class TenantListView(DashboardView):
    page = "tenants"

    def _tenants(self) -> list[Tenant] | QuerySet[Tenant]:
        if self.access.is_platform_admin:
            return Tenant.objects.order_by("name")
        return [t for t in self.access.tenants if self.access.roles.get(t.pk) in MANAGERS]

    def get(self, request: HttpRequest, form: TenantCreateForm | None = None) -> HttpResponse:
        return self.render_page(
            request,
            "frontend/tenants.html",
            {
                "title": "Tenants",
                "tenants": self._tenants(),
                "form": form or TenantCreateForm(),
            },
            status=422 if form is not None else 200,
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        self.require(self.access.is_platform_admin)
        form = TenantCreateForm(request.POST)
        if not form.is_valid():
            return self.get(request, form)
        try:
            tenant = tenant_services.create_tenant(
                actor=self.access.actor,
                name=form.cleaned_data["name"],
                slug=form.cleaned_data["slug"] or None,
                tier=form.cleaned_data["tier"],
            )
        except TenantError as exc:
            form.add_error(None, str(exc))
            return self.get(request, form)
        messages.success(request, f"Tenant {tenant.name} created.")
        return redirect(f"/tenants/{tenant.pk}/")


class TenantDetailView(DashboardView):
    page = "tenants"

    def _tenant(self, tenant_id: int) -> tuple[Tenant, str]:
        """The tenant and the user's role in it; 404 unless the user manages it."""
        if self.access.is_platform_admin:
            tenant = Tenant.objects.filter(pk=tenant_id).first()
            if tenant is not None:
                return tenant, PLATFORM_ADMIN
            raise Http404
        role = self.access.roles.get(tenant_id)
        tenant = next((t for t in self.access.tenants if t.pk == tenant_id), None)
        if tenant is None or role not in MANAGERS:
            raise Http404
        return tenant, role

    def get(self, request: HttpRequest, tenant_id: int) -> HttpResponse:
        tenant, role = self._tenant(tenant_id)
        return self._render(request, tenant, role)

    def post(self, request: HttpRequest, tenant_id: int) -> HttpResponse:
        tenant, role = self._tenant(tenant_id)
        action = request.POST.get("action", "")
        actor = self.access.actor
        if action in ("suspend", "activate"):
            self.require(self.access.is_platform_admin)
            status = TenantStatus.SUSPENDED if action == "suspend" else TenantStatus.ACTIVE
            tenant_services.set_status(actor=actor, tenant=tenant, status=status)
            messages.success(request, f"Tenant {tenant.name} is now {status}.")
            return redirect(f"/tenants/{tenant.pk}/")
        allowed = grantable_scopes(role)
        if action == "create_key":
            form = KeyCreateForm(request.POST, allowed_scopes=allowed)
            if not form.is_valid():
                return self._render(request, tenant, role, key_form=form, status=422)
            issued = tenant_services.issue_key(
                actor=actor,
                tenant=tenant,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                created_by=request.user,  # type: ignore[arg-type]
            )
            # Rendered, not redirected: the plaintext exists only in this response.
            return self._render(request, tenant, role, new_key=issued, status=201)
        if action in ("rotate", "revoke"):
            key = self._key(tenant, request.POST.get("key_id", ""), allowed)
            if action == "revoke":
                tenant_services.revoke_key(actor=actor, key=key)
                messages.success(request, f"Key {key.prefix}… revoked.")
                return redirect(f"/tenants/{tenant.pk}/")
            try:
                issued = tenant_services.rotate_key(actor=actor, key=key)
            except TenantError as exc:
                messages.error(request, str(exc))
                return redirect(f"/tenants/{tenant.pk}/")
            return self._render(request, tenant, role, new_key=issued, status=201)
        messages.error(request, f"Unknown action {action!r}.")
        return self._render(request, tenant, role, status=422)

    def _key(self, tenant: Tenant, raw_id: str, allowed: list[str]) -> APIKey:
        if not raw_id.isdigit() or len(raw_id) > 18:
            raise Http404
        with tenant_scope(tenant.pk):
            key = APIKey.objects.filter(pk=int(raw_id)).first()
        if key is None:
            raise Http404
        self.require(set(key.scopes) <= set(allowed))
        return key

    def _render(
        self,
        request: HttpRequest,
        tenant: Tenant,
        role: str,
        *,
        key_form: KeyCreateForm | None = None,
        new_key: tenant_services.IssuedKey | None = None,
        status: int = 200,
    ) -> HttpResponse:
        allowed = grantable_scopes(role)
        with tenant_scope(tenant.pk):
            keys = list(APIKey.objects.order_by("-created_at", "-id"))
        metrics = queries.tenant_metrics(tenant)
        return self.render_page(
            request,
            "frontend/tenant_detail.html",
            {
                "title": tenant.name,
                "tenant": tenant,
                "keys": keys,
                "manageable": {k.pk for k in keys if set(k.scopes) <= set(allowed)},
                "key_form": key_form or KeyCreateForm(allowed_scopes=allowed),
                "new_key": new_key,
                "quotas": queries.quota_gauges(tenant, metrics),
                "metrics": metrics,
            },
            status=status,
        )


# --- audit trail ---------------------------------------------------------------------------------


def _audit_events(data: dict[str, Any]) -> QuerySet[AuditEvent]:
    queryset = AuditEvent.objects.all()
    action = data.get("action") or ""
    if action.endswith("*"):
        queryset = queryset.filter(action__startswith=action[:-1])
    elif action:
        queryset = queryset.filter(action=action)
    actor = data.get("actor") or ""
    if ":" in actor:
        actor_type, _, actor_id = actor.partition(":")
        queryset = queryset.filter(actor_type=actor_type, actor_id=actor_id)
    elif actor:
        queryset = queryset.filter(Q(actor_id=actor) | Q(actor_type=actor))
    target = data.get("target") or ""
    if target:
        queryset = queryset.filter(Q(target_id=target) | Q(target_type=target))
    if data.get("since"):
        queryset = queryset.filter(occurred_at__gte=data["since"])
    if data.get("until"):
        queryset = queryset.filter(occurred_at__lt=data["until"])
    return queryset.order_by("-sequence")


class AuditView(DashboardView):
    page = "audit"

    def get(self, request: HttpRequest) -> HttpResponse:
        assert self.access.tenant is not None
        tenant_id = self.access.tenant.pk
        form = AuditFilterForm(request.GET or None)
        data: dict[str, Any] = {}
        if form.is_bound:
            form.is_valid()
            data = getattr(form, "cleaned_data", {})
        seal_chain(tenant_id)  # the page shows every event with its place in the chain
        page = Paginator(_audit_events(data), AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
        try:
            exported = checkpoints.read_checkpoints(tenant_id)
            # Re-hashes only what this process has not walked yet (governance.verify).
            verification = verify_chain_incrementally(tenant_id, exported)
            chain = {"ok": verification.ok, **verification.as_json()}
        except ValueError:  # the exported checkpoints cannot be read: nothing is vouched for
            chain = {"ok": False, "reason": "checkpoints_unreadable", "first_bad": None}
        query = request.GET.copy()
        query.pop("page", None)
        names = queries.actor_names(page.object_list)
        return self.render_page(
            request,
            "frontend/audit.html",
            {
                "title": "Audit trail",
                "form": form,
                "page_obj": page,
                "names": names,
                "chain": chain,
                "query": query.urlencode(),
            },
            status=400 if form.is_bound and form.errors else 200,
        )
