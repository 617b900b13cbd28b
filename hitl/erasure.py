"""HITL's GDPR eraser (registered from ``HitlConfig.ready``)."""

from __future__ import annotations

from django.db.models import Q

from hitl.models import HITLEvent, HITLRequest
from tenants.erasers import ERASED, ErasureSubject, Stage, register_eraser


def erase_review_copies(subject: ErasureSubject) -> dict[str, int]:
    """Review requests copy the question, the proposed answer and the reviewer's response;
    their history may quote them. Requests stay (SLA figures count them). Found through
    the runs, which still name the user at this stage."""
    user_id = subject.user_id
    requests = list(
        HITLRequest.objects.filter(
            Q(run__user_id=user_id) | Q(context__user_id=user_id)
        ).values_list("pk", "context")
    )
    for pk, context in requests:
        HITLRequest.objects.filter(pk=pk).update(
            question="",
            proposed_answer="",
            response="",
            reason="",
            escalation_reason="",
            context={**(context or {}), "user_id": ERASED},
        )
    history = HITLEvent.objects.filter(request_id__in=[pk for pk, _ in requests]).exclude(detail={})
    return {"review_requests": len(requests), "review_history": history.update(detail={})}


def register() -> None:
    register_eraser("hitl", Stage.COPIES, erase_review_copies)
