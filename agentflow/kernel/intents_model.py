"""The offline intent classifier's fitted state as plain arrays, usable without scikit-learn.

Training needs scikit-learn (LinearSVC, TfidfVectorizer, StratifiedKFold, scipy.optimize),
whose import chain alone costs a process ~100 MB of resident memory. Classifying needs none of
it: `export_state` turns a trained `OfflineIntentClassifier` into arrays and JSON, `save`
writes them as one `.npz` file (no pickle), and `load_classifier` rebuilds a classifier whose
TF-IDF transform, SVM decision scores and nearest-example similarities are computed here with
numpy alone. The transform re-implements `TfidfVectorizer.transform` for the settings the
classifier uses (word and char_wb n-grams, lowercasing or the evidence preprocessor, sublinear
tf, idf, l2 norm), so verdicts match the scikit-learn objects (tests/kernel/test_intents_model).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agentflow.kernel.intents import (
    IntentCategory,
    Novelty,
    OfflineIntentClassifier,
    SentenceEncoder,
    _content_text,
)

# Bump when the saved layout or the meaning of a saved array changes.
FORMAT_VERSION = 1

_PREPROCESSORS: dict[str, Callable[[str], str]] = {
    "lowercase": str.lower,
    "content_text": _content_text,
}
_ANALYZERS = ("word", "char_wb")
_WHITE_SPACES = re.compile(r"\s\s+")  # as TfidfVectorizer's char_wb analyzer
_SEPARATOR = "\n"  # no term contains it: every analyzer splits on whitespace


class ModelFileError(ValueError):
    """A saved model that cannot be used (corrupt, another format, other categories)."""


class SparseRows:
    """Rows of a sparse matrix (CSR arrays), optionally followed by a dense column block."""

    def __init__(
        self,
        indptr: np.ndarray,
        indices: np.ndarray,
        data: np.ndarray,
        columns: int,
        dense: np.ndarray | None = None,
    ) -> None:
        self.indptr, self.indices, self.data, self.columns = indptr, indices, data, columns
        self.dense = dense

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def row(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        begin, end = self.indptr[index], self.indptr[index + 1]
        return self.indices[begin:end], self.data[begin:end]

    def with_dense(self, block: np.ndarray) -> SparseRows:
        return SparseRows(self.indptr, self.indices, self.data, self.columns, block)

    def __matmul__(self, other: PostingMatrix) -> np.ndarray:
        """Dense (rows x other's columns) product, as scipy's CSR @ CSR then toarray()."""
        out = np.zeros((len(self), other.columns), dtype=np.float32)
        for index in range(len(self)):
            columns, values = self.row(index)
            starts, ends = other.indptr[columns], other.indptr[columns + 1]
            lengths = ends - starts
            total = int(lengths.sum())
            if total == 0:
                continue
            # Positions of every posting of every feature of the row, in one gather.
            offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
            positions = offsets + np.arange(total)
            # float32 products added one by one in scipy's order: the same sums, bit for bit.
            products = np.repeat(values, lengths) * other.data[positions]
            np.add.at(out[index], other.indices[positions], products)
        return out


@dataclasses.dataclass(frozen=True)
class PostingMatrix:
    """A CSR matrix of features x training examples (the evidence examples, by category)."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    columns: int


@dataclasses.dataclass(frozen=True)
class TfidfBlock:
    """One fitted TfidfVectorizer: its analyzer settings, vocabulary and idf."""

    analyzer: str  # "word" or "char_wb"
    ngram_range: tuple[int, int]
    preprocessor: str  # a key of _PREPROCESSORS
    token_pattern: str
    vocabulary: Mapping[str, int]
    idf: np.ndarray

    def terms(self, text: str) -> list[str]:
        text = _PREPROCESSORS[self.preprocessor](text)
        if self.analyzer == "char_wb":
            return _char_wb_ngrams(text, self.ngram_range)
        return _word_ngrams(re.findall(self.token_pattern, text), self.ngram_range)

    def row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Sorted feature indices and their l2-normalised sublinear tf-idf weights."""
        counts: dict[int, int] = {}
        for term in self.terms(text):
            index = self.vocabulary.get(term)
            if index is not None:
                counts[index] = counts.get(index, 0) + 1
        indices = np.array(sorted(counts), dtype=np.int64)
        data = np.array([counts[i] for i in indices], dtype=np.float32)
        np.log(data, out=data)
        data += np.float32(1.0)
        data *= self.idf[indices]
        # As sklearn's l2 normalize: float32 squares summed in order in double, division in
        # double, so that the weights are bit for bit the same.
        if len(data):
            norm = math.sqrt(float(np.cumsum(data * data, dtype=np.float64)[-1]))
            if norm > 0:
                data = (data.astype(np.float64) / norm).astype(np.float32)
        return indices, data


def _word_ngrams(tokens: list[str], ngram_range: tuple[int, int]) -> list[str]:
    low, high = ngram_range
    grams = list(tokens) if low == 1 else []
    for n in range(max(low, 2), min(high, len(tokens)) + 1):
        grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return grams


def _char_wb_ngrams(text: str, ngram_range: tuple[int, int]) -> list[str]:
    low, high = ngram_range
    grams: list[str] = []
    for word in _WHITE_SPACES.sub(" ", text).split():
        padded = f" {word} "
        for n in range(low, high + 1):
            grams.extend(padded[i : i + n] for i in range(max(len(padded) - n, 0) + 1))
            if len(padded) <= n:  # a short word counts once, whatever the n
                break
    return grams


class TextSpace:
    """Numpy twin of intents._TextSpace: concatenated blocks scaled to unit-norm rows."""

    def __init__(self, blocks: Sequence[TfidfBlock]) -> None:
        self.blocks = tuple(blocks)
        self.scale = 1.0 / math.sqrt(len(self.blocks))
        self._offsets = np.cumsum([0, *(len(block.idf) for block in self.blocks)])

    def transform(self, texts: Sequence[str]) -> SparseRows:
        indptr, indices, data = [0], [], []
        for text in texts:
            for block, offset in zip(self.blocks, self._offsets, strict=False):
                columns, values = block.row(text)
                indices.append(columns + offset)
                data.append(values)
            indptr.append(indptr[-1] + sum(len(i) for i in indices[-len(self.blocks) :]))
        return SparseRows(
            np.asarray(indptr, dtype=np.int64),
            np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64),
            (np.concatenate(data) if data else np.zeros(0, np.float32)) * np.float32(self.scale),
            int(self._offsets[-1]),
        )


class LinearModel:
    """A fitted one-vs-rest linear SVM's decision function (LinearSVC.decision_function)."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.coef = coef
        self.intercept = intercept
        self._weights = np.ascontiguousarray(coef.T)  # features x classes: rows gather fast

    def decision_function(self, features: SparseRows) -> np.ndarray:
        scores = np.zeros((len(features), self._weights.shape[1]))
        for index in range(len(features)):
            columns, values = features.row(index)
            if features.dense is not None:  # the dense block's nonzeros follow, as in a CSR
                dense = features.dense[index]
                present = np.flatnonzero(dense)
                columns = np.concatenate([columns, present + features.columns])
                values = np.concatenate([values, dense[present]])
            if len(columns):
                # Summed in order in double, as scipy's sparse x dense product.
                products = values.astype(np.float64)[:, np.newaxis] * self._weights[columns]
                scores[index] = np.cumsum(products, axis=0)[-1]
        scores += self.intercept
        return scores.ravel() if scores.shape[1] == 1 else scores


# ------------------------------------------------------------------ export (needs the fitted
# scikit-learn objects, so only the training process calls it)


def export_state(classifier: OfflineIntentClassifier) -> tuple[dict[str, Any], dict[str, Any]]:
    """(JSON-able metadata, named arrays) of a trained classifier's fitted state."""
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "categories": [category.name for category in classifier.categories],
        "encoder": None if classifier.encoder is None else classifier.encoder.name,
        "temperature": float(classifier.temperature),
    }
    arrays: dict[str, Any] = {"category_starts": classifier._category_starts}
    for space in ("features", "evidence"):
        meta[space] = _export_space(getattr(classifier, f"_{space}"), space, arrays)
    matrix = classifier._evidence_matrix
    arrays.update(
        evidence_indptr=matrix.indptr, evidence_indices=matrix.indices, evidence_data=matrix.data
    )
    meta["evidence_columns"] = int(matrix.shape[1])
    if classifier._encoded_matrix is not None:
        arrays["encoded_matrix"] = classifier._encoded_matrix
    if classifier._model is not None:
        arrays["coef"] = classifier._model.coef_
        arrays["intercept"] = classifier._model.intercept_
    meta["novelty"] = None
    if classifier.novelty is not None:
        meta["novelty"] = {}
        for field in dataclasses.fields(classifier.novelty):
            value = getattr(classifier.novelty, field.name)
            if isinstance(value, np.ndarray):
                arrays[f"novelty_{field.name}"] = value
            else:
                meta["novelty"][field.name] = value
    return meta, arrays


