"""Creating an agent of any blueprint from a form built from its config schema (issue 18)."""

from __future__ import annotations

import pytest

from agentflow.models import Agent
from agentflow.pipelines import BLUEPRINTS
from tests.platform.api.conftest import Persona
from tests.platform.frontend.conftest import User_

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("blueprint", list(BLUEPRINTS))
def test_every_blueprint_has_a_form_whose_defaults_create_a_valid_agent(
    acme: Persona, operator: User_, blueprint: str
) -> None:
    page = operator.get(f"/agents/new/{blueprint}/")
    assert page.status_code == 200
    assert b'data-testid="agent-new-form"' in page.content
    form = page.context["form"]
    # What the page shows as initial values is posted back as a person would.
    data = {"name": f"my {blueprint}"}
    for name in form.fields:
        value = form[name].value()
        if isinstance(value, list):
            data[name] = value
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        elif value is not None:
            data[name] = str(value)
    created = operator.post(f"/agents/new/{blueprint}/", data)
    assert created.status_code == 302, created.context["form"].errors
    agent = Agent.unscoped.get(tenant=acme.tenant, name=f"my {blueprint}")
    assert agent.blueprint == blueprint
    assert agent.config == BLUEPRINTS[blueprint].default_config


def test_simple_settings_are_fields_and_nested_ones_json(acme: Persona, operator: User_) -> None:
    page = operator.get("/agents/new/code_review_agent/")
    fields = page.context["form"].fields
    assert fields["escalate_on"].initial == "high"
    assert [c for c, _ in fields["disabled_rules"].choices][:2] == ["secret", "sql_from_strings"]
    assert "llm" not in fields  # nested: in the advanced JSON box
    created = operator.post(
        "/agents/new/code_review_agent/",
        {
            "name": "strict reviewer",
            "escalate_on": "low",
            "disabled_rules": ["tests_missing"],
            "test_path_patterns": "spec/\n_test.go",
            "max_diff_chars": "5000",
        },
    )
    assert created.status_code == 302
    config = Agent.unscoped.get(tenant=acme.tenant, name="strict reviewer").config
    assert config["escalate_on"] == "low"
    assert config["disabled_rules"] == ["tests_missing"]
    assert config["test_path_patterns"] == ["spec/", "_test.go"]
    assert config["max_diff_chars"] == 5000


def test_a_refused_setting_is_shown_on_its_field_and_nothing_is_created(
    acme: Persona, operator: User_
) -> None:
    refused = operator.post(
        "/agents/new/code_review_agent/",
        {"name": "bad", "max_diff_chars": "0", "advanced": '{"llm": {"providers": []}}'},
    )
    assert refused.status_code == 422
    errors = refused.context["form"].errors
    assert "max_diff_chars" in errors
    assert not Agent.unscoped.filter(tenant=acme.tenant, name="bad").exists()
    nested = operator.post(
        "/agents/new/code_review_agent/",
        {"name": "bad", "advanced": '{"llm": {"providers": []}}'},
    )
    assert nested.status_code == 422
    assert "llm.providers" in str(nested.context["form"].errors["advanced"])


def test_only_managers_may_open_it_and_unknown_blueprints_are_404(
    viewer: User_, operator: User_
) -> None:
    assert viewer.get("/agents/new/triage_agent/").status_code == 403
    assert operator.get("/agents/new/no_such_agent/").status_code == 404
    listing = operator.get("/agents/")
    assert b'href="/agents/new/triage_agent/"' in listing.content
