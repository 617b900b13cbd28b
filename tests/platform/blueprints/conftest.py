"""Blueprint tests use the API personas: an owner tenant and an outsider tenant."""

from __future__ import annotations

from tests.platform.api.conftest import outsider, owner

__all__ = ["outsider", "owner"]
