"""``onboarding_agent``: walks a new customer through a configurable checklist.

The checklist is the config's ``steps`` (``{id, title, instructions, done_when}``, where
``done_when`` is a list of keywords the user's message must contain, or ``"confirm"``: the
user says it is done). Each message moves one user's journey through the agent's FSM:
load the user's progress, notice a stalled step, interpret the message (done, a question,
a restart, anything else), advance or answer, save, respond.

Progress lives in a `ProgressStore` keyed per end user (`SessionProgressStore` keeps it in
the kernel session's ``metadata["onboarding"]``; the platform hands in a database-backed
one), so it survives across sessions and worker restarts wherever the store persists. Saves
are compare-and-set on a revision: when another message of the same user saved first, the
journey reloads and this message is applied to the newer progress. A step unchanged for
``nudge_after_hours`` is "stalled": the next reply carries ``nudge: true`` and a reminder,
and `stalled` lets a scheduled job list such users.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from agentflow.kernel.agents import AgentState
from agentflow.kernel.blueprints.base import StepAgent, finish
from agentflow.kernel.planning.model import StepOutcome
from agentflow.kernel.stores import Session, SessionStore

__all__ = [
    "PROGRESS_KEY",
    "OnboardingAgent",
    "Progress",
    "ProgressStore",
    "SessionProgressStore",
    "Step",
    "answer_question",
    "interpret",
    "stalled",
]

PROGRESS_KEY = "onboarding"
CONFIRM = "confirm"
# What "I did it" sounds like, for a step whose done_when is "confirm".
_CONFIRMATIONS = re.compile(
    r"\b(done|did it|did that|finished|completed?|all set|ready|that worked|it works|"
    r"next step|next one|move on|yes|yep)\b"
)
# "I'm not done yet", "haven't connected it": a signal word under a negation is not done.
_NEGATION = re.compile(r"\b(not|no|never|haven'?t|hasn'?t|didn'?t|can'?t|cannot|won'?t)\b")
_QUESTION_START = re.compile(
    r"^\s*(how|what|where|why|when|which|who|can|could|should|do|does|is|are|will|"
    r"would|help|explain|i don't|i dont|i can't|i cant|stuck)\b"
)
_RESTART = re.compile(r"\b(start over|restart|from the beginning|reset my progress)\b")
_STATUS = re.compile(
    r"\b(progress|status|where am i|how far|what'?s left|which step|what step|remaining)\b"
)
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    (
        "a",
        "an",
        "and",
        "do",
        "does",
        "for",
        "how",
        "i",
        "in",
        "is",
        "it",
        "me",
        "my",
        "of",
        "on",
        "or",
        "the",
        "this",
        "to",
        "what",
        "where",
        "with",
        "you",
        "your",
        "can",
        "should",
        "step",
    )
)


@dataclass(frozen=True)
class Step:
    id: str
    title: str
    instructions: str
    done_when: tuple[str, ...] | str  # keywords, or "confirm"

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> Step:
        done_when = item.get("done_when", CONFIRM)
        return cls(
            str(item["id"]),
            str(item["title"]),
            str(item.get("instructions") or ""),
            CONFIRM if done_when == CONFIRM else tuple(str(word) for word in done_when),
        )

    def public(self) -> dict[str, Any]:
        done_when = self.done_when if self.done_when == CONFIRM else list(self.done_when)
        return {
            "id": self.id,
            "title": self.title,
            "instructions": self.instructions,
            "done_when": done_when,
        }


@dataclass
class Progress:
    """One user's journey: epoch seconds, the step ids done, the current step's id."""

    current: str | None  # None once every step is done
    completed: list[str]
    started_at: float
    step_started_at: float
    updated_at: float
    finished_at: float | None = None
    nudged_at: float | None = None

    @classmethod
    def new(cls, steps: Sequence[Step], now: float) -> Progress:
        return cls(steps[0].id, [], now, now, now)

    @classmethod
    def of(cls, data: Mapping[str, Any], steps: Sequence[Step], now: float) -> Progress:
        """Stored progress, fitted to today's checklist (steps may have been edited)."""
        ids = [step.id for step in steps]
        completed = [step_id for step_id in data.get("completed", []) if step_id in ids]
        current = data.get("current")
        if current not in ids or current in completed:
            current = next((step_id for step_id in ids if step_id not in completed), None)
        return cls(
            current=current,
            completed=completed,
            started_at=float(data.get("started_at", now)),
            step_started_at=float(data.get("step_started_at", now)),
            updated_at=float(data.get("updated_at", now)),
            finished_at=data.get("finished_at"),
            nudged_at=data.get("nudged_at"),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "completed": list(self.completed),
            "started_at": self.started_at,
            "step_started_at": self.step_started_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "nudged_at": self.nudged_at,
        }


