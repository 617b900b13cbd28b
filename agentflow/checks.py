"""System checks of the agents' settings: a bad embedder or intent encoder fails at start-up,
not at the first document a tenant adds or the first agent a worker builds."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, register

from agentflow.kernel.intents_encoder import choice_issue, configured_choice
from agentflow.knowledge import embedder_issues


@register()
def check_embedder(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return [
        Error(issue, hint="See docs/configuration.md, EMBEDDER.", id="agentflow.E001")
        for issue in embedder_issues()
    ]


@register()
def check_intent_encoder(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    issue = choice_issue(configured_choice())
    if issue is None:
        return []
    return [Error(issue, hint="See docs/configuration.md, INTENT_ENCODER.", id="agentflow.E002")]
