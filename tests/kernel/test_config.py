"""AgentFrameworkConfig and ConfigLoader: defaults, validation, sources, errors, secrets."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from agentflow.kernel.config import (
    AgentFrameworkConfig,
    ConfigError,
    ConfigLoader,
    LoggingConfig,
    ProviderConfig,
    escape_env,
)
from agentflow.kernel.plugins import PLUGIN_SPEC_RE


def error_for(data: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        ConfigLoader.from_dict(data, **kwargs)
    return str(caught.value)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ defaults


def test_defaults_match_the_agreed_interface() -> None:
    config = ConfigLoader.from_dict({})
    assert config == AgentFrameworkConfig() == ConfigLoader.load(None)
    assert config.name == "agent"
    assert (config.session.ttl_seconds, config.session.max_sessions) == (3600, 100_000)
    assert (config.memory.episodic_limit, config.memory.short_term_messages) == (100, 20)
    assert config.memory.knowledge_top_k == 3
    assert config.confidence.default_threshold == 0.6
    assert config.confidence.thresholds == {}
    assert config.intents.oos_threshold is None
    assert config.intents.categories == []
    assert (config.threads.inactivity_seconds, config.threads.similarity_threshold) == (1800, 0.35)
    [provider] = config.llm.providers
    assert (provider.kind, provider.model, provider.api_key) == ("offline", "gpt-4o-mini", None)
    assert (provider.timeout_seconds, provider.max_retries) == (30.0, 2)
    assert "support team will follow up" in config.llm.template_answer
    assert (config.rate_limit.enabled, config.rate_limit.requests_per_minute) == (False, 60)
    assert config.guardrails.redact_pii is True
    assert config.guardrails.redact_before_persistence is False
    assert (config.budget.soft_usd, config.budget.hard_usd) == (None, None)
    assert (config.timeouts.context_branch_seconds, config.timeouts.stage_seconds) == (5.0, 30.0)
    assert (config.prompts, config.plugins) == ({}, [])
    assert (config.logging.level, config.logging.json) == ("INFO", True)


def test_logging_json_is_a_plain_bool_attribute() -> None:
    # The agreed key `json` shadows BaseModel.json(): the field value must win.
    assert LoggingConfig(json=False).json is False
    assert ConfigLoader.from_dict({"logging": {"json": False}}).logging.json is False
    assert ConfigLoader.from_dict({"logging": {"level": "debug"}}).logging.level == "DEBUG"


def test_threshold_for_falls_back_to_the_default() -> None:
    config = ConfigLoader.from_dict(
        {"confidence": {"default_threshold": 0.5, "thresholds": {"OUTAGE": 0.7, "ESC": 0.0}}}
    )
    assert config.confidence.threshold_for("OUTAGE") == 0.7
    assert config.confidence.threshold_for("ESC") == 0.0
    assert config.confidence.threshold_for("GREETING") == 0.5


def test_assignment_is_validated() -> None:
    config = AgentFrameworkConfig()
    with pytest.raises(ValueError, match="less than or equal to 1"):
        config.confidence.default_threshold = 2.0


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("data", "path", "reason"),
    [
        ({"confidence": {"thresholds": {"OUTAGE": 1.5}}}, "confidence.thresholds.OUTAGE", "<= 1"),
        ({"confidence": {"default_threshold": -0.1}}, "confidence.default_threshold", ">= 0"),
        ({"threads": {"similarity_threshold": 2}}, "threads.similarity_threshold", "<= 1"),
        ({"intents": {"oos_threshold": 1.01}}, "intents.oos_threshold", "<= 1"),
        ({"intents": {"novelty_keep": 0}}, "intents.novelty_keep", "> 0"),
        ({"intents": {"novelty_keep": 1.5}}, "intents.novelty_keep", "<= 1"),
        (
            {"intents": {"categories": [{"name": "A", "threshold": -1}]}},
            "intents.categories[0].threshold",
            ">= 0",
        ),
        ({"session": {"ttl_seconds": 0}}, "session.ttl_seconds", "> 0"),
        ({"session": {"max_sessions": -5}}, "session.max_sessions", "> 0"),
        ({"threads": {"inactivity_seconds": 0}}, "threads.inactivity_seconds", "> 0"),
        ({"memory": {"episodic_limit": 0}}, "memory.episodic_limit", "> 0"),
        ({"memory": {"knowledge_top_k": -1}}, "memory.knowledge_top_k", ">= 0"),
        ({"timeouts": {"stage_seconds": 0}}, "timeouts.stage_seconds", "> 0"),
        ({"timeouts": {"stage_seconds": math.inf}}, "timeouts.stage_seconds", "finite"),
        ({"confidence": {"default_threshold": math.nan}}, "confidence.default_threshold", "finite"),
        ({"rate_limit": {"requests_per_minute": 0}}, "rate_limit.requests_per_minute", "> 0"),
        ({"budget": {"hard_usd": -1}}, "budget.hard_usd", ">= 0"),
        ({"budget": {"soft_usd": 5, "hard_usd": 1}}, "budget.hard_usd", "at least soft_usd"),
        ({"llm": {"providers": []}}, "llm.providers", "at least 1 item"),
        ({"llm": {"providers": [{"model": "x"}]}}, "llm.providers[0].kind", "Field required"),
        ({"llm": {"providers": [{"kind": "anthropic"}]}}, "llm.providers[0].kind", "'openai'"),
        (
            {"llm": {"providers": [{"kind": "openai", "model": "  "}]}},
            "llm.providers[0].model",
            "requires a model",
        ),
        (
            {"llm": {"providers": [{"kind": "openai", "base_url": "ftp://x"}]}},
            "llm.providers[0].base_url",
            "http",
        ),
        ({"llm": {"template_answer": ""}}, "llm.template_answer", "at least 1 character"),
        ({"llm": {"providers": [{"kind": "offline", "max_retries": -1}]}}, "max_retries", ">= 0"),
        ({"logging": {"level": "LOUD"}}, "logging.level", "one of DEBUG"),
        ({"plugins": ["not a module"]}, "plugins", "'package.module'"),
        (
            {"intents": {"categories": [{"name": "A"}, {"name": "A"}]}},
            "intents.categories",
            "duplicate category name 'A'",
        ),
        ({"intents": {"categories": [{"name": ""}]}}, "intents.categories[0].name", "at least 1"),
        ({"name": ""}, "name", "at least 1 character"),
        ({"session": {"ttl_seconds": "soon"}}, "session.ttl_seconds", "valid integer"),
        ({"prompts": {"greeting": 3}}, "prompts.greeting", "valid string"),
    ],
)
def test_invalid_values_name_the_field_and_reason(data: Any, path: str, reason: str) -> None:
    message = error_for(data)
    assert path in message
    normalised = message.replace("less than or equal to ", "<= ")
    normalised = normalised.replace("greater than or equal to ", ">= ")
    normalised = normalised.replace("greater than ", "> ")
    assert reason in normalised


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        ConfigLoader.from_dict({"session": {"ttl_seconds": 0}, "memory": {"episodic_limit": 0}})
    assert [issue.path for issue in caught.value.issues] == [
        "session.ttl_seconds",
        "memory.episodic_limit",
    ]
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("data", "path", "suggestion"),
    [
        ({"session_config": {}}, "session_config", "did you mean 'session'?"),
        ({"session": {"ttl": 5}}, "session.ttl", "did you mean 'ttl_seconds'?"),
        ({"llm": {"providers": [{"kind": "offline", "temperature": 0}]}}, "providers[0].temp", ""),
        ({"intents": {"categories": [{"name": "A", "exemples": []}]}}, "exemples", "'examples'"),
    ],
)
def test_unknown_keys_are_errors(data: Any, path: str, suggestion: str) -> None:
    message = error_for(data)
    assert path in message
    assert "unknown key (allowed: " in message
    assert suggestion in message


def test_top_level_must_be_a_mapping() -> None:
    assert "must be a mapping of sections, not list" in error_for(["name"])


def test_load_rejects_unknown_sources(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unsupported config file type '\.toml'"):
        ConfigLoader.load(tmp_path / "agent.toml")
    with pytest.raises(ConfigError, match="cannot load configuration from int"):
        ConfigLoader.load(42)  # type: ignore[arg-type]


# ------------------------------------------------------------------- secrets


def test_api_key_never_appears_in_repr_or_default_dumps() -> None:
    secret = "sk-live-DO-NOT-LEAK-1234567890"
    config = ConfigLoader.from_dict({"llm": {"providers": [{"kind": "openai", "api_key": secret}]}})
    key = config.llm.providers[0].api_key
    assert key is not None
    assert key.get_secret_value() == secret
    for rendered in (
        repr(config),
        str(config),
        config.model_dump_json(),
        json.dumps(config.to_dict()),
        str(config.model_dump()),
    ):
        assert secret not in rendered
    assert config.to_dict()["llm"]["providers"][0]["api_key"] == "**********"
    assert config.to_dict(reveal_secrets=True)["llm"]["providers"][0]["api_key"] == secret


def test_invalid_secret_value_is_not_echoed_in_the_error() -> None:
    message = error_for({"llm": {"providers": [{"kind": "openai", "api_key": ["sk-LEAKY"]}]}})
    assert "llm.providers[0].api_key" in message
    assert "sk-LEAKY" not in message


# ------------------------------------------------------------- substitution


def test_env_substitution_with_defaults_and_escapes() -> None:
    environ = {"OPENAI_KEY": "sk-from-env", "AGENT_NAME": "helpdesk", "EMPTY": "", "TTL": "120"}
    config = ConfigLoader.from_dict(
        {
            "name": "${AGENT_NAME}-${TIER:-free}",
            "session": {"ttl_seconds": "${TTL}"},
            "llm": {
                "providers": [{"kind": "openai", "api_key": "${OPENAI_KEY}"}],
                "template_answer": "Costs $$5, ${EMPTY:-nothing} else; a $ alone stays",
            },
            "prompts": {"empty": "[${EMPTY}]"},
        },
        environ=environ,
    )
    assert config.name == "helpdesk-free"
    assert config.session.ttl_seconds == 120
    key = config.llm.providers[0].api_key
    assert key is not None
    assert key.get_secret_value() == "sk-from-env"
    assert config.llm.template_answer == "Costs $5, nothing else; a $ alone stays"
    assert config.prompts["empty"] == "[]"


def test_missing_variable_names_the_variable_and_the_field() -> None:
    message = error_for(
        {"llm": {"providers": [{"kind": "openai", "api_key": "${OPENAI_API_KEY}"}]}}, environ={}
    )
    assert "llm.providers[0].api_key" in message
    assert "environment variable OPENAI_API_KEY is not set" in message


def test_variable_file_secrets(tmp_path: Path) -> None:
    secret_file = write(tmp_path / "key", "sk-from-file\n")
    config = ConfigLoader.from_dict(
        {"llm": {"providers": [{"kind": "openai", "api_key": "${KEY}"}]}},
        environ={"KEY_FILE": str(secret_file)},
    )
    key = config.llm.providers[0].api_key
    assert key is not None
    assert key.get_secret_value() == "sk-from-file"
    message = error_for({"name": "${KEY}"}, environ={"KEY_FILE": str(tmp_path / "missing")})
    assert "cannot read KEY_FILE=" in message


def test_escape_env_round_trips_dollars() -> None:
    data = {"name": "a$b$${X}", "prompts": {"p": "${Y:-z}"}, "plugins": ["m"]}
    config = ConfigLoader.from_dict(escape_env(data), environ={"X": "no", "Y": "no"})
    assert config.name == "a$b$${X}"
    assert config.prompts == {"p": "${Y:-z}"}


# ---------------------------------------------------------------- YAML / JSON

YAML_CONFIG = """\
name: support
session:
  ttl_seconds: 7200
