"""The owner's integration objects for the outsider tests (tests/platform/api/test_outsiders.py):
a webhook endpoint, an event rule, a processed activity event and the graph it built, a
golden path and a playbook."""

from __future__ import annotations

from agentflow.models import Agent
from learning import golden_paths, processing, services
from learning.models import GraphNode, Playbook
from learning.webhooks.services import create_endpoint
from tenants.context import tenant_scope
from tests.platform.api.conftest import ACTOR, Persona

CUSTOMER = "acme-vip-customer-77"
GOLDEN_QUESTION = "Can Acme staff expense the merger dinner?"
PLAYBOOK_STEP = "consult:knowledge:Acme merger expense policy"


def owner_integrations(owner: Persona, agent: Agent) -> tuple[dict[str, str], tuple[str, ...]]:
    """Path ids by parameter name, and strings of the owner's that no outsider may see."""
    issued = create_endpoint(actor=ACTOR, tenant=owner.tenant, provider="generic", name="acme-desk")
    rule = services.create_rule(
        actor=ACTOR,
        tenant_id=owner.tenant.pk,
        name="acme-escalation-rule",
        event_kind="generic.ticket.*",
        agent=agent,
    )
    event = services.record_event(
        owner.tenant.pk,
        "generic.ticket.created",
        {
            "type": "ticket.created",
            "customer": {"id": CUSTOMER},
            "ticket": {"id": "acme-t-1", "subject": "Acme merger paperwork"},
        },
        source="generic",
    )
    processing.process_event(owner.tenant.pk, str(event.pk))
    customer = GraphNode.unscoped.get(tenant=owner.tenant, kind="customer")
    with tenant_scope(owner.tenant.pk):
        path = golden_paths.record_outcome(
            actor=ACTOR,
            agent=agent,
            question=GOLDEN_QUESTION,
            answer="Yes, up to the merger budget.",
            source="edited",
            score=1.0,
            category="BILLING",
        )
        playbook = Playbook.objects.create(
            agent=agent,
            category="BILLING",
            version=1,
            name="BILLING v1",
            steps=["classify:BILLING", PLAYBOOK_STEP, "deliver"],
            sample_count=20,
            total_count=20,
            success_rate=1.0,
        )
    assert path is not None
    ids = {
        "endpoint_id": str(issued.endpoint.pk),
        "rule_id": str(rule.pk),
        "event_id": str(event.pk),
        "node_id": str(customer.pk),
        "golden_path_id": str(path.pk),
        "playbook_id": str(playbook.pk),
    }
    assert issued.secret is not None
    return ids, (
        *ids.values(),
        issued.secret,
        rule.name,
        CUSTOMER,
        "Acme merger paperwork",
        GOLDEN_QUESTION,
        PLAYBOOK_STEP,
    )
