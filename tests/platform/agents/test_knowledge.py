"""Knowledge ingestion (chunking, validation, quota) and per-agent vector search."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from django.db import connection, transaction
from django.db.models import Value
from django.test.utils import CaptureQueriesContext
from pgvector.django import CosineDistance

from agentflow import vector_search
from agentflow.kernel.llm.embeddings import OfflineEmbedder
from agentflow.kernel.stores import KnowledgeDocument as KernelDocument
from agentflow.knowledge import (
    CHUNK_CHARS,
    KnowledgeError,
    KnowledgeQuotaExceeded,
    KnowledgeTooLarge,
    UnsupportedContentType,
    chunk_text,
    delete_document,
    ingest_document,
    search_chunks,
    search_knowledge,
)
from agentflow.models import Agent, KnowledgeChunk, KnowledgeDocument
from agentflow.stores import DjangoKnowledgeStore
from tenants.context import tenant_scope
from tenants.models import Tenant
from tenants.scoping import TenantScopeMissing

ACCOUNT_ARTICLE = """# Account help

Everything about getting into your account.

## Reset your password

Open the sign-in page and click **Forgot password**. We email you a reset link that stays
valid for 30 minutes. If the email does not arrive, check your spam folder.

## Two-factor authentication

Enable two-factor authentication under Settings > Security. You need an authenticator app.

```text
# this line is code, not a heading
otpauth://totp/AgentFlow
```
"""

BILLING_ARTICLE = """# Billing

## Refunds

Refunds are issued within 14 days to the original payment method. Ask support with your
invoice number.

## Invoices

Download invoices as PDF from the Billing page.
"""

EMBEDDER = OfflineEmbedder()  # the default of get_embedder()
LONG_TEXT = "\n\n".join(
    " ".join(
        f"Paragraph {p} sentence {s} describes step {s} of configuring the webhook signature."
        for s in range(9)
    )
    for p in range(6)
)


def new_agent(tenant: Tenant, name: str = "support") -> Agent:
    with tenant_scope(tenant.id):
        return Agent.objects.create(name=name, blueprint="support_agent", config={})


def ingest(
    agent: Agent, title: str, text: str, content_type: str = "text/markdown"
) -> KnowledgeDocument:
    with tenant_scope(agent.tenant_id):
        return ingest_document(agent=agent, title=title, content_type=content_type, text=text)


def search(agent: Agent, query: str, limit: int = 3, **options: int) -> list[tuple[str, str]]:
    """(document title, chunk text) of the hits, best first, inside the agent's tenant."""
    with tenant_scope(agent.tenant_id):
        vector = EMBEDDER.embed_one(query)
        hits = search_chunks(agent.id, vector, limit=limit, **options)
    return [(hit.title, hit.text) for hit in hits]


@pytest.fixture
def tenant(db: None) -> Tenant:
    return Tenant.objects.create(name="Acme", slug="acme")


@pytest.fixture
def agent(tenant: Tenant) -> Agent:
    return new_agent(tenant)


@pytest.fixture
def scoped(agent: Agent) -> Iterator[Agent]:
    with tenant_scope(agent.tenant_id):
        yield agent


# -------------------------------------------------------------------------- chunking


def test_markdown_chunks_follow_sections_and_carry_their_heading_path() -> None:
    chunks = chunk_text(ACCOUNT_ARTICLE, "text/markdown")

    assert chunks[0] == "Account help\n\nEverything about getting into your account."
    assert chunks[1].startswith("Account help > Reset your password\n\nOpen the sign-in page")
    assert chunks[2].startswith("Account help > Two-factor authentication\n\n")
    # A '#' line inside a fenced code block is code, not a heading.
    assert "# this line is code, not a heading" in chunks[2]
    assert chunks[2].endswith("```")
    assert len(chunks) == 3


def test_plain_text_has_no_headings() -> None:
    chunks = chunk_text("# not a heading\n\nJust text.", "text/plain")
    assert chunks == ["# not a heading\n\nJust text."]


