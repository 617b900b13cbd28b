"""The built-in blueprints' agents (Django-free): each a `StepAgent` with a default planner."""

from agentflow.kernel.blueprints.base import BlueprintRunner, StepAgent, finish, reply_of

__all__ = ["BlueprintRunner", "StepAgent", "finish", "reply_of"]
