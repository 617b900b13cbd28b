"""The provider that needs no network and no key (SPEC 2, 4.6): the demo's and tests' default.

It answers *extractively* from the context the pipeline gathered and passes in
``metadata={"question": str, "context": [{"kind", "id", "title", "text", "score"}, ...]}``:

1. Each item's relevance blends its retrieval similarity with how much of the question's
   content words it contains: ``relevance = 0.7 * clamp(score, 0, 1) + 0.3 * coverage``.
2. The kind says how much an item can be trusted to answer on its own; the item with the
   highest ``kind_weight * relevance`` wins (golden path 1.0: a human approved that answer;
   knowledge 0.85: the right sentences still have to be picked; memory 0.6: a past case).
3. A golden path is answered with its approved text verbatim; a knowledge article or memory
   with its best-matching sentence and the sentences after it while they stay on topic or read
   as further steps (steps usually follow the sentence that names the task), within a budget.
4. ``confidence = kind_weight * relevance``, within [0, 1]. Below ``min_confidence`` (and with
   no context at all) the answer is an honest "I don't know, a person will follow up" with
   that low confidence, so the pipeline escalates it.

Every response says what it is: ``metadata = {"offline": True, "confidence": float,
"source": {"kind", "id", "title", "score"} | None, ...}``. Usage is estimated at about four
characters a token so budgets and dashboards still see the call; the cost is 0.

With ``json_schema`` it returns schema-valid JSON built from what it can do offline: an
``enum`` (such as an intent name) is chosen by text similarity to the question, using
``metadata["categories"]`` descriptions and examples when given; ``confidence``-like numbers
carry that similarity; ``answer``-like strings carry the extractive answer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from agentflow.kernel.costs import estimate_tokens, estimate_usage
from agentflow.kernel.llm.base import (
    ChatMessage,
    EmbeddingResponse,
    InvalidResponse,
    LLMResponse,
    RequestRejected,
    TokenUsage,
    ToolSpec,
)
from agentflow.kernel.llm.embeddings import STOP_WORDS, OfflineEmbedder, cosine, tokenize

__all__ = ["DONT_KNOW_ANSWER", "OFFLINE_MODEL", "OfflineProvider"]

OFFLINE_MODEL = "offline-extractive"
DONT_KNOW_ANSWER = (
    "I'm not sure about that, and I'd rather not guess. I've passed your question to our "
    "team and a person will follow up with you shortly."
)

DEFAULT_KIND_WEIGHTS: Mapping[str, float] = {"golden_path": 1.0, "knowledge": 0.85, "memory": 0.6}
_UNKNOWN_KIND_WEIGHT = 0.5
_SIMILARITY_SHARE = 0.7  # the rest of relevance is lexical coverage of the question

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")
_STEP_START = re.compile(
    r"^(\d+[.)]|[-*\u2022]|(then|next|finally|after that|afterwards|once)\b)", re.IGNORECASE
)
_FOLLOW_SHARE = 0.3  # a following sentence this much less relevant than the best ends the answer
_SUFFIXES = ("ing", "ed", "es", "s")
_CONFIDENCE_FIELDS = ("confidence", "score", "probability", "similarity")
_ANSWER_FIELDS = ("answer", "response", "reply", "content", "text", "message")
_OUT_OF_SCOPE = "OUT_OF_SCOPE"


@dataclass(frozen=True, slots=True)
class _Item:
    kind: str
    id: str
    title: str
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class _Choice:
    item: _Item
    relevance: float
    confidence: float


def _stem(token: str) -> str:
    for suffix in _SUFFIXES:
        if len(token) > len(suffix) + 2 and token.endswith(suffix):
            return token[: -len(suffix)]
    return token


def _content_words(text: str) -> set[str]:
    return {_stem(t) for t in tokenize(text) if t not in STOP_WORDS}


def _coverage(question_words: set[str], text: str) -> float:
    if not question_words:
        return 0.0
    return len(question_words & _content_words(text)) / len(question_words)


def _clamp(value: float, low: float = 0.0, high: float = 1.0) -> float:
    return min(max(value, low), high)


class OfflineProvider:
    """Extractive answers from pipeline context, honest metadata, zero cost, no network."""

    def __init__(
        self,
        *,
        name: str = "offline",
        model: str = OFFLINE_MODEL,
        embedder: OfflineEmbedder | None = None,
        kind_weights: Mapping[str, float] | None = None,
        min_confidence: float = 0.2,
        max_answer_chars: int = 700,
        dont_know_answer: str = DONT_KNOW_ANSWER,
    ) -> None:
        self.name = name
        self.model = model
        self.embedder = embedder or OfflineEmbedder()
        self.kind_weights = dict(DEFAULT_KIND_WEIGHTS if kind_weights is None else kind_weights)
        self.min_confidence = min_confidence
        self.max_answer_chars = max_answer_chars
        self.dont_know_answer = dont_know_answer

    async def chat(
        self,
        messages: list[ChatMessage],
        *,
        model: str | None = None,
        tools: list[ToolSpec] | None = None,
        json_schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> LLMResponse:
        # Offline answers never call tools and are deterministic: ``tools`` and
        # ``temperature`` have nothing to act on.
        del tools, temperature
        meta = metadata or {}
        question = str(meta.get("question") or _last_user_message(messages))
        items = _parse_context(meta.get("context"))
        choice = self._choose(question, items)
        answer = self._answer(question, choice)
        if max_tokens is not None and max_tokens > 0:
            answer = answer[: max_tokens * 4]
        out_meta: dict[str, Any] = {
            "offline": True,
            "confidence": round(choice.confidence, 4) if choice else 0.0,
            "source": _source(choice.item) if choice else None,
        }
        if choice is None:
            out_meta["reason"] = "no context item relevant enough" if items else "no context"
        content = answer
        if json_schema is not None:
            value = self._json_answer(question, json_schema, meta, answer, choice)
            content = json.dumps(value)
            out_meta["json"] = value
            out_meta["method"] = "offline-similarity"
        context_text = [item.title + "\n" + item.text for item in items]
        usage = TokenUsage(
            prompt_tokens=estimate_usage([*messages, *context_text], 0).prompt_tokens,
            completion_tokens=estimate_tokens(content),
        )
        return LLMResponse(
            content=content,
            model=model or self.model,
            provider=self.name,
            usage=usage,
            cost_usd=0.0,
            metadata=out_meta,
        )

    async def embed(self, texts: list[str], *, model: str | None = None) -> EmbeddingResponse:
        return await self.embedder.embed(texts, model=model)

    # ----------------------------------------------------------------------- answering

    def _choose(self, question: str, items: Sequence[_Item]) -> _Choice | None:
        words = _content_words(question)
        best: _Choice | None = None
        for item in items:
            relevance = _SIMILARITY_SHARE * _clamp(item.score) + (1 - _SIMILARITY_SHARE) * (
                _coverage(words, f"{item.title}\n{item.text}")
            )
            weight = self.kind_weights.get(item.kind, _UNKNOWN_KIND_WEIGHT)
            confidence = _clamp(weight * relevance)
            if best is None or confidence > best.confidence:
                best = _Choice(item, relevance, confidence)
        if best is None or best.confidence < self.min_confidence:
            return None
        return best

    def _answer(self, question: str, choice: _Choice | None) -> str:
        if choice is None:
            return self.dont_know_answer
        if choice.item.kind == "golden_path":
            return choice.item.text.strip()
        return self._extract(question, choice.item.text)

    def _extract(self, question: str, text: str) -> str:
        """The sentence that best matches the question and those after it, within budget."""
        sentences = [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]
        if not sentences:
            return text.strip()
        if sum(len(s) + 1 for s in sentences) <= self.max_answer_chars:
            return " ".join(sentences)
        words = _content_words(question)
        q_vec = self.embedder.embed_one(question)
        scores = [
            0.5 * _coverage(words, s) + 0.5 * cosine(q_vec, self.embedder.embed_one(s))
            for s in sentences
        ]
        start = max(range(len(sentences)), key=lambda i: (scores[i], -i))
        floor = _FOLLOW_SHARE * scores[start]
        picked: list[str] = []
        used = 0
        for index in range(start, len(sentences)):
            sentence = sentences[index]
            if picked and used + len(sentence) + 1 > self.max_answer_chars:
                break
            # Keep going while the text stays on topic or reads as the next step.
            if picked and scores[index] < floor and not _STEP_START.match(sentence):
                break
            picked.append(sentence)
            used += len(sentence) + 1
        return " ".join(picked)

    # -------------------------------------------------------------------- JSON answers

    def _json_answer(
        self,
        question: str,
        schema: dict[str, Any],
        meta: Mapping[str, Any],
        answer: str,
        choice: _Choice | None,
    ) -> Any:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.exceptions.SchemaError as exc:
            raise RequestRejected(f"invalid JSON schema for the answer: {exc.message}") from exc
        filler = _SchemaFiller(self.embedder, question, _category_texts(meta), answer, choice)
        value = filler.fill(schema, name="")
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(schema).iter_errors(value)
        )
        if error is not None:
            raise InvalidResponse(
                f"offline provider cannot satisfy this schema: {error.message}",
                response=LLMResponse(
                    content=json.dumps(value),
                    model=self.model,
                    provider=self.name,
                    metadata={"offline": True, "confidence": 0.0, "source": None},
                ),
            )
        return value


class _SchemaFiller:
    """Builds a value for a JSON schema from offline signals (similarity, extractive answer)."""

    def __init__(
        self,
        embedder: OfflineEmbedder,
        question: str,
        category_texts: Mapping[str, str],
        answer: str,
        choice: _Choice | None,
    ) -> None:
        self.embedder = embedder
        self.question = question
        self.category_texts = category_texts
        self.answer = answer
        self.similarity = choice.confidence if choice else 0.0

    def fill(self, schema: Mapping[str, Any], *, name: str) -> Any:
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return self._pick_enum(list(schema["enum"]))
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self.fill(schema[key][0], name=name)
        kind = schema.get("type", "object" if "properties" in schema else "string")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object":
            props: Mapping[str, Any] = schema.get("properties", {})
            # Enums first: a confidence field reports how sure the enum choice was.
            ordered = sorted(props, key=lambda p: "enum" not in props[p])
            filled = {p: self.fill(props[p], name=p) for p in ordered}
            return {p: filled[p] for p in props}  # keep the schema's field order
        if kind == "array":
            count = int(schema.get("minItems", 0))
            return [self.fill(schema.get("items", {}), name=name) for _ in range(count)]
        if kind in ("number", "integer"):
            return self._number(schema, name, integer=kind == "integer")
        if kind == "boolean":
            return False
        if kind == "null":
            return None
        return self._string(schema, name)

    def _pick_enum(self, options: list[Any]) -> Any:
        labels = [o for o in options if isinstance(o, str)]
        if not labels:
            return options[0]
        q_vec = self.embedder.embed_one(self.question)
        scored = [
            (cosine(q_vec, self.embedder.embed_one(self.category_texts.get(o, _humanise(o)))), o)
            for o in labels
            if o != _OUT_OF_SCOPE
        ]
        if not scored:
            return labels[0]
        best_score, best = max(scored, key=lambda pair: pair[0])
        self.similarity = _clamp(best_score)
        if _OUT_OF_SCOPE in labels and best_score < 0.15:
            return _OUT_OF_SCOPE
        return best

    def _number(self, schema: Mapping[str, Any], name: str, *, integer: bool) -> float | int:
        low = float(schema.get("minimum", schema.get("exclusiveMinimum", 0.0)))
        high = float(schema.get("maximum", schema.get("exclusiveMaximum", max(low, 1.0))))
        value = self.similarity if name.lower() in _CONFIDENCE_FIELDS else low
        value = _clamp(value, low, high)
        return round(value) if integer else round(value, 4)

    def _string(self, schema: Mapping[str, Any], name: str) -> str:
        lowered = name.lower()
        if lowered in _ANSWER_FIELDS:
            text = self.answer
        elif lowered in ("reasoning", "reason", "explanation", "rationale"):
            text = "offline: chosen by text similarity, no language model was used"
        else:
            text = ""
        max_len = schema.get("maxLength")
        if isinstance(max_len, int):
            text = text[:max_len]
        min_len = int(schema.get("minLength", 0))
        return text.ljust(min_len, ".") if len(text) < min_len else text


def _humanise(label: str) -> str:
    return label.replace("_", " ").replace("-", " ").lower()


def _category_texts(meta: Mapping[str, Any]) -> dict[str, str]:
    """``metadata["categories"]``: names, or dicts with name/description/examples."""
    out: dict[str, str] = {}
    for entry in meta.get("categories") or ():
        if isinstance(entry, str):
            out[entry] = _humanise(entry)
        elif isinstance(entry, Mapping) and entry.get("name"):
            name = str(entry["name"])
            examples = " ".join(str(e) for e in entry.get("examples") or ())
            out[name] = f"{_humanise(name)} {entry.get('description') or ''} {examples}"
        else:
            # IntentCategory-like objects, without importing the intents module.
            label = getattr(entry, "name", None)
            if isinstance(label, str):
                examples = " ".join(str(e) for e in getattr(entry, "examples", ()) or ())
                out[label] = f"{_humanise(label)} {getattr(entry, 'description', '')} {examples}"
    return out


def _last_user_message(messages: Sequence[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message.content
    return ""


def _parse_context(raw: Any) -> list[_Item]:
    items: list[_Item] = []
    for entry in raw or ():
        if not isinstance(entry, Mapping):
            continue
        text = str(entry.get("text") or "")
        if not text.strip():
            continue
        try:
            score = float(entry.get("score") or 0.0)
        except (TypeError, ValueError):
            score = 0.0
        items.append(
            _Item(
                kind=str(entry.get("kind") or "knowledge"),
                id=str(entry.get("id") or ""),
                title=str(entry.get("title") or ""),
                text=text,
                score=0.0 if math.isnan(score) else score,
            )
        )
    return items


def _source(item: _Item) -> dict[str, Any]:
    return {"kind": item.kind, "id": item.id, "title": item.title, "score": item.score}
