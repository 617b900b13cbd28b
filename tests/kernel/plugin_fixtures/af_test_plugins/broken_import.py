"""Fails at import time, like a plugin whose dependency is not installed."""

from __future__ import annotations

import af_test_plugins_missing_dependency  # noqa: F401

plugin = object()
