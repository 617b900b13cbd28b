"""Feedback on delivered answers (CSAT from a help desk, thumbs in a chat widget).

A score is normalised to [0, 1] (rating 1..5 → 0..1, thumbs down/up → 0/1). Feedback at
or above ``GOLDEN_PATH_MIN_FEEDBACK_SCORE`` on an answer the agent wrote itself teaches the
agent: it becomes (or merges into) a golden path with source ``feedback``. Feedback on an
answer that came from a golden path moves that golden path's score instead, up or down.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from agentflow import non_answers
from agentflow.core.api.exceptions import conflict, unprocessable
from agentflow.core.conf import setting_float
from agentflow.models import Message, Run
from governance.audit import Actor, append
from learning import golden_paths
from learning.loop import cited_golden_paths, trace_summary
from learning.models import Feedback, FeedbackKind, GoldenPath, GoldenPathSource

__all__ = ["normalised_score", "record_feedback"]

_BLEND = 0.2  # how far one feedback moves a golden path's score towards its own


def normalised_score(*, rating: int | None = None, thumbs: str | None = None) -> float:
    if rating is not None:
        return (rating - 1) / 4
    return 1.0 if thumbs == "up" else 0.0


def _learnable_answer(run: Run) -> str | None:
    """The answer the customer got from the agent or a reviewer, None if there was none."""
    result = run.result or {}
    decision = (result.get("review") or {}).get("decision")
    if result.get("escalated") and decision not in ("approve", "edit"):
        return None  # rejected or never decided: the customer got a hand-off, not an answer
    content = str(result.get("content") or "").strip()
    # A thumbs-up for "a person will follow up" (or a template answer: every provider
    # failed) thanks the promise; repeating it to the next customer would break it.
    if non_answers.check(content, agent=run.agent, result=result) is not None:
        return None
    return content


def record_feedback(
    *,
    actor: Actor,
    run: Run,
    message_id: Any = None,
    rating: int | None = None,
    thumbs: str | None = None,
    comment: str = "",
    source: str = "",
) -> Feedback:
    """Record feedback on a completed run (current tenant scope), and learn from it."""
    if (rating is None) == (thumbs is None):
        raise unprocessable("Send a rating or thumbs.", {"rating": ["Send exactly one of both."]})
    if run.status != "completed":
        raise conflict(
            f"Run is {run.status}: only a completed run's answer can be scored.",
            "run_not_completed",
            status=run.status,
        )
    message = None
    if message_id is not None:
        message = Message.objects.filter(pk=message_id, run=run, role="assistant").first()
        if message is None:
            raise unprocessable("Unknown message.", {"message_id": ["Not an answer of this run."]})
    score = normalised_score(rating=rating, thumbs=thumbs)
    cited = cited_golden_paths(run.result)
    with transaction.atomic():
        path = None
        if cited:
            path = GoldenPath.objects.select_for_update().filter(pk=cited[0]).first()
            if path is not None:
                path.score = round((1 - _BLEND) * path.score + _BLEND * score, 6)
                path.save(update_fields=["score"])
        elif score >= setting_float("GOLDEN_PATH_MIN_FEEDBACK_SCORE"):
            answer = _learnable_answer(run)
            if answer is not None:
                result = run.result or {}
                path = golden_paths.record_outcome(
                    actor=actor,
                    agent=run.agent,
                    question=run.input,
                    answer=answer,
                    source=GoldenPathSource.FEEDBACK,
                    score=score,
                    category=str(result.get("intent") or ""),
                    run=run,
                    trace=trace_summary(run),
                )
        feedback = Feedback.objects.create(
            tenant_id=run.tenant_id,
            run=run,
            message=message,
            kind=FeedbackKind.RATING if rating is not None else FeedbackKind.THUMBS,
            rating=rating,
            thumbs_up=None if thumbs is None else thumbs == "up",
            score=score,
            comment=comment,
            source=source,
            golden_path=path,
        )
        feedback.refresh_from_db(fields=["created_at"])
        append(
            tenant_id=run.tenant_id,
            actor=actor,
            action="learning.feedback.recorded",
            target_type="run",
            target_id=run.pk,
            changes={
                "feedback_id": str(feedback.pk),
                "score": round(score, 4),
                "golden_path_id": str(path.pk) if path else None,
            },
        )
    return feedback
