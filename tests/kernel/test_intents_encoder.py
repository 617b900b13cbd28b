"""The optional sentence encoder of the offline intent classifier (the `quality` extra, issue 21):
loaded offline from the installed wheel, used when present, and a clean lexical fallback when
the package is missing."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from agentflow.cli import main
from agentflow.kernel.intents import OUT_OF_SCOPE, OfflineIntentClassifier
from agentflow.kernel.intents_encoder import (
    WORDLLAMA_MODEL,
    WordLlamaEncoder,
    default_encoder,
)
from tests.kernel.intent_data import SUPPORT


def test_without_the_extra_the_classifier_stays_lexical(
    monkeypatch: pytest.MonkeyPatch, fresh_encoders: None
) -> None:
    monkeypatch.setitem(sys.modules, "wordllama", None)  # `import wordllama` -> ImportError

    with pytest.raises(ImportError):
        WordLlamaEncoder()
    assert default_encoder() is None
    classifier = OfflineIntentClassifier(SUPPORT)
    assert classifier.encoder is None
    assert classifier.classify_sync("please refund my invoice").name == "BILLING"
    assert classifier.classify_sync("what's the weather in Paris").name == OUT_OF_SCOPE


def test_the_encoder_loads_from_the_installed_package_without_network(
    no_network: None, fresh_encoders: None
) -> None:
    pytest.importorskip("wordllama")

    encoder = default_encoder()

    assert encoder is not None
    assert encoder.name == WORDLLAMA_MODEL
    rows = encoder.encode(["my card never arrived", "", "   "])
    assert rows.shape == (3, 256)
    assert rows.dtype == np.float32
    assert np.linalg.norm(rows[0]) == pytest.approx(1.0, abs=1e-5)
    assert not rows[1:].any()  # no tokens, no direction


def test_the_encoder_puts_a_paraphrase_closer_than_an_unrelated_question() -> None:
    pytest.importorskip("wordllama")
    encoder = WordLlamaEncoder()

    anchor, paraphrase, unrelated = encoder.encode(
        [
            "my card still hasn't arrived",
            "I have been waiting for my new card for weeks",
            "what is the capital of France",
        ]
    )

    assert float(anchor @ paraphrase) > float(anchor @ unrelated) + 0.3


def test_the_mapped_encoder_gives_wordllamas_own_vectors_without_a_private_copy() -> None:
    """The float16 matrix is read through a memory map (shared page cache, no 32 MB float32
    copy per process), and the vectors are exactly those of WordLlamaInference."""
    wordllama = pytest.importorskip("wordllama")
    from safetensors import safe_open
    from wordllama.tokenizers import tokenizer_from_file

    encoder = WordLlamaEncoder()
    package = Path(wordllama.__file__).parent
    with safe_open(str(package / "weights" / "l2_supercat_256.safetensors"), "np") as weights:
        matrix = weights.get_tensor("embedding.weight")
    reference = wordllama.WordLlamaInference(
        matrix, tokenizer_from_file("l2_supercat_tokenizer_config.json")
    )
    texts = ["my card never arrived", "why was I charged twice?", "hello"] * 30  # > one batch

    ours = encoder.encode(texts)

    assert isinstance(encoder._embedding, np.memmap)
    assert encoder._embedding.dtype == np.float16
    np.testing.assert_allclose(ours, reference.embed(texts, norm=True), atol=1e-6)


def test_with_the_extra_the_classifier_uses_the_encoder(fresh_encoders: None) -> None:
    pytest.importorskip("wordllama")

    with_encoder = OfflineIntentClassifier(SUPPORT)
    lexical = OfflineIntentClassifier(SUPPORT, encoder=None)

    assert with_encoder.encoder is not None
    assert with_encoder.encoder.name == WORDLLAMA_MODEL
    assert lexical.encoder is None
    for classifier in (with_encoder, lexical):
        assert classifier.classify_sync("I forgot my password again").name == "LOGIN"
        assert classifier.classify_sync("who won the football match").name == OUT_OF_SCOPE


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("I am unable to sign in", "LOGIN"),
        ("my account is locked out", "LOGIN"),
        ("my payment went through two times", "BILLING"),
        ("money back please", "BILLING"),
        ("what's the weather in Paris", OUT_OF_SCOPE),
        ("tell me a joke", OUT_OF_SCOPE),
        ("how do I cook pasta", OUT_OF_SCOPE),
        ("the app keeps crashing", OUT_OF_SCOPE),
    ],
)
def test_the_encoder_accepts_paraphrases_without_a_shared_word_and_refuses_off_topic(
    message: str, expected: str
) -> None:
    pytest.importorskip("wordllama")
    classifier = OfflineIntentClassifier(SUPPORT, encoder=WordLlamaEncoder())

    assert classifier.classify_sync(message).name == expected
    if expected != OUT_OF_SCOPE:
        # Lexical evidence alone refuses them: they share no content word with an example.
        assert OfflineIntentClassifier(SUPPORT, encoder=None).classify_sync(message).out_of_scope


def test_eval_intents_can_measure_both_ways(tmp_path: Path) -> None:
    pytest.importorskip("wordllama")
    rows = [(e, c.name) for c in SUPPORT for e in c.examples]
    train = tmp_path / "train.csv"
    train.write_text("text,category\n" + "".join(f'"{t}",{c}\n' for t, c in rows))

    reports = {}
    for choice in ("auto", "none"):
        out = io.StringIO()
        code = main(
            ["eval-intents", "--train", str(train), "--test", str(train), "--encoder", choice],
            stdout=out,
        )
        assert code == 0
        reports[choice] = json.loads(out.getvalue())

    assert reports["auto"]["encoder"] == WORDLLAMA_MODEL
    assert reports["none"]["encoder"] is None
    assert reports["none"]["accuracy"] == 1.0  # its own training rows
