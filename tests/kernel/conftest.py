"""Fixtures of the intent encoder tests (tests/kernel/test_intents_encoder.py, _minilm.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from agentflow.kernel.intents_encoder import _installed


@pytest.fixture
def fresh_encoders() -> Iterator[None]:
    """Encoders load once per process: let a test see the install it simulates."""
    _installed.cache_clear()
    yield
    _installed.cache_clear()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails: a model that would fetch from a hub raises."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
