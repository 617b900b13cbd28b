"""The built-in blueprints' agents (Django-free): each a `StepAgent` with a default planner."""

from agentflow.kernel.blueprints.base import StepAgent, finish

__all__ = ["StepAgent", "finish"]
