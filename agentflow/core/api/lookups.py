"""Row look-ups of the API views."""

from __future__ import annotations

from typing import Any

from django.db.models import Manager, QuerySet
from django.http import Http404


def get_or_404(rows: Manager[Any] | QuerySet[Any], **lookup: Any) -> Any:
    """Missing and foreign look the same: the scoped manager cannot see foreign rows."""
    obj = rows.filter(**lookup).first()
    if obj is None:
        raise Http404
    return obj
