"""The demo a fresh ``make run`` shows: tenant Acme, its support agent, reviewer and operator.

``seed_demo`` is idempotent: it creates what is missing and leaves what exists alone, so
it is safe on every start. Secrets (the API key, generated passwords) are returned only
when they were created in this call; they are also written, readable by the owner only,
under ``AGENTFLOW_HOME`` so ``manage.py demo_traffic`` finds the key and a user who lost
the terminal output can find the passwords. Every write goes through the apps' services,
audited as the system actor ``demo``.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction

from agentflow import knowledge
from agentflow import services as agent_services
from agentflow.models import Agent, KnowledgeDocument
from governance import services as governance_services
from governance.audit import Actor
from tenants import services as tenant_services
from tenants.context import tenant_scope
from tenants.models import Role, Tenant, TenantStatus
from tenants.quotas import Tier

ACTOR = Actor.system("demo")
TENANT_NAME = "Acme"
TENANT_SLUG = "acme"
AGENT_NAME = "support"
KEY_NAME = "demo"
KEY_FILE = "demo-api-key"
CREDENTIALS_FILE = "demo-credentials.txt"
SEEDED_FLAG = "demo-seeded"
# (username, role): the two dashboard personas besides the platform admin.
USERS: tuple[tuple[str, str], ...] = (("reviewer", Role.REVIEWER), ("operator", Role.OPERATOR))

# Intents of Acme's support agent. A category threshold of exactly 0.0 means "always ask
# a human" (agentflow.kernel.confidence): deleting an account or anything legal is never
# left to the bot, however sure it is.
SUPPORT_CONFIG: dict[str, Any] = {
    "intent_categories": [
        {
            "name": "ACCOUNT_ACCESS",
            "description": "Logging in, passwords and two-factor authentication",
            "examples": [
                "how do I reset my password",
                "I forgot my password",
                "the password reset email never arrives",
                "I can't log in to my account",
                "how do I turn on two-factor authentication",
                "my two-factor code is not accepted",
                "I lost my phone with the authenticator app",
                "I am locked out of my account",
                "how do I get back into my account",
            ],
        },
        {
            "name": "BILLING",
            "description": "Invoices, charges and refunds",
            "examples": [
                "I want a refund",
                "how long does a refund take",
                "I was charged twice",
                "where can I download my invoice",
                "can I get my money back",
                "when will I get my refund",
                "there is a double charge on my card",
            ],
        },
        {
            "name": "SHIPPING",
            "description": "Delivery times, tracking and returns of orders",
            "examples": [
                "where is my order",
                "how long does shipping take",
                "how do I track my parcel",
                "do you ship internationally",
                "how do I return an item",
                "when will my package arrive",
                "do you deliver to other countries",
                "can you ship my order abroad",
            ],
        },
        {
            "name": "THANKS",
            "description": "The customer says thanks or that the problem is solved",
            "examples": [
                "thanks, that helped",
                "thank you so much",
                "great, that solved it",
                "perfect, thanks for the help",
                "great, thank you for your help",
                "thanks a lot, that answers it",
            ],
            # Answered with the "Saying thanks" article: a thank-you needs no person.
            "threshold": 0.35,
        },
        {
            "name": "ACCOUNT_DELETION",
            "description": "Closing the account, erasing personal data, legal requests",
            "examples": [
                "please delete my account",
                "I want to close my account and erase my data",
                "GDPR request to remove my personal data",
                "I am contacting you on behalf of my lawyer",
            ],
            "threshold": 0.0,
        },
        {
            "name": "HUMAN_AGENT",
            "description": "The customer asks for a person",
            "examples": [
                "I want to talk to a human",
                "let me speak to a real person",
                "connect me with your manager",
                "stop the bot, I need an agent",
            ],
            "threshold": 0.0,
        },
    ],
    # Offline answers to the help articles' questions score 0.55-0.75; unrelated
    # or half-understood ones stay well below (measured: tests/platform/test_demo.py).
    "default_threshold": 0.5,
}

# Short help-centre articles. The offline model matches words, so each one says plainly
# what it answers ("reset your password", "how long shipping takes").
KNOWLEDGE: tuple[tuple[str, str], ...] = (
    (
        "Resetting your password",
        "Forgot your password and can't log in? On the login page click 'Forgot password' "
        "and enter your email: we email you a reset link, valid for 30 minutes, to get back "
        "into your account. Already logged in? To reset your password, open Settings, choose "
        "Security and click 'Reset password'. If the password reset email never arrives, check "
        "your spam folder and ask for a new link after 5 minutes.",
    ),
    (
        "Two-factor authentication",
        "To set up two-factor authentication, open Settings, Security, Two-factor and scan "
        "the QR code with an authenticator app; keep the ten backup codes somewhere safe. "
        "If you lost your phone with the authenticator app, log in with a backup code and "
        "set up two-factor on the new phone.",
    ),
    (
        "Refunds",
        "How long does a refund take? A refund takes up to 5 business days and goes back to "
        "the original card. To get your money back, request a refund from the Billing page "
        "within 30 days of the purchase. If you were charged twice for an order, the double "
        "charge is refunded automatically within 24 hours.",
    ),
    (
        "Invoices",
        "You can download every invoice as a PDF from the Billing page under Invoices. We "
        "also email the invoice on the first day of each month.",
    ),
    (
        "Shipping and delivery",
        "How long does shipping take? Orders ship within 1 business day; standard shipping "
        "takes 3 to 5 business days and express shipping 1 to 2. Where is your order? Track "
        "your order with the tracking number in the shipping email or on the Orders page. We "
        "ship internationally to 40 countries, including Canada and the UK.",
    ),
    (
        "Returns",
        "You can return an item within 30 days of delivery. Start a return on the Orders "
        "page and we email you a prepaid return label.",
    ),
    (
        "Deleting your account",
        "Deleting your account is permanent and erases your data after 30 days. A support "
        "person confirms every account deletion with you before anything is erased.",
    ),
    (
        "Saying thanks",
        "Thanks for the help? You are welcome, glad that helped! Thank you for contacting "
        "Acme support; if anything else comes up, just reply here.",
    ),
)


@dataclass
class DemoResult:
    tenant: Tenant
    agent: Agent
    created: list[str] = field(default_factory=list)
    api_key: str | None = None  # plaintext, only when issued in this call
    passwords: dict[str, str] = field(default_factory=dict)  # only users created now
    key_file: Path | None = None
    credentials_file: Path | None = None


def home() -> Path:
    return Path(settings.AGENTFLOW_HOME)


def key_file() -> Path:
    return home() / KEY_FILE


def read_key() -> str | None:
    """The demo tenant's API key as the seed saved it (None when not seeded here)."""
    try:
        return key_file().read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only, from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(0o600)  # an existing file keeps its old mode through O_CREAT


