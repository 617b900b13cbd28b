"""Planners in agent configs (issue 16): validated on create and update (422 naming each
error with its line), documented by the blueprint, and estimated by the preflight endpoint
without running anything."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentflow.kernel.planning.support import SUPPORT_FSM, SUPPORT_PLANNER
from agentflow.models import Agent, Run
from tests.kernel.fake_openai_server import FakeOpenAIServer, RecordedRequest, chat_completion
from tests.platform.api.conftest import SUPPORT_CONFIG, Persona
from tests.platform.api.test_bad_input import assert_error, assert_field_errors, nothing_written

AGENTS = "/api/v1/agents"
FIXTURES = Path(__file__).parents[2] / "kernel" / "planning_fixtures"

FSM_TEXT = """\
states:
  classify:
    on_success: context
    on_error: human_review
  context:
    on_success: generate_response
  generate_response:
    on_success: evaluate
    on_error: human_review
  evaluate:
    condition: "response.confidence >= 0.7"
    on_true: deliver
    on_false: human_review
initial_state: classify
final_states: [deliver, human_review]
"""
BT_OBJECT = {
    "root": {
        "type": "sequence",
        "children": [
            {"type": "action", "step": "classify"},
            {
                "type": "selector",
                "children": [
                    {
                        "type": "sequence",
                        "children": [
                            {"type": "condition", "check": "intent.confidence > 0.5"},
                            {"type": "action", "step": "generate_response"},
                        ],
                    },
                    {"type": "action", "step": "human_review"},
                ],
            },
        ],
    }
}
LLM_TEXT = """\
actions: [classify, context, generate_response, deliver]
max_steps: 4
on_invalid: fallback
fallback:
  type: fsm
  definition:
    states:
      classify: {on_success: deliver}
    initial_state: classify
    final_states: [deliver]
"""
PAID_LLM = {"providers": [{"kind": "openai", "model": "gpt-4o-mini"}]}


def _config(planner: Any = None, **extra: Any) -> dict[str, Any]:
    config = {**copy.deepcopy(SUPPORT_CONFIG), **extra}
    if planner is not None:
        config["planner"] = planner
    return config


def _create(owner: Persona, name: str, config: dict[str, Any]) -> Any:
    return owner.post(AGENTS, {"name": name, "blueprint": "support_agent", "config": config})


# ----------------------------------------------------------------------------- accepted


@pytest.mark.parametrize(
    ("planner_type", "definition"),
    [
        ("fsm", FSM_TEXT),
        ("fsm", yaml.safe_load(FSM_TEXT)),
        ("fsm", json.dumps(SUPPORT_FSM, indent=2)),
        ("behavior_tree", BT_OBJECT),
        ("behavior_tree", yaml.safe_dump(BT_OBJECT, sort_keys=False)),
    ],
    ids=["fsm-yaml", "fsm-object", "fsm-json-text", "bt-object", "bt-yaml"],
)
def test_valid_planners_are_accepted_and_stored_as_given(
    owner: Persona, planner_type: str, definition: Any
) -> None:
    planner = {"type": planner_type, "definition": definition}
    response = _create(owner, "planned", _config(planner))

    assert response.status_code == 201, response.json()
    assert response.json()["config"]["planner"] == planner
    stored = Agent.unscoped.get(pk=response.json()["id"]).config["planner"]
    assert stored == planner, "YAML text stays text, an object stays an object"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("definition", [LLM_TEXT, yaml.safe_load(LLM_TEXT)], ids=["yaml", "obj"])
def test_an_llm_planner_is_accepted_and_its_runs_fall_back_without_a_model_that_plans(
    owner: Persona, definition: Any, celery_worker_app: object
) -> None:
    """Before, a valid llm planner was refused: the support pipeline could not follow it.
    The offline provider writes no JSON plan, so after the repair the fallback FSM runs."""
    response = _create(owner, "llm", _config({"type": "llm", "definition": definition}))
    assert response.status_code == 201, response.json()

    run = owner.post(
        f"{AGENTS}/{response.json()['id']}/runs",
        {"user_id": "u1", "message": "How do I reset my password?"},
        headers={"Prefer": "wait=20"},
    ).json()
    steps = owner.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
    assert [(s["node"], s["outcome"]) for s in steps] == [
        ("plan", "error"),  # not a plan
        ("plan", "error"),  # nor after the repair
        ("classify", "success"),
        ("deliver", "success"),
    ]
    assert run["status"] == "completed"


def test_no_planner_is_todays_agent(owner: Persona) -> None:
    response = _create(owner, "plain", _config())
    assert response.status_code == 201
    assert response.json()["config"]["planner"] is None


# ----------------------------------------------------------------------------- refused

BAD_FSM = """\
states:
  classify:
    on_success: nowhere
    on_error: human_review
  lonely:
    on_success: deliver
  generate_response:
    action: {tool: crm_lookup}
    on_success: evaluate
  evaluate:
    conditional_transitions:
      - condition: "__import__('os')"
        target: human_review
      - condition: "message.__class__ == 1"
        target: deliver
    condition: "response.confidence >= 'high'"
    on_true: deliver
    on_false: teleport
    timeout: soon
  deliver:
    on_success: classify
