"""Celery entry points of the activity stream and webhooks (thin; ARCHITECTURE habit 5).

``learning.*`` run on the ``learning`` queue, ``webhooks.*`` on ``webhooks``. The module
sits in the run orchestration layer: the stream's consumer starts runs
(:mod:`learning.processing`), and a review's outcome is read from HITL and handed to
learning here. Modules below send these tasks by name (``agentflow.core.queueing``).
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import shared_task

from agentflow.core.conf import setting_int
from agentflow.core.retrying import RetryFromSettings
from agentflow.models import KnowledgeChunk
from agentflow.vector_search import ensure_tenant_indexes
from hitl.models import HITLRequest
from learning import activity, loop, playbooks, processing
from learning.models import GoldenPath
from learning.services import REPLY_TASK
from learning.webhooks import services as webhook_services
from tenants.scoping import scoped_to_tenant

log = structlog.get_logger(__name__)


@shared_task(
    name=activity.DRAIN_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    max_retries=0,
)
@scoped_to_tenant
def drain_activity_task(tenant_id: int) -> int:
    """Process the tenant's new stream entries (enqueued when events are published)."""
    return processing.drain(int(tenant_id))


@shared_task(name="learning.activity_sweep", acks_late=True, ignore_result=True, max_retries=0)
def activity_sweep_task() -> dict[str, int]:
    """Beat: replay unpublished or lost events, claim dead consumers' entries, drain."""
    return processing.sweep().as_dict()


class ReplyTask(RetryFromSettings):
    """Replies retry network errors, 429 and 5xx with backoff, then give up (logged)."""

    max_retries_setting = "WEBHOOK_REPLY_MAX_RETRIES"
    retry_seconds_setting = "WEBHOOK_REPLY_RETRY_SECONDS"
    gave_up_event = "webhooks.reply_gave_up"

    def log_fields(self, args: Any, kwargs: Any) -> dict[str, Any]:
        return {"run_id": args[1] if len(args) > 1 else kwargs.get("run_id")}


@shared_task(
    name=REPLY_TASK,
    base=ReplyTask,
    autoretry_for=(webhook_services.ReplyFailed,),
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
@scoped_to_tenant
def reply_task(tenant_id: int, run_id: str, message_id: str | None = None) -> str:
    """The run's answer, or (``message_id``) a person's reply in a taken-over session."""
    return webhook_services.send_reply(run_id, message_id)


@shared_task(
    name="learning.record_review_outcome",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(Exception,),
    retry_backoff=5,
    retry_backoff_max=600,
    max_retries=12,
)
@scoped_to_tenant
def record_review_outcome_task(tenant_id: int, request_id: str) -> str:
    """The golden path of an approved or edited review, enqueued when the decision commits
    (``agentflow.orchestration``); idempotent, so a redelivery or retry records it once."""
    # Inside the tenant's scope (@scoped_to_tenant): HITL's request, handed to learning.
    request = HITLRequest.objects.select_related("run__agent").filter(pk=request_id).first()
    return loop.learn_from_review(request)


@shared_task(name="learning.extract_playbooks", acks_late=True, ignore_result=True, max_retries=0)
def extract_playbooks_task() -> dict[str, int]:
    """Beat: re-extract the playbooks of agents whose runs settled since the last sweep."""
    return playbooks.sweep()


@shared_task(
    name="learning.ensure_vector_indexes", acks_late=True, ignore_result=True, max_retries=0
)
def ensure_vector_indexes_task() -> dict[str, list[str]]:
    """Beat: large tenants get their own partial HNSW indexes (see agentflow.vector_search).

    Built concurrently, so searches and writes go on meanwhile; a tenant already indexed
    is skipped, so an overlapping or repeated sweep builds nothing twice.
    """
    min_rows = setting_int("VECTOR_TENANT_INDEX_MIN_ROWS")
    built = {
        "golden_paths": ensure_tenant_indexes(GoldenPath, min_rows=min_rows),
        "knowledge_chunks": ensure_tenant_indexes(KnowledgeChunk, min_rows=min_rows),
    }
    if any(built.values()):
        log.info("vector_search.tenant_indexes_built", **built)
    return built
