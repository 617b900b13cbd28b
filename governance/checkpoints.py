"""Audit chain heads exported outside the database, so truncation and rewrites show.

A hash chain proves its own consistency, not its completeness: whoever can write to the
database can cut the tail off, or rewrite a chain and recompute every hash. Each
checkpoint (chain, sequence, head hash, time) is therefore written where the database's
users cannot reach: JSON lines in ``AUDIT_CHECKPOINT_PATH`` (one file per chain; mount it
from another host or a write-once bucket) and/or a POST to ``AUDIT_CHECKPOINT_URL``.
Verification reads them back from the directory (or a copy given to ``audit verify``).

Checkpoints go out every few minutes; between them, *anchors* (the same lines, to the
directory only) follow each moving chain head every ``AUDIT_ANCHOR_SECONDS``, so events
deleted from the tail after a few seconds are named by verify too.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction

from governance.audit import chain_filter, seal_pending
from governance.models import AuditCheckpoint

log = structlog.get_logger(__name__)

PLATFORM_FILE = "platform.jsonl"
_HEADS_SQL = """
SELECT t.id, t.slug, head.sequence, head.hash
FROM tenants_tenant t
CROSS JOIN LATERAL (
    SELECT sequence, hash FROM governance_auditevent e
    WHERE e.tenant_id = t.id AND e.sequence IS NOT NULL ORDER BY sequence DESC LIMIT 1
) head
UNION ALL
SELECT NULL, NULL, sequence, hash FROM (
    SELECT sequence, hash FROM governance_auditevent
    WHERE tenant_id IS NULL AND sequence IS NOT NULL ORDER BY sequence DESC LIMIT 1
) platform
"""


class CheckpointExportFailed(RuntimeError):
    """A destination refused the checkpoints; nothing was recorded as exported."""


@dataclass(frozen=True)
class Checkpoint:
    tenant_id: int | None
    sequence: int
    hash: str
    at: str  # ISO 8601, UTC
    tenant: str | None = None  # the slug, for people reading the file

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def chain_file(directory: Path, tenant_id: int | None) -> Path:
    return directory / (PLATFORM_FILE if tenant_id is None else f"tenant-{tenant_id}.jsonl")


def _setting(name: str) -> Any:
    return settings.AGENTFLOW.get(name)


def configured_directory() -> Path | None:
    path = _setting("AUDIT_CHECKPOINT_PATH")
    return Path(str(path)) if path else None


def current_heads() -> list[tuple[int | None, str | None, int, str]]:
    """(tenant_id, slug, sequence, hash) of every non-empty chain: one index probe each.

    Unsealed events are sealed first, so a head exported is the chain's newest event.
    """
    seal_pending()
    with connection.cursor() as cursor:
        cursor.execute(_HEADS_SQL)
        return [(row[0], row[1], int(row[2]), row[3]) for row in cursor.fetchall()]


def _write_files(directory: Path, checkpoints: list[Checkpoint]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for checkpoint in checkpoints:
        line = json.dumps(checkpoint.as_json(), sort_keys=True) + "\n"
        # Append-only and flushed to disk before the export counts as done.
        fd = os.open(
            chain_file(directory, checkpoint.tenant_id), os.O_WRONLY | os.O_APPEND | os.O_CREAT
        )
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


def _post(url: str, checkpoints: list[Checkpoint]) -> None:
    if urlsplit(url).scheme not in {"http", "https"}:
        raise CheckpointExportFailed(f"AUDIT_CHECKPOINT_URL must be http(s), not {url!r}")
    headers = {"Content-Type": "application/json"}
    token = _setting("AUDIT_CHECKPOINT_TOKEN")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = json.dumps({"checkpoints": [c.as_json() for c in checkpoints]}).encode()
    # The scheme is checked above: an operator-configured http(s) endpoint, never file:.
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    timeout = float(_setting("AUDIT_CHECKPOINT_TIMEOUT_SECONDS") or 10.0)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            status = response.status
    except OSError as exc:  # URLError, HTTPError and timeouts are all OSErrors
        raise CheckpointExportFailed(f"POST {url}: {exc}") from exc
    if not 200 <= status < 300:
        raise CheckpointExportFailed(f"POST {url}: HTTP {status}")


def export_checkpoints(
    *, directory: Path | None = None, url: str | None = None, force: bool = False
) -> list[Checkpoint]:
    """Export the head of every chain that moved since its last export (all with ``force``).

    Destinations default to the settings. The external copies are written first and the
    bookkeeping row after, so a failure at worst exports a head twice, never skips one.
    """
    directory = directory if directory is not None else configured_directory()
    url = url if url is not None else _setting("AUDIT_CHECKPOINT_URL")
    if directory is None and not url:
        return []
    exported: dict[int | None, int] = {
        tenant_id: sequence
        for tenant_id, sequence in AuditCheckpoint.objects.values_list("tenant_id", "sequence")
    }
    now = datetime.now(UTC)
    moved = [
        Checkpoint(tenant_id, sequence, head_hash, now.isoformat(), slug)
        for tenant_id, slug, sequence, head_hash in current_heads()
        if force or exported.get(tenant_id) != sequence
    ]
    if not moved:
        return []
    if directory is not None:
        _write_files(directory, moved)
    if url:
        _post(url, moved)
    with transaction.atomic():
        for checkpoint in moved:
            AuditCheckpoint.objects.update_or_create(
                **chain_filter(checkpoint.tenant_id),
                defaults={
                    "sequence": checkpoint.sequence,
                    "hash": checkpoint.hash,
                    "exported_at": now,
                },
            )
    log.info("audit.checkpoints_exported", chains=len(moved))
    return moved


# The last anchored sequence of every chain in a directory, shared by the worker processes.
# Losing it (a Redis restart) only writes each head once more: a repeated line is harmless.
_ANCHORED_TTL = 7 * 24 * 3600


def _anchored_key(directory: Path) -> str:
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    return f"governance:audit:anchored:{digest}"


def _chain_key(tenant_id: int | None) -> str:
    return "platform" if tenant_id is None else str(tenant_id)


def anchor_heads(*, directory: Path | None = None) -> list[Checkpoint]:
    """Write the head of every chain that moved since its last anchor to the directory.

    Cheap (one index probe per chain, one appended line per moved chain), so it runs
    every ``AUDIT_ANCHOR_SECONDS``; the periodic checkpoint adds the URL and bookkeeping.
    """
    directory = directory if directory is not None else configured_directory()
    if directory is None:
        return []
    key = _anchored_key(directory)
    anchored: dict[str, int] = cache.get(key) or {}
    now = datetime.now(UTC).isoformat()
    moved = [
        Checkpoint(tenant_id, sequence, head_hash, now, slug)
        for tenant_id, slug, sequence, head_hash in current_heads()
        if anchored.get(_chain_key(tenant_id)) != sequence
    ]
    if not moved:
        return []
    _write_files(directory, moved)
    # Re-read just before writing: a concurrent anchor's entries are kept (at worst, a
    # head it wrote is written again next time).
    latest: dict[str, int] = cache.get(key) or {}
    latest.update({_chain_key(c.tenant_id): c.sequence for c in moved})
    cache.set(key, latest, _ANCHORED_TTL)
    log.debug("audit.heads_anchored", chains=len(moved))
    return moved


def read_checkpoints(tenant_id: int | None, directory: Path | None = None) -> list[Checkpoint]:
    """The exported checkpoints of one chain, oldest first ([] when none were exported)."""
    directory = directory if directory is not None else configured_directory()
    if directory is None:
        return []
    path = chain_file(directory, tenant_id)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    return list(_parse(lines, tenant_id, path))


def _parse(lines: Iterable[str], tenant_id: int | None, path: Path) -> Iterable[Checkpoint]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            checkpoint = Checkpoint(
                tenant_id=data["tenant_id"],
                sequence=int(data["sequence"]),
                hash=str(data["hash"]),
                at=str(data["at"]),
                tenant=data.get("tenant"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a checkpoint ({exc})") from exc
        if checkpoint.tenant_id != tenant_id:
            raise ValueError(f"{path}:{number}: a checkpoint of chain {checkpoint.tenant_id}")
        yield checkpoint