def _export_space(space: Any, prefix: str, arrays: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = []
    for index, vectorizer in enumerate(space._vectorizers):
        if vectorizer.preprocessor is _content_text:
            preprocessor = "content_text"
        elif vectorizer.preprocessor is None and vectorizer.lowercase:
            preprocessor = "lowercase"
        else:
            raise ValueError(f"unsupported preprocessor {vectorizer.preprocessor!r}")
        supported = (
            vectorizer.analyzer in ("word", "char_wb")
            and vectorizer.sublinear_tf
            and vectorizer.use_idf
            and vectorizer.norm == "l2"
            and not vectorizer.binary
            and vectorizer.stop_words is None
            and vectorizer.strip_accents is None
        )
        if not supported:
            raise ValueError(f"unsupported TfidfVectorizer settings: {vectorizer!r}")
        terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.__getitem__)
        if any(_SEPARATOR in term for term in terms):
            raise ValueError("a vocabulary term contains a line break")
        arrays[f"{prefix}{index}_terms"] = np.frombuffer(
            _SEPARATOR.join(terms).encode("utf-8"), dtype=np.uint8
        )
        arrays[f"{prefix}{index}_idf"] = vectorizer.idf_
        blocks.append(
            {
                "analyzer": vectorizer.analyzer,
                "ngram_range": list(vectorizer.ngram_range),
                "preprocessor": preprocessor,
                "token_pattern": vectorizer.token_pattern,
            }
        )
    return blocks


