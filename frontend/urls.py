from __future__ import annotations

from django.urls import path
from django.views.generic import RedirectView

# The dashboard pages land here; until then the home page leads to the admin login.
urlpatterns = [path("", RedirectView.as_view(url="/admin/", permanent=False), name="home")]
