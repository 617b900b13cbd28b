"""Conversation thread detection (SPEC 4.3).

A message is matched against every open thread of the session, not only the
active one, from three signals:

* keywords ("thanks, that fixed", "actually, different question", "urgent", ...),
* semantic similarity: cosine between the message vector and each thread's
  centroid (the sum of its message vectors), plus a lexical overlap with the
  thread's salient words so that short closings ("that fixed the login!") find
  their thread even with a weak embedder,
* inactivity: a thread idle longer than `inactivity_seconds` is abandoned unless
  the message clearly returns to it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from agentflow.kernel.stores import ConversationThread, Session, ThreadStatus, ThreadStore, new_id
from agentflow.kernel.vectors import Vector


class ThreadTransition(StrEnum):
    NEW_TOPIC = "new_topic"
    FOLLOW_UP = "follow_up"
    CLARIFICATION = "clarification"
    ESCALATION = "escalation"
    RESOLUTION = "resolution"
    CONTINUATION = "continuation"


# One literal word of every keyword phrase (its longest): a message containing none of
# them cannot match any keyword pattern, so most messages skip all the regex searches.
_TRIGGER_WORDS: set[str] = set()


def _anchor(phrase: str) -> str:
    core = re.sub(r"\([^)]*\)\??", " ", phrase.lstrip("^"))  # groups are optional/variable
    literal = [w for w in re.split(r"[\s-]+", core) if re.fullmatch(r"[a-z][a-z']+", w)]
    if not literal:
        raise ValueError(f"keyword phrase {phrase!r} has no literal word to index")
    return max(reversed(literal), key=len)


def _phrases(*phrases: str) -> re.Pattern[str]:
    _TRIGGER_WORDS.update(_anchor(phrase) for phrase in phrases)
    return re.compile(r"\b(?:" + "|".join(phrases) + r")\b")


_RESOLUTION = _phrases(
    r"fixed",
    r"solved",
    r"resolved",
    r"sorted(?: it)? out",
    r"works now",
    r"working now",
    r"it works",
    r"that worked",
    r"that helped",
    r"all good now",
    r"problem is gone",
)
_NEGATION = re.compile(
    r"\b(?:not|no|never|still|isn't|isnt|wasn't|hasn't|haven't|didn't|doesn't|nothing)\b"
    r"[\w\s',]{0,20}\b(?:fixed|solved|resolved|work|works|working|helped)\b"
)
_GRATITUDE = _phrases(r"thanks", r"thank you", r"thx", r"cheers", r"much appreciated")
_ESCALATION = _phrases(
    r"urgent",
    r"urgently",
    r"critical",
    r"emergency",
    r"asap",
    r"production (?:is )?down",
    r"outage",
    r"escalate",
    r"speak to a human",
    r"talk to a human",
    r"real person",
    r"human agent",
    r"your manager",
    r"unacceptable",
)
_CLARIFICATION = _phrases(
    r"what do you mean",
    r"can you explain",
    r"could you explain",
    r"please explain",
    r"i don't understand",
    r"i do not understand",
    r"i dont understand",
    r"clarify",
    r"what does that mean",
    r"more details?",
    r"elaborate",
    r"which one",
    r"not sure what you",
)
_NEW_TOPIC_STRONG = _phrases(
    r"different question",
    r"another question",
    r"another thing",
    r"something else",
    r"unrelated",
    r"new question",
    r"different topic",
    r"change of topic",
    r"separate issue",
    r"different issue",
    r"other issue",
    r"new issue",
)
_NEW_TOPIC_WEAK = _phrases(r"actually", r"by the way", r"btw", r"oh and", r"also")
_FOLLOW_UP = _phrases(
    r"^and",  # "And what about ...": a leading "and" links to what came before
    r"also",
    r"furthermore",
    r"in addition",
    r"what about",
    r"how about",
    r"one more",
    r"follow up",
    r"follow-up",
    r"related to (?:that|this)",
    r"same issue",
    r"still",
    r"again",
)
_WORD = re.compile(r"[a-z0-9][a-z0-9']+")
_STOPWORDS = frozenset(
    (
        "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "could", "did", "do",
        "does", "for", "from", "had", "has", "have", "how", "i", "i'm", "in", "is", "it", "it's",
        "its", "me", "my", "no", "not", "of", "on", "or", "our", "please", "so", "that", "the",
        "their", "them", "then", "there", "these", "they", "this", "to", "too", "us", "was", "we",
        "were", "what", "when", "where", "which", "who", "why", "will", "with", "would", "you",
        "your", "yes", "ok", "okay", "thanks", "thank", "hi", "hello", "hey", "just", "now",
        "still", "also", "again", "actually", "that's", "fixed", "solved", "resolved", "works",
        "working", "help", "need", "want", "get", "got", "question", "different", "another",
        "problem", "issue", "about",
    )
)  # fmt: skip
# Salient words remembered per thread: enough to recognise the topic, bounded in size.
_MAX_THREAD_KEYWORDS = 48


@dataclass(slots=True)
class ThreadDecision:
    transition: ThreadTransition
    thread: ConversationThread | None
    confidence: float
    similarity: float
    reason: str
    words: AbstractSet[str] = frozenset()


class ThreadDetector:
    """Decides the transition of one message; pure, no I/O."""

    def __init__(
        self,
        *,
        similarity_threshold: float = 0.35,
        inactivity_seconds: float = 1800,
        short_message_words: int = 3,
    ) -> None:
        self.similarity_threshold = similarity_threshold
        self.inactivity_seconds = inactivity_seconds
        self.short_message_words = short_message_words

    @staticmethod
    def similarities(threads: list[ConversationThread], vector: Vector) -> dict[str, float]:
        """Cosine of the message with each thread's centroid."""
        sims: dict[str, float] = {}
        for thread in threads:
            centroid, norm = thread.centroid, thread.centroid_norm
            if centroid is None:
                sims[thread.thread_id] = 0.0
                continue
            if norm <= 0.0:  # a store that keeps only the centroid: derive the norm once
                norm = thread.centroid_norm = math.sqrt(float(centroid.dot(centroid)))
            # ndarray.dot is the cheapest call for one small product (no operator dispatch).
            sims[thread.thread_id] = float(centroid.dot(vector)) / norm if norm > 0.0 else 0.0
        return sims

    @staticmethod
    def _overlap(words: set[str], thread: ConversationThread) -> float:
        return len(words & thread.keywords) / len(words) if words else 0.0

    def detect(
        self,
        text: str,
        vector: Vector,
        open_threads: list[ConversationThread],
        active: ConversationThread | None,
        *,
        intent: str,
        out_of_scope: bool,
        now: float,
    ) -> ThreadDecision:
        lowered = text.lower()
        tokens = _WORD.findall(lowered)
        if "'" in lowered:  # rare: only then can a token end in a quote to strip
            tokens = [token.strip("'") for token in tokens]
        words = {w for w in tokens if w not in _STOPWORDS and len(w) > 2}
        keywords = not _TRIGGER_WORDS.isdisjoint(tokens)
        decision = self._decide(
            lowered,
            keywords,
            words,
            vector,
            open_threads,
            active,
            intent=intent,
            out_of_scope=out_of_scope,
            now=now,
        )
        decision.words = words
        return decision

    def _decide(
        self,
        lowered: str,
        keywords: bool,
        words: set[str],
        vector: Vector,
        open_threads: list[ConversationThread],
        active: ConversationThread | None,
        *,
        intent: str,
        out_of_scope: bool,
        now: float,
    ) -> ThreadDecision:
        """The rules in order of precedence; the first that applies decides."""
        sims = self.similarities(open_threads, vector)
        threshold = self.similarity_threshold
        best, best_sim = _most_similar(open_threads, sims)
        active_sim = sims.get(active.thread_id, 0.0) if active is not None else 0.0

        if best is not None and keywords and self._is_resolution(lowered):
            return self._resolution(words, sims, open_threads, active or best)
        if best is None or (active is None and best_sim < threshold):
            return ThreadDecision(ThreadTransition.NEW_TOPIC, None, 0.9, 0.0, "no_open_thread")
        if active is not None and now - active.last_active > self.inactivity_seconds:
            if best_sim >= threshold + 0.15:
                return ThreadDecision(
                    ThreadTransition.FOLLOW_UP,
                    best,
                    best_sim,
                    best_sim,
                    "inactivity:similar_thread",
                )
            return ThreadDecision(ThreadTransition.NEW_TOPIC, None, 0.8, active_sim, "inactivity")
        if keywords and _ESCALATION.search(lowered):
            target = best if best_sim >= threshold or active is None else active
            return ThreadDecision(
                ThreadTransition.ESCALATION,
                target,
                0.85,
                sims[target.thread_id],
                "keyword:escalation",
            )
        if keywords and _NEW_TOPIC_STRONG.search(lowered):
            return ThreadDecision(
                ThreadTransition.NEW_TOPIC, None, 0.9, active_sim, "keyword:new_topic"
            )
        if active is None:
            # No active thread but an open one matches: the user returns to it.
            return ThreadDecision(
                ThreadTransition.FOLLOW_UP, best, best_sim, best_sim, "similarity"
            )
        return self._within_active(
            lowered, keywords, best, best_sim, active, active_sim, intent, out_of_scope
        )

    def _resolution(
        self,
        words: set[str],
        sims: dict[str, float],
        open_threads: list[ConversationThread],
        fallback: ConversationThread,
    ) -> ThreadDecision:
        # Closings name their topic weakly ("that fixed the login"): words shared with
        # a thread count as much as similarity, and the best match wins when the
        # message names anything; a bare "thanks!" closes the active thread (the fallback).
        def match(thread: ConversationThread) -> float:
            return sims[thread.thread_id] + 0.5 * self._overlap(words, thread)

        named = max(open_threads, key=match)
        target = named if words and match(named) > 0.0 else fallback
        return ThreadDecision(
            ThreadTransition.RESOLUTION,
            target,
            0.9,
            sims[target.thread_id],
            "keyword:resolution",
        )

    def _within_active(
        self,
        lowered: str,
        keywords: bool,
        best: ConversationThread,
        best_sim: float,
        active: ConversationThread,
        active_sim: float,
        intent: str,
        out_of_scope: bool,
    ) -> ThreadDecision:
        """The rules left when a thread is active and no stronger rule applied."""
        threshold = self.similarity_threshold
        if keywords and _CLARIFICATION.search(lowered):
            return ThreadDecision(
                ThreadTransition.CLARIFICATION, active, 0.85, active_sim, "keyword:clarification"
            )
        if best is not active and best_sim >= threshold and best_sim > active_sim + 0.1:
            return ThreadDecision(
                ThreadTransition.FOLLOW_UP, best, best_sim, best_sim, "similarity:other_thread"
            )
        follow_up = keywords and _FOLLOW_UP.search(lowered) is not None
        if active_sim >= threshold:
            transition = ThreadTransition.FOLLOW_UP if follow_up else ThreadTransition.CONTINUATION
            return ThreadDecision(transition, active, active_sim, active_sim, "similarity")
        if keywords and _NEW_TOPIC_WEAK.search(lowered):
            return ThreadDecision(
                ThreadTransition.NEW_TOPIC, None, 0.7, active_sim, "keyword:new_topic_marker"
            )
        if follow_up:
            return ThreadDecision(
                ThreadTransition.FOLLOW_UP, active, 0.6, active_sim, "keyword:follow_up"
            )
        if len(lowered.split()) <= self.short_message_words:
            return ThreadDecision(
                ThreadTransition.CONTINUATION, active, 0.6, active_sim, "short_message"
            )
        if intent == active.intent and not out_of_scope:
            return ThreadDecision(
                ThreadTransition.CONTINUATION, active, 0.55, active_sim, "same_intent"
            )
        return ThreadDecision(ThreadTransition.NEW_TOPIC, None, 0.6, active_sim, "dissimilar")

    def _is_resolution(self, lowered: str) -> bool:
        if lowered.rstrip().endswith("?") or _NEGATION.search(lowered):
            return False
        if _RESOLUTION.search(lowered):
            return True
        # A bare "thanks!" closes the topic; "thanks, but ..." does not.
        return bool(_GRATITUDE.search(lowered)) and len(lowered.split()) <= 4


