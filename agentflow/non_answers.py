"""Text that is not an answer: never approved as one, never learnt as a golden path.

When the agent cannot answer, what it drafts or delivers is a placeholder: the offline
provider's "I'm not sure about that... a person will follow up", the agent's escalation
message, the template answer sent when no language model could answer, the hand-off
message a rejection delivers, or nothing at all. Approving such a draft would tell the
customer a person is coming when the review *was* the person; learning it would answer
every paraphrase of the question with that promise, at high confidence and unreviewed.

:func:`check` says whether a text is one of these and why. It compares with the texts
this agent and tenant actually use (their configured messages as well as the defaults),
tolerating case, punctuation and a few words around them, and recognises a short text
whose only content is the promise that a person will follow up (how a language model
words a hand-off). The run's own result counts too: a template answer is flagged there.

Both HITL (what may be approved) and learning (what may become a golden path) ask, so the
judgement sits below both. The hand-off messages a tenant configured for its reviews are
HITL's data: HITL registers their reader from its ``AppConfig.ready``
(:func:`register_handoff_messages`, like the erasers of ``tenants.erasers``), so every
caller, whoever asks, judges with them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from agentflow.core.conf import setting
from agentflow.kernel.config import DEFAULT_TEMPLATE_ANSWER
from agentflow.kernel.llm.offline import DONT_KNOW_ANSWER
from agentflow.kernel.llm.resilience import DEFAULT_TEMPLATE_ANSWER as CHAIN_TEMPLATE_ANSWER
from agentflow.kernel.pipeline import DEFAULT_ESCALATION_MESSAGE

__all__ = ["HandoffMessages", "NonAnswer", "check", "register_handoff_messages", "stored"]

# The hand-off messages configured for an agent besides the default (HITL's review
# settings), read when iterated.
HandoffMessages = Callable[[Any], Iterable[str]]
_handoff_messages: list[HandoffMessages] = []


def register_handoff_messages(reader: HandoffMessages) -> None:
    """Set the reader of an agent's configured hand-off messages; call from ``ready``."""
    _handoff_messages[:] = [reader]


_DETAILS = {
    "empty": "The draft is empty: there is no answer.",
    "dont_know": "The draft is the agent's \"I'm not sure, a person will follow up\" text, "
    "not an answer.",
    "escalation_message": "The draft is the agent's escalation message (what the customer "
    "reads while waiting for a person), not an answer.",
    "template_answer": "The draft is the canned text sent when no language model could "
    "answer, not an answer.",
    "handoff_message": "The draft is the hand-off message a rejection delivers, not an answer.",
    "hand_off": "The draft only promises that a person will follow up; it answers nothing.",
}
# A known text wrapped in a greeting or sign-off is still only that text.
_SLACK_CHARS = 40
_REASON = "{reason}"
_MIN_TEMPLATE_CHARS = 20  # a hand-off template's fixed part must say something to match on
# A language model's own hand-off: someone will get back to the customer, and little else.
_HAND_OFF_MAX_CHARS = 300
_PERSON = (
    r"(?:a person|a colleague|someone|somebody|a human|an agent|a specialist|a teammate|"
    r"(?:our|the|a) (?:support )?(?:team|staff|agent|colleague)s?|"
    r"a (?:member|person) (?:of|from) (?:our|the) (?:support )?team)"
)
_PROMISE = (
    r"(?:will|ll|shall|is going to|are going to) (?:\w+ )?"
    r"(?:follow up|get back|be in touch|contact you|reach out|reply to you|respond to you)"
)
_HAND_OFF = re.compile(
    rf"\b{_PERSON}(?: \w+){{0,4}} {_PROMISE}\b"
    r"|\b(?:passed|forwarded|handed|escalated|sent) (?:on )?your (?:question|message|request|"
    r"case|ticket) (?:on )?to\b"
)