confidence:
  default_threshold: 0.5
  thresholds:
    OUTAGE: 0.7
    ESCALATION: 0.0
intents:
  categories:
    - name: GREETING
      description: Greetings
      examples: [hello, hi]
llm:
  providers:
    - kind: openai
      model: gpt-4o-mini
      api_key: ${OPENAI_API_KEY}
    - kind: offline
plugins: [af_test_plugins.billing]
"""


def test_from_yaml_and_load_by_suffix(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": "sk-yaml"}
    for name in ("agent.yaml", "agent.yml"):
        path = write(tmp_path / name, YAML_CONFIG)
        config = ConfigLoader.load(path, environ=env)
        assert config == ConfigLoader.from_yaml(str(path), environ=env)
        assert config.session.ttl_seconds == 7200
        assert config.confidence.thresholds == {"OUTAGE": 0.7, "ESCALATION": 0.0}
        assert config.intents.categories[0].examples == ["hello", "hi"]
        assert [p.kind for p in config.llm.providers] == ["openai", "offline"]


def test_yaml_validation_errors_give_file_and_line(tmp_path: Path) -> None:
    text = YAML_CONFIG.replace("OUTAGE: 0.7", "OUTAGE: 1.7").replace("ttl_seconds", "ttl")
    path = write(tmp_path / "agent.yaml", text)
    with pytest.raises(ConfigError) as caught:
        ConfigLoader.from_yaml(path, environ={"OPENAI_API_KEY": "k"})
    message = str(caught.value)
    assert str(path) in message
    assert "session.ttl (line 3): unknown key" in message
    assert (
        "confidence.thresholds.OUTAGE (line 7): Input should be less than or equal to 1" in message
    )
    assert {issue.line for issue in caught.value.issues} == {3, 7}


def test_yaml_missing_variable_gives_line(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.yaml", YAML_CONFIG)
    with pytest.raises(ConfigError) as caught:
        ConfigLoader.from_yaml(path, environ={})
    [issue] = caught.value.issues
    assert (issue.path, issue.line) == ("llm.providers[0].api_key", 18)
    assert "OPENAI_API_KEY" in issue.reason


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("name: x\n  bad: [\n", 2, "mapping values are not allowed here"),
        (
            "name: x\nsession:\n  ttl_seconds: 1\n  ttl_seconds: 2\n",
            4,
            "duplicate key 'ttl_seconds'",
        ),
        ("name: [unclosed\n", 2, "expected ',' or ']'"),
    ],
)
def test_yaml_syntax_errors_give_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = write(tmp_path / "agent.yaml", text)
    with pytest.raises(ConfigError) as caught:
        ConfigLoader.load(path)
    [issue] = caught.value.issues
    assert issue.line == line
    assert reason in issue.reason
    assert str(path) in str(caught.value)
    assert f"(line {line})" in str(caught.value)


def test_utf8_and_crlf_files(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes('name: "café ☕"\r\nsession:\r\n  ttl_seconds: 0\r\n'.encode())
    with pytest.raises(ConfigError) as caught:
        ConfigLoader.load(path)
    assert caught.value.issues[0].line == 3
    path.write_bytes('name: "café ☕"\r\nprompts:\r\n  p: "a\\rb"\r\n'.encode())
    config = ConfigLoader.load(path)
    assert (config.name, config.prompts["p"]) == ("café ☕", "a\rb")


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    assert ConfigLoader.load(write(tmp_path / "agent.yaml", "# nothing yet\n")) == (
        AgentFrameworkConfig()
    )


def test_yaml_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 1\): the top level must be a mapping"):
        ConfigLoader.load(write(tmp_path / "agent.yaml", "- name: x\n"))


def test_from_json_with_field_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "agent.json",
        '{\n  "name": "x",\n  "session": {\n    "ttl_seconds": -1\n  }\n}\n',
    )
    with pytest.raises(ConfigError) as caught:
        ConfigLoader.load(path)
    [issue] = caught.value.issues
    assert (issue.path, issue.line) == ("session.ttl_seconds", 4)
    good = write(tmp_path / "good.json", json.dumps({"name": "x", "plugins": ["a.b:c"]}))
    assert ConfigLoader.from_json(good).plugins == ["a.b:c"]


def test_json_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "agent.json", '{\n  "name": "x",\n  "session": {,}\n}\n')
    with pytest.raises(ConfigError) as caught:
        ConfigLoader.from_json(path)
    [issue] = caught.value.issues
    assert issue.line == 3
    assert "JSON syntax error, column 15" in issue.reason


def test_unreadable_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as caught:
        ConfigLoader.load(missing)
    assert str(missing) in str(caught.value)
    assert "cannot read file: No such file or directory" in str(caught.value)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read file"):
        ConfigLoader.load(binary)


# ---------------------------------------------------------------- environment


def test_from_env_nested_keys_json_values_and_lists() -> None:
    environ = {
        "AGENT_NAME": "from-env",
        "AGENT_SESSION__TTL_SECONDS": "60",
        "AGENT_CONFIDENCE__THRESHOLDS": '{"OUTAGE": 0.7}',
        "AGENT_CONFIDENCE__THRESHOLDS__BILLING": "0.4",
        "AGENT_LLM__PROVIDERS__0__KIND": "openai",
        "AGENT_LLM__PROVIDERS__0__API_KEY": "${OPENAI_API_KEY}",
        "AGENT_LLM__PROVIDERS__1__KIND": "offline",
        "AGENT_LOGGING__JSON": "false",
        "AGENT_RATE_LIMIT__ENABLED": "true",
        "AGENT_BUDGET__HARD_USD": "null",
        "AGENT_PLUGINS": '["pkg.plugin"]',
        "AGENT_PROMPTS": '{"0": "not a list index"}',
        "OPENAI_API_KEY": "sk-env",
        "UNRELATED": "x",
    }
    config = ConfigLoader.from_env(environ=environ)
    assert config.name == "from-env"
    assert config.session.ttl_seconds == 60
    assert config.confidence.thresholds == {"OUTAGE": 0.7, "BILLING": 0.4}
    assert [p.kind for p in config.llm.providers] == ["openai", "offline"]
    key = config.llm.providers[0].api_key
    assert key is not None
    assert key.get_secret_value() == "sk-env"
    assert config.logging.json is False
    assert config.rate_limit.enabled is True
    assert config.budget.hard_usd is None
    assert config.plugins == ["pkg.plugin"]
    assert config.prompts == {"0": "not a list index"}


def test_from_env_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        ConfigLoader.from_env(
            environ={"AGENT_SESSION__TTL_SECONDS": "0", "AGENT_SESION__TTL_SECONDS": "5"}
        )
    message = str(caught.value)
    assert "environment (AGENT_*)" in message
    assert "AGENT_SESSION__TTL_SECONDS (session.ttl_seconds): Input should be greater than 0" in (
        message
    )
    assert "AGENT_SESION__TTL_SECONDS (sesion): unknown key" in message
    assert "did you mean 'session'?" in message


def test_from_env_invalid_json_and_conflicts() -> None:
    with pytest.raises(ConfigError, match=r"AGENT_CONFIDENCE__THRESHOLDS .*invalid JSON value"):
        ConfigLoader.from_env(environ={"AGENT_CONFIDENCE__THRESHOLDS": "{OUTAGE: 0.7}"})
    with pytest.raises(ConfigError, match="conflicts with another variable"):
        ConfigLoader.from_env(environ={"AGENT_SESSION": "x", "AGENT_SESSION__TTL_SECONDS": "5"})


def test_from_env_custom_prefix_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELPDESK_THREADS__SIMILARITY_THRESHOLD", "0.5")
    monkeypatch.setenv("AGENT_NAME", "ignored")
    config = ConfigLoader.from_env("HELPDESK_")
    assert config.threads.similarity_threshold == 0.5
    assert config.name == "agent"


def test_load_passes_config_objects_through_and_overlays_env(tmp_path: Path) -> None:
    config = AgentFrameworkConfig(name="given")
    assert ConfigLoader.load(config) is config
    path = write(tmp_path / "agent.yaml", YAML_CONFIG.replace("name: support", "name: a$$b"))
    environ = {
        "OPENAI_API_KEY": "sk-file",
        "AGENT_SESSION__TTL_SECONDS": "90",
        "AGENT_LLM__PROVIDERS__0__MODEL": "gpt-4.1",
        "AGENT_CONFIDENCE__THRESHOLDS__BILLING": "0.3",
    }
    merged = ConfigLoader.load(path, env_prefix="AGENT_", environ=environ)
    assert merged.session.ttl_seconds == 90
    assert merged.confidence.thresholds == {"OUTAGE": 0.7, "ESCALATION": 0.0, "BILLING": 0.3}
    assert [(p.kind, p.model) for p in merged.llm.providers] == [
        ("openai", "gpt-4.1"),
        ("offline", "gpt-4o-mini"),
    ]
    key = merged.llm.providers[0].api_key
    assert key is not None
    assert key.get_secret_value() == "sk-file"
    assert merged.name == "a$b"  # substituted once, not twice
    unchanged = ConfigLoader.load(path, env_prefix="NOTHING_", environ={"OPENAI_API_KEY": "k"})
    assert unchanged.session.ttl_seconds == 7200
    with pytest.raises(ConfigError, match=r"AGENT_SESSION__TTL_SECONDS \(session.ttl_seconds\)"):
        ConfigLoader.load(
            path,
            env_prefix="AGENT_",
            environ={"OPENAI_API_KEY": "k", "AGENT_SESSION__TTL_SECONDS": "-3"},
        )


def test_provider_config_is_usable_alone() -> None:
    provider = ProviderConfig(kind="openai", base_url="http://localhost:8000/v1")
    assert provider.base_url == "http://localhost:8000/v1"


# ------------------------------------------------------------------ properties

unit = st.floats(min_value=0, max_value=1, allow_nan=False)
positive = st.integers(min_value=1, max_value=10**9)
seconds = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)
text = st.text(max_size=20)
key_name = st.text(min_size=1, max_size=12)
spec = st.from_regex(PLUGIN_SPEC_RE, fullmatch=True).filter(lambda s: len(s) < 60)


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


@st.composite
def budgets(draw: st.DrawFn) -> dict[str, Any]:
    soft, hard = sorted(draw(st.lists(st.floats(0, 1e6), min_size=2, max_size=2)))
    return draw(optional(soft_usd=st.none() | st.just(soft), hard_usd=st.none() | st.just(hard)))


providers = st.fixed_dictionaries(
    {"kind": st.sampled_from(["openai", "offline"])},
    optional={
        "model": st.text(min_size=1, max_size=20).filter(str.strip),
        "base_url": st.none()
        | st.from_regex(r"https?://[a-z]{1,10}\.[a-z]{2,3}(/[a-z]{0,5})?", fullmatch=True),
        "api_key": st.none() | st.text(min_size=1, max_size=30),
        "timeout_seconds": seconds,
        "max_retries": st.integers(0, 10),
    },
)
categories = st.fixed_dictionaries(
    {"name": key_name},
    optional={
        "description": text,
        "examples": st.lists(text, max_size=3),
        "threshold": st.none() | unit,
    },
)
valid_configs = optional(
    name=key_name,
    session=optional(ttl_seconds=positive, max_sessions=positive),
    memory=optional(
        episodic_limit=positive, short_term_messages=positive, knowledge_top_k=st.integers(0, 99)
    ),
    confidence=optional(
        default_threshold=unit, thresholds=st.dictionaries(key_name, unit, max_size=4)
    ),
    intents=optional(
        oos_threshold=st.none() | unit,
        categories=st.lists(categories, max_size=3, unique_by=lambda c: c["name"]),
    ),
    threads=optional(inactivity_seconds=positive, similarity_threshold=unit),
    llm=optional(
        providers=st.lists(providers, min_size=1, max_size=3),
        template_answer=st.text(min_size=1, max_size=40),
    ),
    rate_limit=optional(enabled=st.booleans(), requests_per_minute=positive),
    guardrails=optional(redact_pii=st.booleans(), redact_before_persistence=st.booleans()),
    budget=budgets(),
    timeouts=optional(context_branch_seconds=seconds, stage_seconds=seconds),
    prompts=st.dictionaries(key_name, text, max_size=3),
    plugins=st.lists(spec, max_size=3),
    logging=optional(
        level=st.sampled_from(["DEBUG", "INFO", "WARNING", "ERROR"]), json=st.booleans()
    ),
)


def assert_contains(expected: Any, actual: Any, path: str = "") -> None:
    """Every value given in `expected` is in `actual` (which also holds the defaults)."""
    if isinstance(expected, dict):
        for key, value in expected.items():
            assert_contains(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert len(expected) == len(actual), path
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            assert_contains(want, got, f"{path}[{index}]")
    else:
        assert expected == actual, path


@settings(max_examples=60, deadline=None)
@given(valid_configs)
def test_valid_configs_round_trip_through_dicts(data: dict[str, Any]) -> None:
    config = ConfigLoader.from_dict(escape_env(data), environ={})
    dumped = config.to_dict(reveal_secrets=True)
    assert_contains(data, dumped)
    assert ConfigLoader.from_dict(escape_env(dumped), environ={}) == config
    assert AgentFrameworkConfig.model_validate(config.model_dump()) == config


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(valid_configs)
def test_valid_configs_round_trip_through_files(tmp_path: Path, data: dict[str, Any]) -> None:
    config = ConfigLoader.from_dict(escape_env(data), environ={})
    written = escape_env(config.to_dict(reveal_secrets=True))
    # PyYAML's emitter writes U+0085 raw with allow_unicode=True, which its reader then takes
    # for a line break; the default escapes every non-ASCII character instead.
    yaml_path = write(tmp_path / "agent.yaml", yaml.safe_dump(written))
    json_path = write(tmp_path / "agent.json", json.dumps(written, ensure_ascii=False, indent=1))
    assert ConfigLoader.load(yaml_path, environ={}) == config
    assert ConfigLoader.load(json_path, environ={}) == config


out_of_range = st.floats(min_value=1.000001, max_value=1e9) | st.floats(
    min_value=-1e9, max_value=-1e-9
)
threshold_fields = st.sampled_from(
    [
        (lambda v: {"confidence": {"default_threshold": v}}, "confidence.default_threshold"),
        (lambda v: {"confidence": {"thresholds": {"OUTAGE": v}}}, "confidence.thresholds.OUTAGE"),
        (lambda v: {"threads": {"similarity_threshold": v}}, "threads.similarity_threshold"),
        (lambda v: {"intents": {"oos_threshold": v}}, "intents.oos_threshold"),
        (
            lambda v: {"intents": {"categories": [{"name": "A", "threshold": v}]}},
            "intents.categories[0].threshold",
        ),
    ]
)


@settings(max_examples=60, deadline=None)
@given(threshold_fields, out_of_range)
def test_out_of_range_thresholds_are_rejected_with_their_path(
    field: tuple[Callable[[float], dict[str, Any]], str], value: float
) -> None:
    build, dotted = field
    with pytest.raises(ConfigError) as caught:
        ConfigLoader.from_dict(build(value))
    assert [issue.path for issue in caught.value.issues] == [dotted]
    assert dotted in str(caught.value)


SECTIONS: dict[str | None, type[BaseModel]] = {
    name: field.annotation
    for name, field in AgentFrameworkConfig.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
}
SECTIONS[None] = AgentFrameworkConfig


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(list(SECTIONS)),
    st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True),
)
def test_unknown_keys_are_rejected_with_their_path(section: str | None, key: str) -> None:
    if key in SECTIONS[section].model_fields:
        return
    data = {key: 1} if section is None else {section: {key: 1}}
    with pytest.raises(ConfigError) as caught:
        ConfigLoader.from_dict(data)
    dotted = key if section is None else f"{section}.{key}"
    assert [issue.path for issue in caught.value.issues] == [dotted]
    assert f"{dotted}: unknown key" in str(caught.value)