def _key_works(plaintext: str | None, tenant: Tenant) -> bool:
    if not plaintext:
        return False
    try:
        key = tenant_services.authenticate_key(plaintext)
    except tenant_services.KeyRejected:
        return False
    return key.tenant_id == tenant.pk


def _ensure_tenant(result_created: list[str]) -> Tenant:
    tenant = Tenant.objects.filter(slug=TENANT_SLUG).first()
    if tenant is None:
        tenant = tenant_services.create_tenant(
            actor=ACTOR, name=TENANT_NAME, slug=TENANT_SLUG, tier=Tier.PROFESSIONAL
        )
        result_created.append("tenant")
    return tenant


def _ensure_agent(tenant: Tenant, created: list[str]) -> Agent:
    with tenant_scope(tenant.pk):
        agent = Agent.objects.filter(name=AGENT_NAME).first()
        if agent is None:
            agent = agent_services.create_agent(
                actor=ACTOR,
                tenant=tenant,
                name=AGENT_NAME,
                blueprint="support_agent",
                config=SUPPORT_CONFIG,
            )
            created.append("agent")
        present = set(KnowledgeDocument.objects.filter(agent=agent).values_list("title", flat=True))
        missing = [(title, text) for title, text in KNOWLEDGE if title not in present]
        for title, text in missing:
            knowledge.ingest_document(
                agent=agent, title=title, content_type="text/markdown", text=text
            )
        if missing:
            created.append(f"{len(missing)} help articles")
    return agent


def _ensure_users(tenant: Tenant, password: str | None, result: DemoResult) -> None:
    user_model = get_user_model()
    for username, role in USERS:
        user: User | None = user_model.objects.filter(username=username).first()
        if user is None:
            secret = password or secrets.token_urlsafe(12)
            user = user_model.objects.create_user(
                username, email=f"{username}@acme.example", password=secret
            )
            result.passwords[username] = secret
            result.created.append(f"user {username}")
        # assign_role writes (and audits) only when the role changes.
        governance_services.assign_role(actor=ACTOR, tenant=tenant, user=user, role=role)


def seed_demo(*, password: str | None = None) -> DemoResult:
    """Create whatever part of the demo is missing; return what was created and its secrets."""
    password = password or os.environ.get("DEMO_PASSWORD") or None
    created: list[str] = []
    with transaction.atomic():
        tenant = _ensure_tenant(created)
    agent = _ensure_agent(tenant, created)
    result = DemoResult(tenant=tenant, agent=agent, created=created)
    # A suspended demo tenant keeps its key: a new one would not work either.
    if tenant.status == TenantStatus.ACTIVE and not _key_works(read_key(), tenant):
        issued = tenant_services.issue_key(
            actor=ACTOR, tenant=tenant, name=KEY_NAME, scopes=["read", "write"]
        )
        result.api_key = issued.plaintext
        _write_private(key_file(), issued.plaintext + "\n")
        created.append("api key")
    result.key_file = key_file()
    _ensure_users(tenant, password, result)
    if result.passwords:
        credentials = home() / CREDENTIALS_FILE
        lines = [f"{name}: {secret}\n" for name, secret in result.passwords.items()]
        previous = credentials.read_text(encoding="utf-8") if credentials.exists() else ""
        _write_private(credentials, previous + "".join(lines))
        result.credentials_file = credentials
    return result
