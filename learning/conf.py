"""Typed reads of the learning app's ``AGENTFLOW`` settings (see docs/configuration.md)."""

from __future__ import annotations

# One accessor for every app's settings: this module keeps learning's import path.
from agentflow.core.conf import setting_float, setting_int, setting_list, setting_str

__all__ = ["setting_float", "setting_int", "setting_list", "setting_str"]