initial_state: classify
final_states: [deliver, human_review]
"""
BAD_FSM_ERRORS = [
    "line 3, column 17: transition `on_success: nowhere`: no state named `nowhere`",
    "line 5, column 3: state `lonely` is unreachable from `classify`",
    "line 7, column 3: state `generate_response` is unreachable from `classify`",
    "line 8, column 20: state `generate_response`: unknown tool `crm_lookup` (known: none)",
    "line 10, column 3: state `evaluate` is unreachable from `classify`",
    "line 12, column 20:",  # __import__
    "line 14, column 20:",  # attribute walk
    "line 16, column 16:",  # number vs string
    "line 18, column 15: transition `on_false: teleport`: no state named `teleport`",
    "line 19, column 14: timeout `soon` is not a duration like 500ms, 2s or 10m",
    "line 21, column 17: final state `deliver` has outgoing transitions",
]


def _planner_errors(body: dict[str, Any]) -> list[str]:
    errors: list[str] = body["errors"]["planner.definition"]
    for error in errors:
        assert f"planner.definition: {error}" in body["detail"], "detail lists every error"
    return errors


def test_every_fsm_error_is_listed_with_its_line_and_nothing_is_written(owner: Persona) -> None:
    with nothing_written(owner.tenant):
        response = _create(owner, "broken", _config({"type": "fsm", "definition": BAD_FSM}))
    body = assert_field_errors(response, "planner.definition")
    errors = _planner_errors(body)

    assert len(errors) >= len(BAD_FSM_ERRORS), errors
    for expected in BAD_FSM_ERRORS:
        assert any(error.startswith(expected) for error in errors), (expected, errors)
    assert "unknown function `__import__()`" in body["detail"]
    assert "names starting with `_` are not accessible" in body["detail"]
    assert "cannot compare a number with a string" in body["detail"]
    assert not Agent.unscoped.filter(tenant=owner.tenant, name="broken").exists()


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        (
            "states:\n  classify: {on_success: classify}\ninitial_state: classify\n",
            ["line 1, column 1: no final state", "cycle without exit"],
        ),
        (
            "states:\n  classify: {on_success: deliver\ninitial_state: classify\n",
            ["line 3", "not valid YAML"],
        ),
        (
            "states:\n  classify: {on_success: deliver}\n  classify: {on_success: deliver}\n"
            "initial_state: classify\nfinal_states: [deliver]\n",
            ["line 3, column 3: duplicate key `classify`"],
        ),
        (
            "states:\n  classify: {on_success: context}\n  context: {}\n"
            "initial_state: classify\nfinal_states: [deliver]\n",
            ["line 3, column 3: state `context` is not final and has no transition"],
        ),
        ("just text", ["line 1, column 1: the definition must be a mapping"]),
        (
            "x: &a [1, 2]\nstates: *a\n",
            ["line 2, column 9: YAML aliases (`*name`) are not allowed"],
        ),
        ("[" * 80 + "]" * 80, ["nested deeper than 64 levels"]),
    ],
    ids=["no-final", "syntax", "duplicate", "dead-end", "not-mapping", "alias", "deep"],
)
def test_other_fsm_errors_name_their_lines(
    owner: Persona, definition: str, expected: list[str]
) -> None:
    response = _create(owner, "broken", _config({"type": "fsm", "definition": definition}))
    joined = " | ".join(_planner_errors(assert_field_errors(response, "planner.definition")))
    for part in expected:
        assert part in joined, (part, joined)


def test_behavior_tree_errors_name_their_lines(owner: Persona) -> None:
    definition = """\