def test_long_text_is_cut_at_sentences_within_the_size_with_overlap() -> None:
    chunks = chunk_text(LONG_TEXT, "text/plain")
    words = set(LONG_TEXT.split())

    assert len(chunks) > 3
    assert all(len(chunk) <= CHUNK_CHARS for chunk in chunks)
    # Never mid-word: every word of every chunk is a word of the document.
    assert all(set(chunk.split()) <= words for chunk in chunks)
    # Consecutive chunks overlap: the next one starts with the end of the previous one.
    for previous, following in itertools.pairwise(chunks):
        first_sentence = re.split(r"(?<=\.)\s", following, maxsplit=1)[0]
        assert first_sentence in previous
    # Nothing is lost.
    sentences = set(re.findall(r"Paragraph \d sentence \d", LONG_TEXT))
    assert sentences == set(re.findall(r"Paragraph \d sentence \d", " ".join(chunks)))


def test_a_word_longer_than_a_chunk_is_the_only_thing_cut_inside() -> None:
    token = "x" * 2_000
    chunks = chunk_text(f"before {token} after", "text/plain", max_chars=500, overlap_chars=50)
    assert all(len(chunk) <= 500 for chunk in chunks)
    assert "".join(chunks).count("x") >= 2_000
    words = " ".join(chunks).split()
    assert words[0] == "before"
    assert words[-1] == "after"


# ------------------------------------------------------------------------- ingestion


def test_ingestion_stores_the_document_and_its_embedded_chunks(scoped: Agent) -> None:
    document = ingest_document(
        agent=scoped,
        title="  Account help ",
        content_type="text/markdown; charset=utf-8",
        text=ACCOUNT_ARTICLE,
    )

    assert document.title == "Account help"
    assert document.content_type == "text/markdown"
    assert document.size_bytes == len(ACCOUNT_ARTICLE.encode())
    assert document.tenant_id == scoped.tenant_id
    chunks = list(KnowledgeChunk.objects.filter(document=document).order_by("index"))
    assert [c.index for c in chunks] == [0, 1, 2]
    assert all(c.agent_id == scoped.id and c.tenant_id == scoped.tenant_id for c in chunks)
    assert all(len(c.embedding) == 384 for c in chunks)


