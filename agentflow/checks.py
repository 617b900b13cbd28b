"""System checks of the agents' settings: a bad embedder fails at start-up, not at the first
document a tenant adds."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error, register

from agentflow.knowledge import embedder_issues


@register()
def check_embedder(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return [
        Error(issue, hint="See docs/configuration.md, EMBEDDER.", id="agentflow.E001")
        for issue in embedder_issues()
    ]
