"""The audit page at scale: pages of 25 newest first, and a chain status that stays truthful
although the page re-hashes only the events it has not walked yet (governance.verify)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from governance.audit import Actor, append
from governance.models import AuditEvent
from tenants.models import Tenant
from tests.platform.api.conftest import Persona
from tests.platform.frontend.conftest import User_, member
from tests.platform.governance.conftest import as_attacker

SEQUENCES = re.compile(rb'<tr data-sequence="(\d+)">')


# Each test starts with no chain walk remembered by this process (`audit_walks`).
pytestmark = pytest.mark.usefixtures("forgotten_audit_walks")


def probes(tenant: Tenant, count: int, action: str = "probe.appended") -> None:
    for index in range(count):
        append(
            tenant_id=tenant.pk,
            actor=Actor.system("tests"),
            action=action,
            target_type="probe",
            target_id=index,
        )


def shown(page: Any) -> list[int]:
    return [int(s) for s in SEQUENCES.findall(page.content)]


def total(tenant: Tenant) -> int:
    return AuditEvent.unscoped.filter(tenant=tenant).count()


def test_pages_of_25_newest_first_keep_the_filter(acme: Persona, owner: User_) -> None:
    probes(acme.tenant, 30, action="probe.even")
    probes(acme.tenant, 30, action="probe.odd")
    count = total(acme.tenant)
    pages = -(-count // 25)
    first = owner.get("/audit/")
    assert shown(first) == list(range(count, count - 25, -1))
    assert f"page 1 of {pages} · {count} events".encode() in first.content
    last = owner.get("/audit/", page=str(pages))
    assert shown(last) == list(range(count - 25 * (pages - 1), 0, -1))
    assert shown(owner.get("/audit/", page="999")) == shown(last)  # past the end: the last
    assert shown(owner.get("/audit/", page="nope")) == shown(first)
    even = owner.get("/audit/", action="probe.even", page="2")
    assert even.status_code == 200
    assert b"page 2 of 2 \xc2\xb7 30 events" in even.content
    assert len(shown(even)) == 5
    assert b'href="?action=probe.even&page=1" rel="prev"' in even.content


def test_the_page_rehashes_only_new_events_and_still_finds_a_tampered_one(
    acme: Persona, owner: User_, hashed: list[int]
) -> None:
    probes(acme.tenant, 12)
    count = total(acme.tenant)
    first = owner.get("/audit/")
    assert b'data-testid="chain-status">valid<' in first.content
    assert hashed == list(range(1, count + 1))
    hashed.clear()
    assert b'data-testid="chain-status">valid<' in owner.get("/audit/").content
    assert hashed == []  # the walked prefix is vouched for by its digest
    probes(acme.tenant, 2)
    hashed.clear()
    grown = owner.get("/audit/")
    assert f"{count + 2} events, head #{count + 2}".encode() in grown.content
    assert hashed == [count + 1, count + 2]

    # Behind the append-only trigger's back, in the prefix the page has already walked.
    with as_attacker() as cursor:
        cursor.execute(
            "UPDATE governance_auditevent SET changes = '{\"forged\": true}'"
            " WHERE tenant_id = %s AND sequence = 3",
            [acme.tenant.pk],
        )
    for _ in range(2):  # and it stays broken
        broken = owner.get("/audit/")
        assert b'data-testid="chain-status">broken<' in broken.content
        assert b"hash_mismatch at event #3" in broken.content


def test_an_exported_head_that_disagrees_shows_broken(
    acme: Persona, owner: User_, tmp_path: Path, settings: Any
) -> None:
    probes(acme.tenant, 5)
    settings.AGENTFLOW = {**settings.AGENTFLOW, "AUDIT_CHECKPOINT_PATH": str(tmp_path)}
    assert b'data-testid="chain-status">valid<' in owner.get("/audit/").content
    line = f'{{"tenant_id": {acme.tenant.pk}, "sequence": 4, "hash": "{"0" * 64}", "at": "x"}}'
    (tmp_path / f"tenant-{acme.tenant.pk}.jsonl").write_text(line + "\n")
    broken = owner.get("/audit/")
    assert b'data-testid="chain-status">broken<' in broken.content
    assert b"checkpoint_mismatch at event #1" in broken.content
    (tmp_path / f"tenant-{acme.tenant.pk}.jsonl").write_text("not json\n")
    unreadable = owner.get("/audit/")
    assert b"checkpoints_unreadable" in unreadable.content


def test_each_tenant_sees_its_own_events_and_chain(
    acme: Persona, globex: Persona, owner: User_
) -> None:
    probes(acme.tenant, 3, action="probe.acme")
    probes(globex.tenant, 3, action="probe.globex")
    rival = member(globex.tenant, "gloria", "owner")
    for user in (owner, rival):
        assert b'data-testid="chain-status">valid<' in user.get("/audit/").content
    with as_attacker() as cursor:
        cursor.execute(
            "UPDATE governance_auditevent SET action = 'forged' WHERE tenant_id = %s",
            [globex.tenant.pk],
        )
    mine = owner.get("/audit/")
    assert b'data-testid="chain-status">valid<' in mine.content
    assert b"probe.globex" not in mine.content
    assert b"forged" not in mine.content
    assert f"{total(acme.tenant)} events".encode() in mine.content
    theirs = rival.get("/audit/")
    assert b'data-testid="chain-status">broken<' in theirs.content
    assert b"probe.acme" not in theirs.content