root:
  type: sequence
  children:
    - type: parallel
      children: []
    - type: condition
      check: "state.x >"
    - type: action
      agent: ghost
    - type: action
      step: teleport
"""
    response = _create(owner, "bt", _config({"type": "behavior_tree", "definition": definition}))
    errors = _planner_errors(assert_field_errors(response, "planner.definition"))
    assert errors[0] == "line 5, column 7: parallel `root.children[0]` has no children"
    assert errors[1].startswith("line 7, column 14: condition `root.children[1]`")
    assert errors[2] == (
        "line 9, column 14: action `root.children[2]`: unknown agent `ghost` (known: none)"
    )
    assert errors[3].startswith("line 11, column 13: action `root.children[3]`: unknown step")
    assert len(errors) == 4


def test_llm_planner_errors_name_their_lines(owner: Persona) -> None:
    definition = "actions: [classify, {tool: refund}]\nmax_steps: 99\nbogus: 1\n"
    response = _create(owner, "llm", _config({"type": "llm", "definition": definition}))
    errors = _planner_errors(assert_field_errors(response, "planner.definition"))
    assert errors == [
        "line 1, column 21: llm planner: unknown tool `refund`",
        "line 2, column 1: llm planner: `max_steps` must be an integer from 1 to 50",
        "line 3, column 1: llm planner: unknown key `bogus`",
    ]


def test_an_object_definition_names_paths_instead_of_lines(owner: Persona) -> None:
    definition = {
        "states": {"classify": {"on_success": "nowhere"}},
        "initial_state": "classify",
        "final_states": ["deliver"],
    }
    response = _create(owner, "obj", _config({"type": "fsm", "definition": definition}))
    errors = _planner_errors(assert_field_errors(response, "planner.definition"))
    assert errors == [
        "states.classify.on_success: transition `on_success: nowhere`: no state named `nowhere`"
    ]


@pytest.mark.parametrize(
    ("planner", "field"),
    [
        ({"type": "magic", "definition": "states: {}"}, "planner.type"),
        ({"type": "fsm"}, "planner.definition"),
        ({"type": "fsm", "definition": 42}, "planner.definition"),
        ({"type": "fsm", "definition": "x" * 100_001}, "planner.definition"),
        ({"type": "fsm", "definition": {}, "extra": 1}, "planner.extra"),
        ("states: {}", "planner"),
    ],
    ids=["type", "missing", "number", "too-long", "unknown-key", "not-object"],
)
def test_malformed_planner_configs_are_422(owner: Persona, planner: Any, field: str) -> None:
    with nothing_written(owner.tenant):
        response = _create(owner, "bad", _config(planner))
    assert_field_errors(response, field)


def test_a_bad_planner_update_leaves_the_old_config(owner: Persona) -> None:
    created = _create(owner, "kept", _config({"type": "fsm", "definition": FSM_TEXT})).json()
    broken = _config({"type": "fsm", "definition": FSM_TEXT.replace("context\n", "nowhere\n")})

    with nothing_written(owner.tenant):
        response = owner.patch(f"{AGENTS}/{created['id']}", {"config": broken})
    errors = _planner_errors(assert_field_errors(response, "planner.definition"))
    assert errors[0].startswith("line 3, column 17: transition `on_success: nowhere`")

    after = owner.get(f"{AGENTS}/{created['id']}").json()
    assert after["config"] == created["config"]
    assert after["version"] == created["version"]

    fixed = owner.patch(f"{AGENTS}/{created['id']}", {"config": _config(SUPPORT_PLANNER)})
    assert fixed.status_code == 200
    assert fixed.json()["config"]["planner"] == SUPPORT_PLANNER


# ---------------------------------------------------------------------------- seed 002


def _seed_planners() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(FIXTURES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if "planner" in data:
            found.append((path.stem, data["planner"]))
        for name, agent in (data.get("agents") or {}).items():
            if "planner" in agent:
                found.append((f"{path.stem}.{name}", agent["planner"]))
    return found


SEED_UNKNOWN = {
    "content_moderation.text_analyzer": ["toxicity_detector", "spam_detector", "pii_detector"],
    "content_moderation.decision_maker": ["collect_results", "approve_content", "ban_content"],
    "fraud_detection.risk_scorer": ["score_transaction", "approve_transaction"],
    "support": ["knowledge_search", "send_response", "escalate", "fallback_response"],
    "urgent_triage": ["classifier", "escalation_checker", "responder", "fallback_handler"],
}


@pytest.mark.parametrize(("label", "planner"), _seed_planners(), ids=lambda v: str(v)[:40])
def test_seed_002_planners_are_refused_naming_their_unknown_actions(
    owner: Persona, label: str, planner: dict[str, Any]
) -> None:
    """A platform agent knows the support steps only: the seed's examples name steps, tools
    and agents it has not, each refused with its line in the definition."""
    response = _create(owner, "seed", _config(planner))
    errors = _planner_errors(assert_field_errors(response, "planner.definition"))
    assert all(error.startswith("line ") for error in errors), errors
    for action in SEED_UNKNOWN[label]:
        assert any(f"`{action}`" in e and "unknown" in e for e in errors), (action, errors)


def test_the_seed_support_fsm_is_accepted_once_its_steps_are_the_agents(owner: Persona) -> None:
    text = (FIXTURES / "support.yaml").read_text()
    definition = yaml.safe_load(text)["planner"]["definition"]
    for seed, ours in (
        ("knowledge_search", "context"),
        ("send_response", "deliver"),
        ("escalate", "human_review"),
        ("fallback_response", "human_review"),
    ):
        definition = definition.replace(seed, ours)
    definition = definition.replace(
        "final_states: [deliver, human_review, human_review, human_review]",
        "final_states: [deliver, human_review]",
    )
    response = _create(owner, "seed-support", _config({"type": "fsm", "definition": definition}))
    assert response.status_code == 201, response.json()


# --------------------------------------------------------------------------- blueprints


def test_the_blueprint_documents_the_planner_and_shows_the_default(owner: Persona) -> None:
    listed = owner.get("/api/v1/blueprints").json()["results"][0]
    schema = listed["config_schema"]
    planner = schema["properties"]["planner"]
    assert "support FSM" in planner["description"]
    definition = json.dumps(schema["$defs"]["PlannerConfig"])
    for word in ('"fsm"', '"behavior_tree"', '"llm"', "states", "root", "final_states"):
        assert word in definition, word
    kinds = schema["$defs"]["PlannerConfig"]["properties"]["definition"]["anyOf"]
    assert {kind["type"] for kind in kinds} == {"string", "object"}
    assert listed["default_planner"] == SUPPORT_PLANNER
    assert listed["default_config"]["planner"] is None


# ---------------------------------------------------------------------------- preflight


def _preflight(persona: Persona, agent_id: Any, body: Any) -> Any:
    return persona.post(f"{AGENTS}/{agent_id}/preflight", body)


def test_preflight_estimates_the_default_plan_without_running_anything(
    owner: Persona, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = _create(owner, "paid", _config(llm=PAID_LLM)).json()

    async def no_pipeline(*args: Any) -> Any:
        raise AssertionError("preflight built a pipeline")

    monkeypatch.setattr("agentflow.pipelines.build_pipeline", no_pipeline)
    monkeypatch.setattr("agentflow.pipelines.get_pipeline", no_pipeline)
    with nothing_written(owner.tenant):
        response = _preflight(owner, agent["id"], {"message": "  I was charged twice  "})

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["agent_id"] == agent["id"]
    assert body["planner"] == {"type": "fsm", "source": "default"}
    assert body["verdict"] == "ok"
    assert body["decision"] == "ok"
    assert body["budget"] is None
    nodes = [step["node"] for step in body["steps"]]
    assert nodes[:3] == ["classify", "context", "generate_response"]
    llm_steps = [step for step in body["steps"] if step["model"] == "gpt-4o-mini"]
    assert {step["node"] for step in llm_steps} == {"classify", "generate_response"}
    assert all(step["prompt_tokens"] > 0 and step["usd"] > 0 for step in llm_steps)
    assert body["tokens"] == sum(s["prompt_tokens"] + s["completion_tokens"] for s in body["steps"])
    assert body["max_usd"] >= body["usd"] > 0
    assert not Run.unscoped.filter(agent_id=agent["id"]).exists()


def test_preflight_uses_the_agents_own_planner(owner: Persona) -> None:
    planner = {"type": "behavior_tree", "definition": BT_OBJECT}
    agent = _create(owner, "bt", _config(planner, llm=PAID_LLM)).json()
    body = _preflight(owner, agent["id"], {"message": "refund please"}).json()
    assert body["planner"] == {"type": "behavior_tree", "source": "agent"}
    assert [step["action"] for step in body["steps"]] == [
        "step:classify",
        "step:generate_response",
        "step:human_review",
    ]


def test_an_offline_agent_costs_nothing(owner: Persona, agent: Agent) -> None:
    body = _preflight(owner, agent.pk, {"message": "hello"}).json()
    assert body["tokens"] == 0
    assert body["usd"] == 0
    assert body["verdict"] == "ok"


@pytest.mark.parametrize(
    ("budget", "verdict"),
    [({"hard_usd": 0.000001}, "refused"), ({"soft_usd": 0.000001}, "warn"), ({}, "ok")],
)
def test_preflight_compares_with_the_agents_budget(
    owner: Persona, budget: dict[str, float], verdict: str
) -> None:
    agent = _create(owner, "budgeted", _config(llm=PAID_LLM, budget=budget)).json()
    with nothing_written(owner.tenant):
        body = _preflight(owner, agent["id"], {"message": "I was charged twice"}).json()
    assert body["verdict"] == verdict
    assert body["decision"] == {"refused": "refuse"}.get(verdict, verdict)
    if budget:
        assert body["budget"] == {"soft_usd": None, "hard_usd": None, **budget}


def test_preflight_of_a_foreign_agent_is_404(
    owner: Persona, outsider: Persona, agent: Agent
) -> None:
    with nothing_written(owner.tenant, outsider.tenant):
        response = _preflight(outsider, agent.pk, {"message": "hello"})
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "message"),
        ({"message": 42}, "message"),
        ({"message": ["hi"]}, "message"),
        ({"message": "   "}, "message"),
        ({"message": "x" * 20_001}, "message"),
        ({"message": "hi", "user_id": "u"}, "user_id"),
    ],
    ids=["missing", "number", "list", "blank", "too-long", "unknown-field"],
)
def test_preflight_refuses_bad_bodies(
    owner: Persona, agent: Agent, body: dict[str, Any], field: str
) -> None:
    with nothing_written(owner.tenant):
        response = _preflight(owner, agent.pk, body)
    assert_field_errors(response, field)


def test_preflight_of_malformed_json_is_400(owner: Persona, agent: Agent) -> None:
    response = owner.post(f"{AGENTS}/{agent.pk}/preflight", '{"message": "hi"')
    assert_error(response, 400, "malformed_request")


# ------------------------------------------------------------------------------- docs


def _doc_examples() -> list[dict[str, Any]]:
    text = (Path(__file__).parents[3] / "docs" / "api.md").read_text()
    section = text.split("## Planners in agent config")[1].split("\n## ")[0]
    return [json.loads(block.split("```")[0]) for block in section.split("```json\n")[1:]]


def test_the_docs_examples_run(owner: Persona) -> None:
    refused, accepted = _doc_examples()

    body = assert_field_errors(owner.post(AGENTS, refused), "planner.definition")
    assert body["detail"] == (
        "Agent config is invalid: planner.definition: line 3, column 17: "
        "transition `on_success: nowhere`: no state named `nowhere`"
    )
    agent = owner.post(AGENTS, accepted).json()
    estimate = _preflight(owner, agent["id"], {"message": "I was charged twice"}).json()
    assert estimate["planner"] == {"type": "fsm", "source": "agent"}
    assert estimate["verdict"] == "warn"
    assert (estimate["tokens"], estimate["max_usd"]) == (1040, 0.0004788), "as documented"


def test_a_definition_of_too_many_values_is_refused_before_loading(owner: Persona) -> None:
    states = {f"s{i}": {"on_success": f"s{i + 1}", "on_error": "x"} for i in range(2000)}
    definition = {"states": states, "initial_state": "s0", "final_states": ["human_review"]}
    for given in (definition, yaml.safe_dump(definition, default_flow_style=True)):
        response = _create(owner, "huge", _config({"type": "fsm", "definition": given}))
        errors = _planner_errors(assert_field_errors(response, "planner.definition"))
        assert len(errors) == 1
        assert "more than 5000 values in the definition" in errors[0]


PLANNED = {"steps": [{"action": "classify"}, {"action": "deliver"}]}


def _planning_model(request: RecordedRequest) -> Any:
    schema = ((request.body or {}).get("response_format") or {}).get("json_schema") or {}
    if (schema.get("schema") or {}).get("required") == ["steps"]:
        return chat_completion(json.dumps(PLANNED))  # the plan the model proposes
    if schema:
        return chat_completion('{"intent": "PASSWORD_RESET", "confidence": 0.9}')
    return chat_completion("Open Settings, then Security.")


@pytest.mark.django_db(transaction=True)
def test_an_llm_planners_plan_from_a_real_model_is_followed_and_metered(
    owner: Persona, settings: Any, monkeypatch: Any, celery_worker_app: object
) -> None:
    with FakeOpenAIServer(default=_planning_model) as server:
        settings.AGENTFLOW = {**settings.AGENTFLOW, "LLM_ALLOWED_BASE_URLS": [server.base_url]}
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        provider = {
            "kind": "openai",
            "model": "gpt-4o-mini",
            "base_url": server.base_url,
            "api_key": "${OPENAI_API_KEY}",
            "max_retries": 0,
        }
        config = _config({"type": "llm", "definition": LLM_TEXT}, llm={"providers": [provider]})
        created = _create(owner, "planned-by-model", config)
        assert created.status_code == 201, created.json()
        run = owner.post(
            f"{AGENTS}/{created.json()['id']}/runs",
            {"user_id": "u1", "message": "How do I reset my password?"},
            headers={"Prefer": "wait=20"},
        ).json()
        plan_calls = [
            r for r in server.requests if "steps" in json.dumps(r.body.get("response_format"))
        ]
    steps = owner.get(f"/api/v1/runs/{run['id']}/steps").json()["steps"]
    assert (steps[0]["node"], steps[0]["action"]) == ("plan", "none")
    # the two planned steps, then the compiled plan's closing state
    assert [s["action"] for s in steps[1:]] == ["step:classify", "step:deliver", "none"]
    assert len(plan_calls) == 1  # valid at once: no repair
    assert steps[0]["tokens"] > 0  # the planning call is metered into the run
    assert run["tokens"] >= steps[0]["tokens"]
