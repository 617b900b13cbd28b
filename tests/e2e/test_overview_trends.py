"""The overview's trend charts in headless Chromium: drawn from the vendored Chart.js, and
redrawn live when a customer's run arrives through the public API (issue 19)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from agentflow.models import Agent, Run, RunStatus
from tenants.context import tenant_scope
from tests.e2e.conftest import UI
from tests.e2e.test_dashboard import ask, assert_not_reloaded, live, mark_loaded, member
from tests.platform.api.conftest import make_agent, make_persona

pytestmark = pytest.mark.django_db(transaction=True)

CHARTS = ("runs", "golden", "cost", "sla", "queue")
GOLDEN = {"answer": "ok", "sources": [{"kind": "golden_path", "id": "gp"}]}

# Sum of a chart's first dataset, read from the Chart.js instance on the canvas.
CHART_SUM = """(name) => {
  const chart = Chart.getChart(document.querySelector('canvas[data-chart="' + name + '"]'));
  return chart ? chart.data.datasets[0].data.reduce((a, b) => a + (Number(b) || 0), 0) : null;
}"""


def history(agent: Agent, hours: int = 23) -> int:
    """A day of earlier customer runs (some answered from golden paths): what the charts
    show before the live one. Returns how many."""
    now = datetime.now(UTC)
    rows = []
    for hour in range(1, hours):
        for index in range(hour % 5 + 1):
            rows.append(
                Run(
                    agent=agent,
                    user_id=f"c{hour}-{index}",
                    input="How do I reset my password?",
                    status=RunStatus.COMPLETED,
                    result=GOLDEN if (hour + index) % 3 == 0 else {"answer": "ok"},
                    tokens=120 + 10 * index,
                    cost_usd=Decimal("0"),
                    created_at=now - timedelta(hours=hour, minutes=index),
                )
            )
    with tenant_scope(agent.tenant_id):
        Run.objects.bulk_create(rows)
    return len(rows)


def rendered(page: Any) -> None:
    for name in CHARTS:
        page.wait_for_selector(f'canvas[data-chart="{name}"][data-rendered="1"]', state="attached")


def test_charts_render_and_update_live_after_a_run(
    ui: UI, live_url: str, celery_worker_app: object
) -> None:
    acme = make_persona("Acme", tier="professional")
    agent = make_agent(acme)
    earlier = history(agent)
    operator = ui.signed_in(member(acme.tenant, "otto", "operator"))
    errors: list[str] = []
    operator.on("pageerror", lambda error: errors.append(str(error)))
    operator.goto("/")
    live(operator)
    rendered(operator)
    assert operator.evaluate("typeof Chart") == "function"
    assert operator.evaluate(CHART_SUM, "runs") == earlier
    assert operator.text_content('[data-total="runs"]') == str(earlier)
    assert operator.locator('[data-testid="trend-cost-offline"]').count() == 1
    mark_loaded(operator)

    ask(live_url, acme.key, agent.pk, "How do I reset my password?", wait=True)
    operator.wait_for_function(f"() => ({CHART_SUM})('runs') === {earlier + 1}")
    operator.wait_for_function(
        "(n) => document.querySelector('[data-total=runs]').textContent === String(n)",
        arg=earlier + 1,
    )
    assert int(operator.get_attribute('[data-testid="trends"]', "data-updates") or 0) >= 1
    assert_not_reloaded(operator)
    ui.screenshot(operator, "overview-trends")

    operator.click('button[data-window-choice="7d"]')
    operator.wait_for_url("**/?window=*7d*")
    rendered(operator)
    assert operator.get_attribute('[data-testid="trends"]', "data-window") == "7d"
    assert operator.evaluate(CHART_SUM, "runs") == earlier + 1
    operator.set_viewport_size({"width": 390, "height": 844})
    operator.goto("/")
    rendered(operator)
    width = operator.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the overview scrolls sideways at phone width ({width}px)"
    operator.evaluate("document.querySelector('[data-testid=trends]').scrollIntoView()")
    ui.screenshot(operator, "overview-trends-phone")
    assert errors == []
