"""AgentFrameworkBuilder: config sources, validation at build time, plugins, stores, providers."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agentflow import (
    AgentFrameworkBuilder,
    AgentFrameworkConfig,
    BaseHandler,
    ConfigError,
    HandlerResult,
    IntentCategory,
)
from agentflow.kernel.inmemory import InMemoryKnowledgeStore, InMemorySessionStore
from agentflow.kernel.llm.embeddings import OfflineEmbedder
from agentflow.kernel.llm.openai_provider import OpenAIProvider
from tests.kernel.pipeline_fakes import CATEGORIES, ScriptedLLM

YAML_CONFIG = """\
name: helpdesk
session:
  ttl_seconds: 120
intents:
  categories:
    - name: LOGIN
      description: Login problems
      examples: ["I can't log in", "my login is broken", "password reset fails"]
    - name: BILLING
      examples: ["my invoice is wrong", "I was charged twice", "refund please"]
      threshold: 0.0
prompts:
  escalation_message: "A human will take it from here."
"""


async def test_config_from_yaml_file_drives_the_agent(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(YAML_CONFIG)

    agent = await AgentFrameworkBuilder().with_config(path).build(ScriptedLLM())
    reply = await agent.process_message("u1", "I was charged twice")

    assert agent.name == "helpdesk"
    assert agent.config.session.ttl_seconds == 120
    assert reply.intent == "BILLING"
    assert reply.escalated  # the category's threshold 0.0 from the file
    assert reply.content == "A human will take it from here."


async def test_config_from_json_file_dict_and_object(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    path.write_text(json.dumps({"name": "from-json"}))

    from_json = await AgentFrameworkBuilder().with_config(str(path)).build()
    from_dict = await AgentFrameworkBuilder().with_config({"name": "from-dict"}).build()
    from_object = await (
        AgentFrameworkBuilder().with_config(AgentFrameworkConfig(name="from-object")).build()
    )

    assert [from_json.name, from_dict.name, from_object.name] == [
        "from-json",
        "from-dict",
        "from-object",
    ]


@pytest.mark.parametrize(
    ("builder", "path"),
    [
        (
            lambda: AgentFrameworkBuilder().with_config({"session": {"ttl_seconds": -1}}),
            "session.ttl_seconds",
        ),
        (lambda: AgentFrameworkBuilder().with_config({"sesion": {}}), "sesion"),
        (
            lambda: AgentFrameworkBuilder().with_confidence_thresholds({"OUTAGE": 1.5}),
            "confidence.thresholds.OUTAGE",
        ),
        (lambda: AgentFrameworkBuilder().with_logging("LOUD"), "logging.level"),
        (lambda: AgentFrameworkBuilder().with_rate_limiting(0), "rate_limit.requests_per_minute"),
        (
            lambda: AgentFrameworkBuilder().with_intent_categories(
                [IntentCategory("A", examples=["x"]), IntentCategory("A", examples=["y"])]
            ),
            "intents.categories",
        ),
        (
            lambda: AgentFrameworkBuilder().with_intent_categories([{"name": "OUT_OF_SCOPE"}]),
            "intents.categories",
        ),
        (
            lambda: AgentFrameworkBuilder().with_intent_categories(["GREETING"]),
            "intent categories[0]",
        ),
        (lambda: AgentFrameworkBuilder().with_plugins(["no_such_package.plugin"]), "plugins[0]"),
        (lambda: AgentFrameworkBuilder().with_tools({"orders": {}}), "tools"),
    ],
)
async def test_bad_configuration_fails_at_build_naming_the_field(builder: Any, path: str) -> None:
    pending = builder()  # nothing is validated before build()

    with pytest.raises(ConfigError) as error:
        await pending.build()

    assert path in str(error.value)


async def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        await AgentFrameworkBuilder().with_config(tmp_path / "missing.yaml").build()


async def test_an_unusable_llm_client_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="llm_client"):
        await AgentFrameworkBuilder().build(object())


async def test_offline_by_default_llm_classifier_with_a_real_provider() -> None:
    offline = await AgentFrameworkBuilder().with_intent_categories(CATEGORIES).build()
    online = await AgentFrameworkBuilder().with_intent_categories(CATEGORIES).build(ScriptedLLM())

    offline_reply = await offline.process_message("u1", "I can't log in")
    online_reply = await online.process_message("u1", "I can't log in")

    assert offline_reply.metadata["intent_method"] == "offline"
    assert offline_reply.metadata["offline"] is True
    # The scripted provider refuses JSON, so the LLM classifier falls back to the offline one.
    assert online_reply.metadata["intent_method"] == "fallback"
    assert online_reply.metadata["offline"] is False


async def test_openai_provider_from_config_with_env_substitution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", "sk-from-env")
    agent = await (
        AgentFrameworkBuilder()
        .with_config(
            {
                "llm": {
                    "providers": [
                        {
                            "kind": "openai",
                            "model": "gpt-4o-mini",
                            "base_url": "http://127.0.0.1:9/v1",
                            "api_key": "${TEST_LLM_KEY}",
                        },
                        {"kind": "offline"},
                    ]
                }
            }
        )
        .build()
    )

    chain = agent.llm.inner  # the guarded door, then the failover chain
    assert [type(p).__name__ for p in chain.providers] == ["OpenAIProvider", "OfflineProvider"]
    assert isinstance(chain.providers[0], OpenAIProvider)
    assert agent.config.llm.providers[0].api_key.get_secret_value() == "sk-from-env"


class EchoHandler(BaseHandler):
    priority = 10

    async def can_handle(self, intent: Any, context: Any) -> bool:
        return intent.name == "PLUGIN_TOPIC"

    async def handle(
        self, message: str, intent: Any, context: Any, session: Any, thread: Any
    ) -> HandlerResult:
        return HandlerResult(context.prompts["plugin_greeting"], confidence=1.0)


class ExamplePlugin:
    def get_intent_categories(self) -> list[IntentCategory]:
        return [
            IntentCategory(
                "PLUGIN_TOPIC", "Plugin things", ["tell me about the plugin", "plugin question"]
            )
        ]

    def get_handlers(self) -> list[BaseHandler]:
        return [EchoHandler()]

    def get_prompts(self) -> dict[str, str]:
        return {"plugin_greeting": "Handled by the plugin."}


async def test_plugins_by_module_path_contribute_categories_handlers_and_prompts() -> None:
    agent = await (
        AgentFrameworkBuilder()
        .with_intent_categories(CATEGORIES)
        .with_plugins([f"{__name__}:ExamplePlugin"])
        .build(ScriptedLLM())
    )

    reply = await agent.process_message("u1", "I have a plugin question")

    assert reply.intent == "PLUGIN_TOPIC"
    assert reply.content == "Handled by the plugin."
    assert reply.metadata["handler"] == "EchoHandler"
    assert agent.config.plugins == [f"{__name__}:ExamplePlugin"]


async def test_auto_discover_loads_entry_point_plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "discovered_plugin_mod.py").write_text(
        textwrap.dedent("""
        from agentflow import IntentCategory

        class Plugin:
            def get_intent_categories(self):
                return [IntentCategory("DISCOVERED", "found", ["discovered plugin topic"])]
    """)
    )
    dist = tmp_path / "discovered_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: discovered-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[agentflow.plugins]\ndiscovered = discovered_plugin_mod:Plugin\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "discovered_plugin_mod", raising=False)

    agent = await (
        AgentFrameworkBuilder().with_intent_categories(CATEGORIES).auto_discover_plugins().build()
    )

    assert "DISCOVERED" in [c.name for c in agent.config.intents.categories]


async def test_custom_stores_are_used_and_knowledge_is_loaded_into_them() -> None:
    sessions = InMemorySessionStore()
    knowledge = InMemoryKnowledgeStore(OfflineEmbedder())
    agent = await (
        AgentFrameworkBuilder()
        .with_stores(sessions=sessions, knowledge=knowledge)
        .with_knowledge(["Passwords are reset from the sign-in page.", {"text": "Second doc"}])
        .build()
    )

    reply = await agent.process_message("u1", "How are passwords reset?")

    assert agent.sessions.store is sessions
    assert agent.knowledge is knowledge
    assert len(knowledge) == 2
    assert reply.knowledge_ids == ["doc-1"]
    assert await sessions.get("u1") is not None


async def test_quick_start_placeholder_ellipsis_is_ignored() -> None:
    agent = await (
        AgentFrameworkBuilder()
        .with_intent_categories([IntentCategory("GREETING", "Greetings", ["hello", "hi"]), ...])
        .build()
    )

    assert [c.name for c in agent.config.intents.categories] == ["GREETING"]