def save(path: Path, meta: Mapping[str, Any], arrays: Mapping[str, Any]) -> None:
    """Write atomically: a reader sees the previous file or the whole new one, and two
    writers of the same model race harmlessly (the last rename wins, both are complete)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, meta=payload, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# -------------------------------------------------------------- load (numpy only)


def load(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and arrays of a saved model; `ModelFileError` if it is unreadable."""
    path = Path(path)
    try:
        # Our own handle: np.load leaves its file open when the archive is corrupt.
        with path.open("rb") as file:
            archive = np.load(file, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"unreadable intent model {path}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise ModelFileError(f"intent model {path} has another format")
    return meta, arrays


def load_classifier(
    path: str | Path,
    categories: Sequence[IntentCategory],
    *,
    oos_threshold: float | None = None,
    encoder: SentenceEncoder | None = None,
) -> OfflineIntentClassifier:
    """A classifier from a saved model of exactly these categories and this encoder."""
    meta, arrays = load(path)
    expected_encoder = None if encoder is None else encoder.name
    if meta["categories"] != [category.name for category in categories]:
        raise ModelFileError(f"intent model {path} was trained on other categories")
    if meta["encoder"] != expected_encoder:
        raise ModelFileError(f"intent model {path} used encoder {meta['encoder']!r}")
    try:
        state = _fitted_state(meta, arrays)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ModelFileError(f"intent model {path} is incomplete: {exc}") from exc
    options = {} if oos_threshold is None else {"oos_threshold": oos_threshold}
    return OfflineIntentClassifier.restored(categories, state, encoder=encoder, **options)


def _fitted_state(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    novelty = None
    if meta["novelty"] is not None:
        values: dict[str, Any] = {
            field.name: arrays[f"novelty_{field.name}"]
            if f"novelty_{field.name}" in arrays
            else meta["novelty"][field.name]
            for field in dataclasses.fields(Novelty)
        }
        novelty = Novelty(**values)
    return {
        "_features": _load_space(meta["features"], "features", arrays),
        "_evidence": _load_space(meta["evidence"], "evidence", arrays),
        "_evidence_matrix": PostingMatrix(
            arrays["evidence_indptr"],
            arrays["evidence_indices"],
            arrays["evidence_data"],
            int(meta["evidence_columns"]),
        ),
        "_encoded_matrix": arrays.get("encoded_matrix"),
        "_category_starts": arrays["category_starts"],
        "_model": LinearModel(arrays["coef"], arrays["intercept"]) if "coef" in arrays else None,
        "temperature": float(meta["temperature"]),
        "novelty": novelty,
    }


def _load_space(
    blocks: Sequence[Mapping[str, Any]], prefix: str, arrays: Mapping[str, np.ndarray]
) -> TextSpace:
    loaded = []
    for index, block in enumerate(blocks):
        terms = arrays[f"{prefix}{index}_terms"].tobytes().decode("utf-8").split(_SEPARATOR)
        idf = arrays[f"{prefix}{index}_idf"]
        known = block["preprocessor"] in _PREPROCESSORS and block["analyzer"] in _ANALYZERS
        if len(terms) != len(idf) or not known:
            raise ValueError(f"block {prefix}{index} does not match its idf")
        loaded.append(
            TfidfBlock(
                analyzer=block["analyzer"],
                ngram_range=(int(block["ngram_range"][0]), int(block["ngram_range"][1])),
                preprocessor=block["preprocessor"],
                token_pattern=block["token_pattern"],
                vocabulary={term: i for i, term in enumerate(terms)},
                idf=idf,
            )
        )
    return TextSpace(loaded)