def _most_similar(
    threads: list[ConversationThread], sims: dict[str, float]
) -> tuple[ConversationThread | None, float]:
    """The first thread of highest similarity (as `max` picks it) and that similarity."""
    best, best_sim = None, 0.0
    for thread in threads:
        sim = sims[thread.thread_id]
        if best is None or sim > best_sim:
            best, best_sim = thread, sim
    return best, best_sim


class ThreadManager:
    """Applies the detector's decision to the session's threads in a `ThreadStore`.

    At most `max_open_threads` threads stay open per session: opening one more abandons
    the least recently active. People do not juggle more topics than that, and matching
    each message against an unbounded list would make long sessions slower and vaguer.
    """

    def __init__(
        self, store: ThreadStore, detector: ThreadDetector, *, max_open_threads: int = 8
    ) -> None:
        if max_open_threads < 1:
            raise ValueError("max_open_threads must be at least 1")
        self.store = store
        self.detector = detector
        self.max_open_threads = max_open_threads

    async def process(
        self,
        session: Session,
        text: str,
        vector: Vector,
        *,
        intent: str,
        out_of_scope: bool,
        now: float,
    ) -> ThreadDecision:
        open_threads = await self.store.list_threads(session.session_id, open_only=True)
        active = None
        if session.active_thread_id is not None:
            for candidate in open_threads:
                if candidate.thread_id == session.active_thread_id:
                    active = candidate
                    break
        decision = self.detector.detect(
            text,
            vector,
            open_threads,
            active,
            intent=intent,
            out_of_scope=out_of_scope,
            now=now,
        )
        transition = decision.transition
        if transition is ThreadTransition.NEW_TOPIC:
            by_recency = sorted(open_threads, key=lambda t: t.last_active, reverse=True)
            for index, stale in enumerate(by_recency):
                idle = now - stale.last_active > self.detector.inactivity_seconds
                if idle or index >= self.max_open_threads - 1:
                    stale.status = ThreadStatus.ABANDONED
                    await self.store.save(stale)
            decision.thread = ConversationThread(
                thread_id=new_id(),
                session_id=session.session_id,
                user_id=session.user_id,
                topic=text[:200],
                intent=intent,
                created_at=now,
                last_active=now,
            )
        thread = decision.thread
        assert thread is not None  # every other transition names its target
        self._add_message(thread, decision.words, vector, now)
        if transition is ThreadTransition.ESCALATION:
            thread.escalated = True
        if transition is ThreadTransition.RESOLUTION:
            thread.status = ThreadStatus.RESOLVED
            thread.resolution = text[:500]
            if session.active_thread_id == thread.thread_id:
                remaining = [t for t in open_threads if t is not thread and t.is_open]
                session.active_thread_id = (
                    max(remaining, key=lambda t: t.last_active).thread_id if remaining else None
                )
        else:
            session.active_thread_id = thread.thread_id
        await self.store.save(thread)
        return decision

    @staticmethod
    def _add_message(
        thread: ConversationThread, words: AbstractSet[str], vector: Vector, now: float
    ) -> None:
        if thread.centroid is None:
            thread.centroid = centroid = np.array(vector, dtype=np.float32)
        else:
            centroid = thread.centroid
            if not centroid.flags.writeable:  # e.g. loaded from a buffer by a store
                thread.centroid = centroid = centroid.copy()
            centroid += vector  # the thread owns its centroid: update in place
        thread.centroid_norm = math.sqrt(float(centroid.dot(centroid)))
        thread.message_count += 1
        thread.last_active = now
        if len(thread.keywords) < _MAX_THREAD_KEYWORDS:
            thread.keywords.update(words)
