"""The learning app's GDPR eraser (registered from ``LearningConfig.ready``).

One eraser for the whole app: the activity stream and graph, and what the loop learnt
(golden paths, feedback). It runs while the runs still name the user, inside the
erasure's transaction and the tenant's scope. Its report keys keep the names the
erasure's API body has always had (``learning.*`` and ``learning_loop.*``).
"""

from __future__ import annotations

from django.db.models import Q

from agentflow.models import Run
from learning.models import (
    ActivityEvent,
    EdgeKind,
    Feedback,
    GoldenPath,
    GraphEdge,
    GraphNode,
    NodeKind,
)
from tenants.erasers import ErasureSubject, Stage, register_eraser


def erase_end_user(subject: ErasureSubject) -> dict[str, int]:
    stream = _erase_stream_and_graph(subject.user_id)
    learnt = _erase_what_the_loop_learnt(subject.user_id)
    return {
        **{f"learning.{what}": rows for what, rows in stream.items()},
        **{f"learning_loop.{what}": rows for what, rows in learnt.items()},
    }


def _erase_stream_and_graph(user_id: str) -> dict[str, int]:
    """An end user's traces in the activity stream and the graph.

    The user is the customer node keyed by their id (runs from the API:
    ``api:user:<id>``; runs a rule started use the customer key itself as user id).
    Their customer and ticket nodes go (edges with them); the events that built them, and
    internal events naming them, keep only ``{"erased": true}`` (the rows stay: dedup and
    the stream's bookkeeping need them); the resolutions of their tickets lose their label
    (an answer may quote them).
    """
    keys = {user_id, f"api:user:{user_id}"}
    customers = GraphNode.objects.filter(kind=NodeKind.CUSTOMER, key__in=keys)
    customer_ids = list(customers.values_list("pk", flat=True))
    ticket_ids = list(
        GraphEdge.objects.filter(source_id__in=customer_ids).values_list("target_id", flat=True)
    )
    event_ids = set(
        GraphEdge.objects.filter(
            Q(source_id__in=[*customer_ids, *ticket_ids]) | Q(target_id__in=ticket_ids)
        )
        .exclude(event_id=None)
        .values_list("event_id", flat=True)
    )
    resolutions = GraphNode.objects.filter(
        kind=NodeKind.RESOLUTION,
        in_edges__source_id__in=ticket_ids,
        in_edges__kind=EdgeKind.RESOLVED_BY,
    )
    events = ActivityEvent.objects.filter(
        Q(pk__in=event_ids) | Q(payload__user_id=user_id) | Q(payload__customer_key__in=keys)
    )
    counts = {
        "activity_events": events.update(payload={"erased": True}, outcome={}),
        "resolutions": GraphNode.objects.filter(pk__in=resolutions.values("pk")).update(label=""),
    }
    counts["graph_nodes"] = (
        GraphNode.objects.filter(pk__in=[*customer_ids, *ticket_ids])
        .delete()[1]
        .get("learning.GraphNode", 0)
    )
    return counts


def _erase_what_the_loop_learnt(user_id: str) -> dict[str, int]:
    """What the loop learnt from an end user's own words goes.

    Golden paths whose question was theirs (the run they came from) and feedback on their
    runs (a comment may name them) are deleted; golden paths that only merged one of
    their runs keep their own question and answer.
    """
    runs = Run.objects.filter(user_id=user_id).values("pk")
    return {
        "feedback": Feedback.objects.filter(run__in=runs).delete()[0],
        "golden_paths": GoldenPath.objects.filter(source_run__in=runs).delete()[0],
    }


def register() -> None:
    register_eraser("learning", Stage.COPIES, erase_end_user)