class ProgressStore(Protocol):
    """One progress record per end user, saved compare-and-set on its ``revision``."""

    async def load(self, user_id: str) -> dict[str, Any] | None:
        """The user's stored progress (with its ``revision``), or None for a new user."""

    async def save(self, user_id: str, progress: Mapping[str, Any], *, revision: int) -> bool:
        """Store ``progress`` as revision ``revision + 1`` if the stored revision is still
        ``revision`` (0: nothing stored); False, storing nothing, when it is not."""


def _revision(progress: Mapping[str, Any] | None) -> int:
    return int((progress or {}).get("revision") or 0)


class SessionProgressStore:
    """`ProgressStore` in a kernel `SessionStore`, atomic within this process."""

    def __init__(self, sessions: SessionStore) -> None:
        self.sessions = sessions
        self._lock = asyncio.Lock()

    async def load(self, user_id: str) -> dict[str, Any] | None:
        session = await self.sessions.get(user_id)
        found = session.metadata.get(PROGRESS_KEY) if session is not None else None
        return dict(found) if found else None

    async def save(self, user_id: str, progress: Mapping[str, Any], *, revision: int) -> bool:
        async with self._lock:
            session = await self.sessions.get(user_id)
            if session is None:
                now = time.time()
                session = Session(str(uuid.uuid4()), user_id, now, now)
            if _revision(session.metadata.get(PROGRESS_KEY)) != revision:
                return False
            stored = {**progress, "revision": revision + 1}
            session.metadata = {**session.metadata, PROGRESS_KEY: stored}
            await self.sessions.save(session)
            return True


def stalled(progress: Mapping[str, Any], now: float, nudge_after_hours: float) -> bool:
    """Whether a stored journey sits on one step for ``nudge_after_hours`` (counted again
    from the last nudge, so a returning user is not reminded at every message)."""
    if not progress.get("current") or progress.get("finished_at") is not None:
        return False
    since = max(
        float(progress.get("step_started_at") or now), float(progress.get("nudged_at") or 0)
    )
    return now - since >= nudge_after_hours * 3600


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _mentions(text: str, phrase: str) -> bool:
    """Every word of the phrase is in the text, as a whole word, in any order: "zendesk
    connected" matches "I connected Zendesk"."""
    words = set(_words(phrase))
    return bool(words) and words <= set(_words(text))


def interpret(message: str, step: Step | None) -> str:
    """What a message means for the journey: done, question, status, restart or other."""
    text = message.strip().lower()
    if _RESTART.search(text):
        return "restart"
    if step is None:
        return "status" if not _QUESTION_START.search(text) else "question"
    questioning = bool(_QUESTION_START.search(text))
    if not questioning and not _NEGATION.search(text):
        if step.done_when == CONFIRM:
            if _CONFIRMATIONS.search(text):
                return "done"
        elif any(_mentions(text, keyword) for keyword in step.done_when):
            return "done"
    if _STATUS.search(text):
        return "status"
    if questioning or text.endswith("?"):
        return "question"
    return "other"


def _sentences(text: str) -> list[str]:
    return [part.strip() for part in re.split(r"(?<=[.!?])\s+", text) if part.strip()]


def _overlap(question: set[str], text: str) -> int:
    return len(question & {word for word in _words(text) if word not in _STOP})


def answer_question(question: str, steps: Sequence[Step], current: Step | None) -> dict[str, Any]:
    """The step a question is about (the current one unless another fits better) and the
    sentences of its instructions that answer it best (all of them when none stands out)."""
    asked = {word for word in _words(question) if word not in _STOP}
    best = current or steps[-1]
    best_score = _overlap(asked, f"{best.title} {best.instructions}")
    for step in steps:
        score = _overlap(asked, f"{step.title} {step.instructions}")
        if score > best_score:
            best, best_score = step, score
    relevant = _best_sentences(asked, _sentences(best.instructions))
    return {
        "step": best.id,
        "title": best.title,
        "answer": " ".join(relevant) if relevant else best.instructions,
    }