@dataclass(frozen=True, slots=True)
class NonAnswer:
    """Why a text is not an answer: ``kind`` for machines, ``detail`` for people."""

    kind: str

    @property
    def detail(self) -> str:
        return _DETAILS[self.kind]

    def as_json(self) -> dict[str, str]:
        return {"kind": self.kind, "detail": self.detail}


def _normal(text: str) -> str:
    """Lower case, words only: "I'm  sure." and "i m sure" compare equal."""
    return " ".join(re.sub(r"[^\w]+", " ", text.lower().replace("\u2019", "'")).split())


def _same(answer: str, known: str) -> bool:
    known = _normal(known)
    if not known:
        return False
    return answer == known or (known in answer and len(answer) - len(known) <= _SLACK_CHARS)


def _fills(answer: str, template: str) -> bool:
    """``answer`` is ``template`` with its ``{reason}`` filled in (or is the template)."""
    if _REASON not in template:
        return _same(answer, template)
    head, _, tail = template.partition(_REASON)
    head, tail = _normal(head), _normal(tail.replace(_REASON, " "))
    if len(head) + len(tail) < _MIN_TEMPLATE_CHARS:
        return False
    start = answer.find(head)
    if start < 0 or start > _SLACK_CHARS:
        return False
    end = answer.rfind(tail) if tail else len(answer)
    return end >= start + len(head) and len(answer) - (end + len(tail)) <= _SLACK_CHARS


def _agent_texts(agent: Any) -> Iterator[tuple[str, str]]:
    config: Mapping[str, Any] = getattr(agent, "config", None) or {}
    if isinstance(message := config.get("escalation_message"), str):
        yield "escalation_message", message
    llm = config.get("llm")
    if isinstance(llm, Mapping) and isinstance(template := llm.get("template_answer"), str):
        yield "template_answer", template


def _handoff_templates(agent: Any) -> Iterator[str]:
    yield str(setting("HITL_HANDOFF_MESSAGE"))
    if agent is None:
        return
    if not _handoff_messages:  # fail closed: a hand-off must never pass for an answer
        raise ImproperlyConfigured("No reader of hand-off messages (HITL registers it).")
    yield from _handoff_messages[0](agent)


def check(
    text: str | None, *, agent: Any = None, result: Mapping[str, Any] | None = None
) -> NonAnswer | None:
    """Why ``text`` is not an answer of ``agent`` (None when it is one).

    ``result`` is the run's result when the text comes from a run: a template answer is
    marked there even when the provider chain's template was configured elsewhere.
    """
    answer = _normal(text or "")
    if not answer:
        return NonAnswer("empty")
    metadata = (result or {}).get("metadata") or {}
    if isinstance(metadata, Mapping) and metadata.get("template_answer"):
        return NonAnswer("template_answer")
    known = [
        ("dont_know", DONT_KNOW_ANSWER),
        ("escalation_message", DEFAULT_ESCALATION_MESSAGE),
        ("template_answer", DEFAULT_TEMPLATE_ANSWER),
        ("template_answer", CHAIN_TEMPLATE_ANSWER),
        *_agent_texts(agent),
    ]
    for kind, known_text in known:
        if _same(answer, known_text):
            return NonAnswer(kind)
    if any(_fills(answer, template) for template in _handoff_templates(agent)):
        return NonAnswer("handoff_message")
    if len(answer) <= _HAND_OFF_MAX_CHARS and _HAND_OFF.search(answer):
        return NonAnswer("hand_off")
    return None


def stored(context: Mapping[str, Any], proposed_answer: str) -> NonAnswer | None:
    """A review request's verdict on its draft without a query: the one taken when it was
    queued (``context["non_answer"]``), else the defaults' (requests queued before)."""
    if not proposed_answer.strip():
        return NonAnswer("empty")
    if "non_answer" in context:
        kind = (context.get("non_answer") or {}).get("kind")
        return NonAnswer(kind) if kind in _DETAILS else None
    return check(proposed_answer)
