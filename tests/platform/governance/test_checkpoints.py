"""Chain heads leave the database: to a directory, to an HTTP endpoint, on beat's schedule."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings

from governance.checkpoints import CheckpointExportFailed, export_checkpoints, read_checkpoints
from governance.models import AuditCheckpoint
from governance.tasks import audit_checkpoint
from tenants.models import Tenant
from tests.platform.governance.conftest import CHAIN_LENGTH


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], dict[str, Any]]]
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), json.loads(body)))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass  # quiet test output


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_Receiver]]]:
    handler = type("Receiver", (_Receiver,), {"received": []})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/checkpoints", handler
    finally:
        server.shutdown()
        server.server_close()


def test_heads_are_posted_with_the_bearer_token(
    chain: Tenant, receiver: tuple[str, type[_Receiver]], settings: Any
) -> None:
    url, handler = receiver
    settings.AGENTFLOW = {**settings.AGENTFLOW, "AUDIT_CHECKPOINT_TOKEN": "s3cret"}
    exported = export_checkpoints(directory=None, url=url)
    assert exported
    ((headers, body),) = handler.received
    assert headers["Authorization"] == "Bearer s3cret"
    posted = {c["tenant_id"]: c for c in body["checkpoints"]}
    assert posted[chain.pk]["sequence"] == CHAIN_LENGTH
    assert posted[chain.pk]["tenant"] == chain.slug
    assert AuditCheckpoint.objects.get(tenant=chain).sequence == CHAIN_LENGTH


def test_a_refused_post_records_nothing_so_the_next_run_retries(
    chain: Tenant, receiver: tuple[str, type[_Receiver]], tmp_path: Path
) -> None:
    url, handler = receiver
    handler.status = 503
    with pytest.raises(CheckpointExportFailed, match="503"):
        export_checkpoints(directory=tmp_path, url=url)
    assert not AuditCheckpoint.objects.exists()
    handler.status = 200
    assert export_checkpoints(directory=tmp_path, url=url)  # the same heads, again
    # The file got the heads twice (harmless: verification checks every line).
    assert len(read_checkpoints(chain.pk, tmp_path)) == 2


def test_only_http_urls_are_accepted(chain: Tenant) -> None:
    with pytest.raises(CheckpointExportFailed, match="http"):
        export_checkpoints(directory=None, url="file:///etc/passwd")


def test_the_beat_task_exports_to_the_configured_directory(
    chain: Tenant, tmp_path: Path, settings: Any
) -> None:
    settings.AGENTFLOW = {
        **settings.AGENTFLOW,
        "AUDIT_CHECKPOINT_PATH": str(tmp_path),
        "AUDIT_CHECKPOINT_URL": None,
    }
    assert audit_checkpoint() == 1  # the one tenant's chain (the platform chain is empty)
    assert audit_checkpoint() == 0  # nothing moved since
    assert [c.sequence for c in read_checkpoints(chain.pk)] == [CHAIN_LENGTH]


def test_beat_schedules_the_export_on_the_maintenance_queue() -> None:
    entry = django_settings.CELERY_BEAT_SCHEDULE["maintenance.audit_checkpoint"]
    assert entry["task"] == "maintenance.audit_checkpoint"
    assert entry["schedule"] == 300.0
    assert django_settings.CELERY_TASK_ROUTES["maintenance.*"] == {"queue": "maintenance"}


def test_an_unreadable_checkpoint_file_is_an_error_not_a_pass(
    chain: Tenant, tmp_path: Path
) -> None:
    (tmp_path / f"tenant-{chain.pk}.jsonl").write_text("not json\n")
    with pytest.raises(ValueError, match="not a checkpoint"):
        read_checkpoints(chain.pk, tmp_path)