@pytest.mark.parametrize(
    ("content_type", "text", "error", "message"),
    [
        ("application/pdf", "text", UnsupportedContentType, "content type 'application/pdf'"),
        ("text/plain; charset=latin-1", "text", UnsupportedContentType, "charset"),
        ("text/plain", "   \n ", KnowledgeError, "empty"),
        ("text/plain", "a\x00b", KnowledgeError, "NUL"),
    ],
)
def test_bad_documents_are_refused_and_store_nothing(
    scoped: Agent, content_type: str, text: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        ingest_document(agent=scoped, title="Doc", content_type=content_type, text=text)
    assert not KnowledgeDocument.objects.exists()
    assert not KnowledgeChunk.objects.exists()


def test_size_limit_and_title_are_checked(scoped: Agent, settings: Any) -> None:
    settings.AGENTFLOW = {**settings.AGENTFLOW, "MAX_UPLOAD_BYTES": 100}
    with pytest.raises(KnowledgeTooLarge, match="101 bytes; the limit is 100 bytes"):
        ingest_document(agent=scoped, title="Doc", content_type="text/plain", text="é" * 50 + "x")
    with pytest.raises(KnowledgeError, match="title"):
        ingest_document(agent=scoped, title=" ", content_type="text/plain", text="text")
    assert isinstance(KnowledgeTooLarge("x"), ValueError)
    assert not KnowledgeDocument.objects.exists()


def test_the_tenant_knowledge_quota_is_enforced(scoped: Agent, tenant: Tenant) -> None:
    tenant.quota_overrides = {"knowledge_bytes": len(ACCOUNT_ARTICLE.encode()) + 10}
    tenant.save()
    ingest_document(agent=scoped, title="A", content_type="text/markdown", text=ACCOUNT_ARTICLE)

    with pytest.raises(KnowledgeQuotaExceeded, match="quota exceeded"):
        ingest_document(agent=scoped, title="B", content_type="text/plain", text="x" * 11)
    assert KnowledgeDocument.objects.count() == 1


def test_another_tenants_agent_is_refused(agent: Agent) -> None:
    other = Tenant.objects.create(name="Other", slug="other")
    with tenant_scope(other.id), pytest.raises(Agent.DoesNotExist):
        ingest_document(agent=agent, title="A", content_type="text/plain", text="hello")


def test_delete_document_removes_its_chunks(scoped: Agent, tenant: Tenant) -> None:
    document = ingest_document(
        agent=scoped, title="Billing", content_type="text/markdown", text=BILLING_ARTICLE
    )
    other_agent = new_agent(tenant, "sales")

    assert delete_document(agent=other_agent, document_id=document.id) is False
    assert delete_document(agent=scoped, document_id="not-a-uuid") is False
    assert delete_document(agent=scoped, document_id=uuid.uuid4()) is False
    assert delete_document(agent=scoped, document_id=str(document.id)) is True
    assert not KnowledgeChunk.objects.exists()


# ---------------------------------------------------------------------------- search


def test_search_returns_the_chunk_that_answers(agent: Agent) -> None:
    ingest(agent, "Account help", ACCOUNT_ARTICLE)
    ingest(agent, "Billing", BILLING_ARTICLE)

    with tenant_scope(agent.tenant_id):
        hits = search_knowledge(agent=agent, query="How do I reset my password?", limit=3)
        refund = search_knowledge(agent=agent, query="when do I get my refund", limit=1)

    assert hits[0].title == "Account help"
    assert "Reset your password" in hits[0].text
    assert all(0.0 < hit.score <= 1.0 for hit in hits)
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    assert hits[0].key == f"{hits[0].document_id}#{hits[0].index}"
    assert "Refunds are issued within 14 days" in refund[0].text


def test_knowledge_of_agent_x_is_never_found_for_agent_y_or_another_tenant(db: None) -> None:
    tenant_a = Tenant.objects.create(name="A", slug="tenant-a")
    tenant_b = Tenant.objects.create(name="B", slug="tenant-b")
    agent_x, agent_y = new_agent(tenant_a, "x"), new_agent(tenant_a, "y")
    agent_b = new_agent(tenant_b, "x")
    # Near-identical articles: only the secret word tells them apart.
    for agent, secret in ((agent_x, "ALPHA"), (agent_y, "BRAVO"), (agent_b, "CHARLIE")):
        text = f"# Reset\n\nTo reset your password, open the sign-in page. Code {secret}."
        ingest(agent, f"Reset {secret}", text)

    def secrets_found(agent: Agent, scope: Tenant) -> set[str]:
        with tenant_scope(scope.id):
            hits = search_knowledge(agent=agent, query="reset my password", limit=10)
        return {hit.title.split()[-1] for hit in hits}

    assert secrets_found(agent_x, tenant_a) == {"ALPHA"}
    assert secrets_found(agent_y, tenant_a) == {"BRAVO"}
    assert secrets_found(agent_b, tenant_b) == {"CHARLIE"}
    # Another tenant's agent id finds nothing in this tenant's scope.
    assert secrets_found(agent_x, tenant_b) == set()
    assert secrets_found(agent_b, tenant_a) == set()
    with pytest.raises(TenantScopeMissing):
        search_chunks(agent_x.id, EMBEDDER.embed_one("password"), limit=3)


def test_exact_search_cannot_use_the_hnsw_index(agent: Agent) -> None:
    """The trap of FINDINGS.md: filtered HNSW drops rows; the exact query cannot reach it.

    With sorting disabled the planner takes any index that returns rows in order: the
    plain `ORDER BY distance` query then goes through HNSW, ours still has to sort.
    """
    ingest(agent, "Account help", ACCOUNT_ARTICLE)
    vector = EMBEDDER.embed_one("reset password")
    with tenant_scope(agent.tenant_id):
        rows = KnowledgeChunk.objects.filter(agent_id=agent.id)
        plain = rows.annotate(distance=CosineDistance("embedding", vector)).order_by("distance")
        exact = rows.annotate(similarity=Value(1.0) - CosineDistance("embedding", vector)).order_by(
            "-similarity"
        )
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_sort = off")
            assert "knowledge_chunk_hnsw" in plain[:3].explain()
            assert "knowledge_chunk_hnsw" not in exact[:3].explain()


def test_the_hnsw_path_finds_the_same_rows_and_leaves_no_setting_behind(
    agent: Agent, tenant: Tenant
) -> None:
    ingest(agent, "Account help", ACCOUNT_ARTICLE)
    ingest(agent, "Billing", BILLING_ARTICLE)
    ingest(new_agent(tenant, "other"), "Other", ACCOUNT_ARTICLE + BILLING_ARTICLE)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE agentflow_knowledgechunk")  # the plan reads the table's size
    query = "download my invoice as pdf"

    exact = search(agent, query, limit=5)
    with CaptureQueriesContext(connection) as queries:
        approximate = search(agent, query, limit=5, exact_max_rows=0)

    assert approximate == exact
    raised = [
        q["sql"] for q in queries.captured_queries if "set_config('hnsw.ef_search'" in q["sql"]
    ]
    assert len(raised) == 2, "raised for the query, then put back"
    with connection.cursor() as cursor:
        # Even inside this test's own transaction, the setting was put back.
        cursor.execute("SHOW hnsw.ef_search")
        assert cursor.fetchone()[0] == "40"


@pytest.mark.parametrize(
    ("agent_rows", "table_rows", "version", "expected"),
    [
        (500, 1_000_000, (0, 6, 2), (True, None, False)),  # small agent: exact
        (20_000, 200_000, (0, 6, 2), (False, 200, False)),  # 10% of the table
        (20_000, 2_000_000, (0, 6, 2), (True, None, False)),  # 1%: ef_search would pass 1000
        (20_000, 2_000_000, (0, 8, 0), (False, 40, True)),  # iterative scans exist
    ],
)
def test_search_plan_depends_on_the_agents_share_of_the_table(
    monkeypatch: pytest.MonkeyPatch,
    agent_rows: int,
    table_rows: int,
    version: tuple[int, ...],
    expected: tuple[bool, int | None, bool],
) -> None:
    monkeypatch.setattr(vector_search, "_table_rows", lambda model: table_rows)
    monkeypatch.setattr(vector_search, "_pgvector_version", lambda: version)
    plan = vector_search._plan(KnowledgeChunk, agent_rows, 5, vector_search.EXACT_SEARCH_MAX_ROWS)
    assert (plan.exact, plan.ef_search, plan.iterative) == expected


def test_a_zero_vector_or_no_limit_finds_nothing(agent: Agent) -> None:
    ingest(agent, "Billing", BILLING_ARTICLE)
    with tenant_scope(agent.tenant_id):
        assert search_chunks(agent.id, np.zeros(384, dtype=np.float32), limit=3) == []
    assert search(agent, "refund", limit=0) == []


@pytest.mark.django_db(transaction=True)
async def test_the_kernel_knowledge_store_searches_and_adds(tenant: Tenant) -> None:
    with tenant_scope(tenant.id):
        agent = await Agent.objects.acreate(name="bot", blueprint="support_agent", config={})
        store = DjangoKnowledgeStore(agent.id)
        await store.add(
            [
                KernelDocument(
                    "kb-1", "Billing", BILLING_ARTICLE, {"content_type": "text/markdown"}
                ),
                KernelDocument("kb-2", "Shipping", "Parcels ship within two business days."),
            ]
        )
        vector = EMBEDDER.embed_one("how long does shipping take")
        items = await store.search("how long does shipping take", vector, limit=2)

    assert items[0].kind == "knowledge"
    assert items[0].title == "Shipping"
    assert items[0].text == "Parcels ship within two business days."
    assert re.fullmatch(r"[0-9a-f-]{36}#0", items[0].id)
    assert 0.0 < items[0].score <= 1.0
