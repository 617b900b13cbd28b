"""The learning page: golden paths (live) and playbooks, with curation by role.

Reviewers, operators and owners take a golden path out of use or back; operators and
owners retire playbooks. Reads go through :mod:`frontend.queries`-style helpers below,
writes through :mod:`learning.golden_paths` and :mod:`learning.playbooks`.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect

from frontend.access import DashboardView
from governance.services import restrict_to_visible_agents
from learning import golden_paths, playbooks
from learning.models import GoldenPath, Playbook
from learning.serializers import GoldenPathSerializer, PlaybookSerializer

GOLDEN_PATHS_LIMIT = 100
PLAYBOOKS_LIMIT = 50
_SHOW = {"active": True, "inactive": False, "all": None}


def golden_path_rows(*, user: Any, tenant_id: int, active: bool | None) -> list[dict[str, Any]]:
    """The newest golden paths the user may see, as the API and the live events show them."""
    rows = restrict_to_visible_agents(GoldenPath.objects.defer("embedding"), user, tenant_id)
    if active is not None:
        rows = rows.filter(is_active=active)
    newest = rows.order_by("-updated_at", "-pk")[:GOLDEN_PATHS_LIMIT]
    return list(GoldenPathSerializer(newest, many=True).data)


def playbook_rows(*, user: Any, tenant_id: int) -> list[dict[str, Any]]:
    rows = restrict_to_visible_agents(Playbook.objects.all(), user, tenant_id)
    newest = rows.order_by("-created_at", "-pk")[:PLAYBOOKS_LIMIT]
    return list(PlaybookSerializer(newest, many=True).data)


class LearningView(DashboardView):
    page = "learning"

    def live_events(self) -> tuple[str, ...]:
        return ("learning.golden_path.*",)

    def _tenant_id(self) -> int:
        assert self.access.tenant is not None  # DashboardView: tenant pages have one
        return self.access.tenant.pk

    def get(self, request: HttpRequest) -> HttpResponse:
        show = _show(request.GET.get("show"))
        rows = golden_path_rows(user=request.user, tenant_id=self._tenant_id(), active=_SHOW[show])
        if request.GET.get("fragment") == "rows":
            return JsonResponse({"rows": rows, "show": show})
        return self.render_page(
            request,
            "frontend/learning.html",
            {
                "title": "Learning",
                "rows": rows,
                "show": show,
                "playbooks": playbook_rows(user=request.user, tenant_id=self._tenant_id()),
                "limit": GOLDEN_PATHS_LIMIT,
            },
        )

    def post(self, request: HttpRequest) -> HttpResponse:
        action = request.POST.get("action", "")
        target = request.POST.get("id", "")
        visible = restrict_to_visible_agents
        if action in ("deactivate", "activate"):
            self.require(self.access.can_review)
            path = visible(GoldenPath.objects.all(), request.user, self._tenant_id())
            found = _by_id(path, target)
            golden_paths.set_active(
                actor=self.access.actor, path=found, active=action == "activate"
            )
            messages.success(request, f"Golden path {action}d.")
        elif action == "retire":
            self.require(self.access.can_manage)
            found = _by_id(visible(Playbook.objects.all(), request.user, self._tenant_id()), target)
            playbooks.retire(actor=self.access.actor, playbook=found)
            messages.success(request, f"Playbook {found.name} retired.")
        else:
            messages.error(request, "Unknown action.")
        return redirect(f"/learning/?show={_show(request.POST.get('show'))}")


def _show(value: str | None) -> str:
    return value if value in _SHOW else "active"


def _by_id(queryset: Any, value: str) -> Any:
    try:
        key = uuid.UUID(value)
    except ValueError:
        raise Http404 from None
    found = queryset.filter(pk=key).first()
    if found is None:
        raise Http404
    return found
