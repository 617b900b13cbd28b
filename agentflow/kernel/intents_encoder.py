"""An optional sentence encoder for the offline intent classifier (the `quality` extra).

`pip install 'agentflow[quality]'` installs `wordllama`, whose wheel ships a 256-dimension
static token-embedding model (`l2_supercat`, distilled from Llama-2 hidden states, ~19 MB, no
torch). A message's vector is the mean of its tokens' vectors: paraphrases that share no word
("my card never came" / "still waiting on my card") land close together, which TF-IDF n-grams
cannot see. The weights are read from the installed package and nothing is downloaded: the
package's own `WordLlama.load()` looks for its tokenizer in a folder the wheel does not have
and would fetch it from the network, so we open the shipped files ourselves.

Without the extra, `default_encoder()` is None and the classifier is purely lexical.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

WORDLLAMA_MODEL = "wordllama-l2_supercat-256"
_WEIGHTS = Path("weights") / "l2_supercat_256.safetensors"
_TOKENIZER = "l2_supercat_tokenizer_config.json"


class SentenceEncoder(Protocol):
    """Turns texts into L2-normalised float32 rows (the zero row for a text with no tokens)."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class WordLlamaEncoder:
    """wordllama's shipped model; raises ImportError when the `quality` extra is absent."""

    name = WORDLLAMA_MODEL

    def __init__(self) -> None:
        root = logging.getLogger()
        # wordllama calls logging.basicConfig(level=INFO) on import; a handler on the root logger
        # makes that a no-op, so the host application's logging stays as it configured it.
        guard = logging.NullHandler()
        root.addHandler(guard)
        try:
            import wordllama
            from safetensors import safe_open
            from wordllama.tokenizers import tokenizer_from_file
        finally:
            root.removeHandler(guard)
        package = Path(wordllama.__file__).parent
        with safe_open(str(package / _WEIGHTS), framework="np", device="cpu") as weights:
            embedding = np.asarray(weights.get_tensor("embedding.weight"), dtype=np.float32)
        self._inference: Any = wordllama.WordLlamaInference(
            embedding, tokenizer_from_file(_TOKENIZER)
        )
        self.dimensions = int(embedding.shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        present = [i for i, text in enumerate(texts) if text.strip()]
        if present:
            vectors = np.asarray(
                self._inference.embed([texts[i] for i in present], norm=False), dtype=np.float32
            )
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            rows[present] = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
        return rows


@lru_cache(maxsize=1)
def default_encoder() -> SentenceEncoder | None:
    """The installed encoder, loaded once per process; None without the `quality` extra."""
    try:
        return WordLlamaEncoder()
    except ImportError:
        return None
    except (OSError, ValueError, KeyError) as exc:  # a broken install: stay lexical, say why
        logger.warning("wordllama is installed but could not be loaded: %s", exc)
        return None
