"""The webhook endpoints page (/webhooks/): endpoints, their recent deliveries, and for
those who administer the tenant, create / rotate / delete through the same service
functions as ``/api/v1/webhooks/endpoints`` (audited there).

Access follows the API's scopes: everyone with ``read`` sees the page (URLs, deliveries,
never a secret); ``admin`` (owners, platform admins) changes endpoints. A secret the
platform generates is shown once, in the answer to the create or rotate that made it.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect

from frontend.access import DashboardView
from frontend.forms import WebhookCreateForm, WebhookRotateForm
from learning.models import ActivityEvent, WebhookDelivery, WebhookEndpoint
from learning.webhooks import services

RECENT_DELIVERIES = 25


def _endpoint(raw_id: str) -> WebhookEndpoint:
    """The current tenant's endpoint (the scope hides every other tenant's): else 404."""
    try:
        key = uuid.UUID(raw_id)
    except ValueError as exc:  # not an id at all: as unknown as a foreign one
        raise Http404 from exc
    endpoint = WebhookEndpoint.objects.filter(pk=key).first()
    if endpoint is None:
        raise Http404
    return endpoint


def _verdict(event: ActivityEvent) -> str:
    """What became of an accepted delivery: processed, failed (why) or waiting."""
    if event.last_error:
        return f"accepted · processing failed: {event.last_error}"
    return "accepted · processed" if event.processed_at else "accepted · waiting"


def _deliveries() -> list[dict[str, Any]]:
    rows = WebhookDelivery.objects.select_related("endpoint", "event").order_by(
        "-last_attempt_at", "-pk"
    )[:RECENT_DELIVERIES]
    return [
        {
            "endpoint": row.endpoint,
            "delivery_id": row.delivery_id,
            "kind": row.event.kind,
            "received_at": row.received_at,
            "last_attempt_at": row.last_attempt_at,
            "attempts": row.attempts,
            "verdict": _verdict(row.event),
        }
        for row in rows
    ]


class WebhooksView(DashboardView):
    page = "webhooks"

    def get(self, request: HttpRequest) -> HttpResponse:
        return self._render(request)

    def post(self, request: HttpRequest) -> HttpResponse:
        self.require(self.access.can_administer)
        action = request.POST.get("action", "")
        actor = self.access.actor
        if action == "create":
            form = WebhookCreateForm(request.POST)
            if not form.is_valid():
                return self._render(request, create_form=form, status=422)
            assert self.access.tenant is not None
            issued = services.create_endpoint(
                actor=actor,
                tenant=self.access.tenant,
                provider=form.cleaned_data["provider"],
                name=form.cleaned_data["name"],
                secret=form.cleaned_data["secret"] or None,
            )
            return self._issued(request, issued, "created")
        if action in ("rotate", "delete"):
            endpoint = _endpoint(request.POST.get("endpoint_id", ""))
            if action == "delete":
                services.delete_endpoint(actor=actor, endpoint=endpoint)
                messages.success(request, f"Endpoint {endpoint.name or endpoint.pk} deleted.")
                return redirect("/webhooks/")
            rotate = WebhookRotateForm(request.POST)
            if not rotate.is_valid():
                return self._render(request, rotate_form=rotate, status=422)
            issued = services.rotate_endpoint(
                actor=actor,
                endpoint=endpoint,
                overlap_seconds=rotate.cleaned_data["overlap_seconds"],
            )
            return self._issued(request, issued, "rotated")
        messages.error(request, f"Unknown action {action!r}.")
        return self._render(request, status=422)

    def _issued(
        self, request: HttpRequest, issued: services.IssuedSecret, verb: str
    ) -> HttpResponse:
        if issued.secret is None:  # the person gave the provider's own secret
            messages.success(request, f"Endpoint {verb}.")
            return redirect("/webhooks/")
        # Rendered, not redirected: the generated secret exists only in this response.
        return self._render(request, issued=issued, verb=verb, status=201)

    def _render(
        self,
        request: HttpRequest,
        *,
        create_form: WebhookCreateForm | None = None,
        rotate_form: WebhookRotateForm | None = None,
        issued: services.IssuedSecret | None = None,
        verb: str = "",
        status: int = 200,
    ) -> HttpResponse:
        endpoints = [
            {
                "endpoint": endpoint,
                "url": request.build_absolute_uri(
                    f"/api/v1/webhooks/{endpoint.provider}/{endpoint.pk}"
                ),
            }
            for endpoint in WebhookEndpoint.objects.order_by("-created_at", "pk")
        ]
        return self.render_page(
            request,
            "frontend/webhooks.html",
            {
                "title": "Webhook endpoints",
                "endpoints": endpoints,
                "deliveries": _deliveries(),
                "create_form": create_form or WebhookCreateForm(),
                "rotate_form": rotate_form,
                "issued": issued,
                "verb": verb,
            },
            status=status,
        )
