"""The owner's integration objects for the outsider tests (tests/platform/api/test_outsiders.py):
a webhook endpoint, an event rule, a processed activity event and the graph it built."""

from __future__ import annotations

from agentflow.models import Agent
from learning import services
from learning.models import GraphNode
from learning.webhooks.services import create_endpoint
from tests.platform.api.conftest import ACTOR, Persona

CUSTOMER = "acme-vip-customer-77"


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
    services.process_event(owner.tenant.pk, str(event.pk))
    customer = GraphNode.unscoped.get(tenant=owner.tenant, kind="customer")
    ids = {
        "endpoint_id": str(issued.endpoint.pk),
        "rule_id": str(rule.pk),
        "event_id": str(event.pk),
        "node_id": str(customer.pk),
    }
    assert issued.secret is not None
    return ids, (*ids.values(), issued.secret, rule.name, CUSTOMER, "Acme merger paperwork")
