"""Imports fine but offers no plugin by any convention."""

from __future__ import annotations

VERSION = "1.0"
