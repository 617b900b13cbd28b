"""Small talk: greetings, thanks and goodbyes, answered by every agent out of the box.

A customer who writes "hello" or "thanks, bye!" is not asking a question: no knowledge
article answers it, and sending it to a person wastes a reviewer's time. A message is small
talk when *every* clause of it is a greeting, a thank-you, a goodbye or a pleasantry
("how are you"), so "hi, I can't log in" is not: it goes through the pipeline as usual.

The pipeline classifies small talk as the `SMALL_TALK` intent before any classifier or LLM
call (no cost, no latency) and `SmallTalkHandler` answers it without a confidence check.
The learning loop never makes a golden path of it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal, cast

from agentflow.kernel.handlers import HandlerResult, ProcessingContext, SyncTestHandler
from agentflow.kernel.intents import IntentResult
from agentflow.kernel.stores import ConversationThread, Session

__all__ = [
    "SMALL_TALK",
    "SMALL_TALK_REPLIES",
    "SmallTalkHandler",
    "small_talk_kind",
]

SMALL_TALK = "SMALL_TALK"
Kind = Literal["greeting", "thanks", "goodbye"]

SMALL_TALK_REPLIES: Mapping[Kind, str] = {
    "greeting": "Hello! How can I help you today?",
    "thanks": "You're welcome! Is there anything else I can help you with?",
    "goodbye": "Thank you for reaching out. Have a great day!",
}

_FILLER = r"(?:\s+(?:there|team|all|everyone|folks|again|guys|so much|a lot|very much))*"
_CLAUSES: tuple[tuple[Kind, re.Pattern[str]], ...] = (
    (
        "greeting",
        re.compile(
            r"(?:hi|hello|hey|hiya|howdy|greetings|yo|good (?:morning|afternoon|evening|day))"
            + _FILLER
        ),
    ),
    (
        "thanks",
        re.compile(
            r"(?:(?:ok(?:ay)?|great|perfect|awesome|excellent|brilliant|cool)\s+)?"
            r"(?:thanks|thank you|thx|ty|cheers|many thanks|much appreciated|appreciate it"
            r"|that (?:helped|helps|worked|works|did it)"
            r"(?:\s+(?:great|perfectly|fine|well|a treat|like a charm))?)"
            + _FILLER
            + r"(?:\s+for (?:your|the|all the|all your) (?:help|answer|support|quick reply))?"
            + _FILLER
        ),
    ),
    (
        "goodbye",
        re.compile(
            r"(?:(?:ok(?:ay)?|alright|right|well)\s+)?"
            r"(?:bye|goodbye|bye bye|see you|see ya|talk (?:to you )?later|take care"
            r"|have a (?:nice|good|great|lovely) (?:day|one|evening|weekend)"
            r"|that'?s all|that is all|nothing else|all good|no(?:pe)?(?: thanks)?)" + _FILLER
        ),
    ),
)
# Pleasantries that ride along with one of the above ("hi, how are you?").
_PLEASANTRY = re.compile(
    r"how are you(?: doing| today)?|how is it going|hope you(?: are|re) (?:well|good)"
    r"|nice to meet you|ok(?:ay)?|great|perfect|awesome|yes|yeah|sure"
)
# Every clause against one pattern: a named group per kind in the order above (a full match
# backtracks into the next alternative, so the first kind that matches wins), then the
# pleasantries (no group). One regex call per clause instead of up to four.
_CLAUSE = re.compile(
    "|".join(f"(?P<{kind}>{pattern.pattern})" for kind, pattern in _CLAUSES)
    + f"|(?:{_PLEASANTRY.pattern})"
)
_SPLIT = re.compile(r"[.,;:!?\n]+|\s+-\s+|\s+and\s+")
_SEPARATORS = ".,;:!?\n"  # the characters that alone split clauses
_NOISE = re.compile(r"[^\w\s'.,;:!?\n-]+")  # emoji and symbols
_MAX_CHARS = 120  # small talk is short; anything longer has something to say


def small_talk_kind(text: str) -> Kind | None:
    """The kind of small talk ``text`` is (the first clause's), or None if it says more."""
    if not text or len(text) > _MAX_CHARS:
        return None
    lowered = text.lower().replace("\u2019", "'")
    cleaned = _NOISE.sub(" ", lowered) if _NOISE.search(lowered) else lowered
    if not _first_clause_may_match(cleaned):
        return None
    first: Kind | None = None
    # Clause by clause: most messages fail on the first, and the rest are never normalised.
    for part in _SPLIT.split(cleaned):
        clause = " ".join(part.split())
        if not clause:
            continue
        match = _CLAUSE.fullmatch(clause)
        if match is None:
            return None
        first = first or cast("Kind | None", match.lastgroup)  # None: a pleasantry
    return first


def _first_clause_may_match(cleaned: str) -> bool:
    """False only when the first clause cannot be small talk: the common case (a question)
    is decided without splitting the message into clauses, the costly regex.

    When the message starts with neither whitespace nor a separator, its first clause starts
    at index 0 and, with its whitespace collapsed, is a prefix of the whole message with its
    whitespace collapsed: if no prefix of that matches, the first clause does not either.
    """
    if cleaned[:1].isspace() or cleaned[:1] in _SEPARATORS:
        return True  # the first clause starts further on: let the split find it
    return _CLAUSE.match(" ".join(cleaned.split())) is not None


class SmallTalkHandler(SyncTestHandler):
    """Answers `SMALL_TALK` messages with a short reply; needs no review."""

    # After `ResolutionHandler` (a "thanks!" that closes a thread is acknowledged as such),
    # before domain handlers of the default priority: a greeting has nothing to look up.
    # A handler with a priority above 900 answers small talk itself.
    priority = 900

    def __init__(self, replies: Mapping[Kind, str] | None = None) -> None:
        self.replies: Mapping[Kind, str] = {**SMALL_TALK_REPLIES, **(replies or {})}

    def accepts(self, intent: IntentResult, context: ProcessingContext) -> bool:
        return intent.name == SMALL_TALK

    async def handle(
        self,
        message: str,
        intent: IntentResult,
        context: ProcessingContext,
        session: Session,
        thread: ConversationThread | None,
    ) -> HandlerResult:
        kind = small_talk_kind(message) or "greeting"
        return HandlerResult(
            content=self.replies[kind],
            confidence=1.0,
            skip_confidence_check=True,
            metadata={"small_talk": kind},
        )