def _best_sentences(asked: set[str], sentences: Sequence[str]) -> list[str]:
    """The (at most two) sentences sharing the most with the question, a word counting less
    the more sentences it appears in ("key" in every sentence of a step about keys)."""
    words = [{word for word in _words(sentence) if word not in _STOP} for sentence in sentences]
    spread = {word: sum(word in found for found in words) for word in asked}
    scores = [sum(1.0 / spread[word] for word in asked & found) for found in words]
    top = max(scores, default=0.0)
    if top <= 0:
        return []
    return [sentence for sentence, score in zip(sentences, scores, strict=True) if score == top][:2]


def _hours(seconds: float) -> int:
    return max(1, round(seconds / 3600))


class OnboardingAgent(StepAgent):
    """One turn of a user's onboarding journey per message."""

    default_planner: ClassVar[Mapping[str, Any]] = {
        "type": "fsm",
        "definition": {
            "initial_state": "load_progress",
            "states": {
                "load_progress": {"on_success": "detect_stall"},
                "detect_stall": {"on_success": "interpret_message"},
                "interpret_message": {
                    "conditional_transitions": [
                        {"condition": "state.turn == 'done'", "target": "complete_step"},
                        {"condition": "state.turn == 'question'", "target": "answer_question"},
                        {"condition": "state.turn == 'restart'", "target": "restart"},
                    ],
                    "on_success": "show_step",
                },
                "complete_step": {"on_success": "save_progress"},
                "answer_question": {"on_success": "save_progress"},
                "restart": {"on_success": "save_progress"},
                "show_step": {"on_success": "save_progress"},
                # Another message of the user saved first: apply this one to its progress.
                "save_progress": {"on_success": "respond", "on_error": "load_progress"},
            },
            "final_states": ["respond"],
        },
    }

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        progress: ProgressStore,
        clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        self.steps = [Step.of(item) for item in self.config.get("steps") or []]
        if not self.steps:
            raise ValueError("an onboarding checklist needs at least one step")
        self.by_id = {step.id: step for step in self.steps}
        self.nudge_after_hours = float(self.config.get("nudge_after_hours", 48))
        self.progress = progress
        self.clock = clock

    # -------------------------------------------------------------- the journey's steps

    async def step_load_progress(self, state: AgentState) -> Any:
        now = self.clock()
        stored = await self.progress.load(state.user_id)
        progress = Progress.of(stored, self.steps, now) if stored else Progress.new(self.steps, now)
        plan = state.plan_state.state
        for key in ("answer", "just_completed", "stalled_hours"):  # a reload starts afresh
            plan.pop(key, None)
        plan["progress"] = progress.as_dict()
        plan["revision"] = _revision(stored)
        plan["new_user"] = stored is None
        plan["events"] = ["started"] if stored is None else []
        return {"current": progress.current, "new_user": stored is None}

    async def step_detect_stall(self, state: AgentState) -> Any:
        plan = state.plan_state.state
        progress = plan["progress"]
        now = self.clock()
        plan["nudge"] = stalled(progress, now, self.nudge_after_hours)
        if plan["nudge"]:
            plan["stalled_hours"] = _hours(now - float(progress["step_started_at"]))
        return {"nudge": plan["nudge"]}

    async def step_interpret_message(self, state: AgentState) -> Any:
        plan = state.plan_state.state
        current = self._current(plan)
        plan["turn"] = "show" if plan["new_user"] else interpret(state.message, current)
        if plan["turn"] == "status":
            plan["turn"] = "show"
        return {"turn": plan["turn"]}

    async def step_complete_step(self, state: AgentState) -> Any:
        plan = state.plan_state.state
        progress, now = plan["progress"], self.clock()
        done = progress["current"]
        progress["completed"].append(done)
        following = next((s.id for s in self.steps if s.id not in progress["completed"]), None)
        progress["current"] = following
        progress["step_started_at"] = now
        progress["nudged_at"] = None
        if following is None:
            progress["finished_at"] = now
            plan["events"].append("finished")
        else:
            plan["events"].append("advanced")
        plan["nudge"] = False  # the user just moved: a reminder would be noise
        plan["just_completed"] = done
        return {"completed": done, "next": following}

    async def step_answer_question(self, state: AgentState) -> Any:
        plan = state.plan_state.state
        plan["answer"] = answer_question(state.message, self.steps, self._current(plan))
        plan["events"].append("question")
        return {"about": plan["answer"]["step"]}

    async def step_restart(self, state: AgentState) -> Any:
        plan = state.plan_state.state
        plan["progress"] = Progress.new(self.steps, self.clock()).as_dict()
        plan["nudge"] = False
        plan["events"].append("restarted")
        return {"current": self.steps[0].id}

    async def step_show_step(self, state: AgentState) -> Any:
        plan = state.plan_state.state
        plan["events"].append("reminded" if not plan["events"] else "shown")
        return {"current": plan["progress"]["current"]}

    async def step_save_progress(self, state: AgentState) -> Any:
        plan = state.plan_state.state
        now = self.clock()
        progress = plan["progress"]
        progress["updated_at"] = now
        if plan.get("nudge"):
            progress["nudged_at"] = now
        if not await self.progress.save(state.user_id, progress, revision=plan["revision"]):
            return StepOutcome.failed("progress changed meanwhile")
        return {"saved": True, "revision": plan["revision"] + 1}

    async def step_respond(self, state: AgentState) -> Any:
        plan = state.plan_state.state
        current = self._current(plan)
        content = self._reply(plan, current)
        finish(
            state,
            content=content,
            output=self._output(plan, current),
            intent=f"onboarding.{plan['turn']}",
        )

    # ------------------------------------------------------------------------ helpers

    def _current(self, plan: Mapping[str, Any]) -> Step | None:
        current = plan["progress"]["current"]
        return self.by_id.get(current) if current else None

    def _position(self, step: Step) -> str:
        return f"step {self.steps.index(step) + 1} of {len(self.steps)}"

    def _how_to_finish(self, step: Step) -> str:
        if step.done_when == CONFIRM:
            return "Tell me when it is done."
        return f'Tell me when it is done (for example: "{step.done_when[0]}").'

    def _step_text(self, step: Step) -> str:
        return f"{self._position(step).capitalize()}: {step.title}. {step.instructions} " + (
            self._how_to_finish(step)
        )

    def _reply(self, plan: Mapping[str, Any], current: Step | None) -> str:
        parts: list[str] = []
        if plan.get("nudge") and current is not None:
            parts.append(
                f"Welcome back! You have been on '{current.title}' for about "
                f"{plan['stalled_hours']} hours; let's finish it."
            )
        events = plan["events"]
        if "started" in events:
            parts.append(f"Welcome! Let's get you set up in {len(self.steps)} steps.")
        if "restarted" in events:
            parts.append("Your progress is reset; we start again from the first step.")
        done = plan.get("just_completed")
        if done:
            parts.append(f"Great, '{self.by_id[done].title}' is done.")
        if "question" in events:
            answer = plan["answer"]
            if current is not None and answer["step"] != current.id:
                about = self.steps.index(self.by_id[answer["step"]])
                when = "a later" if about > self.steps.index(current) else "an earlier"
                parts.append(f"That is part of '{answer['title']}', {when} step:")
            parts.append(answer["answer"])
        if current is None:
            parts.append("You have completed every onboarding step. You are all set!")
        elif "question" in events:
            parts.append(f"You are on {self._position(current)}: {current.title}.")
        else:
            parts.append(self._step_text(current))
        return " ".join(part.strip() for part in parts if part.strip())

    def _output(self, plan: Mapping[str, Any], current: Step | None) -> dict[str, Any]:
        progress = plan["progress"]
        done = len(progress["completed"])
        output: dict[str, Any] = {
            "status": "completed" if current is None else "in_progress",
            "event": plan["events"][-1] if plan["events"] else "shown",
            "current_step": current.public() if current is not None else None,
            "completed_steps": list(progress["completed"]),
            "remaining_steps": [s.id for s in self.steps if s.id not in progress["completed"]],
            "progress": {"done": done, "total": len(self.steps)},
            "nudge": bool(plan.get("nudge")),
        }
        if "answer" in plan:
            output["answer"] = plan["answer"]
        return output
