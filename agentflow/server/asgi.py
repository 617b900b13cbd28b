"""ASGI entry point: Django (HTTP) and Channels (WebSockets) in one application."""

from __future__ import annotations

import os

import django

from agentflow.server.asgi_http import OneHopASGIHandler
from agentflow.server.env import ImproperlyConfiguredEnv
from agentflow.server.telemetry import configure_tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentflow.server.settings")
try:
    configure_tracing("web")  # a no-op unless OTEL_EXPORTER_OTLP_ENDPOINT is set
    django.setup(set_prefix=False)  # what get_asgi_application() does, with our handler
    django_asgi_app = OneHopASGIHandler()  # must exist before importing consumers
except ImproperlyConfiguredEnv as exc:
    # uvicorn would print the settings module's traceback: one line naming the variable.
    raise SystemExit(f"agentflow: configuration error: {exc}") from None

# After the Django app: the consumers' modules need the app registry.
from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator

from frontend.routing import websocket_urlpatterns

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
