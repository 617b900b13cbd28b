"""Row look-ups of the API views."""

from __future__ import annotations

from typing import Any

from django.db.models import Manager, QuerySet
from django.http import Http404

from agentflow.core.rows import unique_or_none


def get_or_404(rows: Manager[Any] | QuerySet[Any], **lookup: Any) -> Any:
    """Missing and foreign look the same: the scoped manager cannot see foreign rows.

    ``lookup`` names a unique key (the views look rows up by pk).
    """
    obj = unique_or_none(rows.filter(**lookup))
    if obj is None:
        raise Http404
    return obj
