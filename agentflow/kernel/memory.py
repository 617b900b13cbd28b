"""Memory access for the pipeline (SPEC 4.4).

Short-term memory is the session's recent messages; episodic memory is the
user's own past cases plus resolved cases of other users. Whatever the store
returns, other users' cases leave this module only anonymised: PII-redacted
text and no user id. Doing it here rather than in each store means a new store
cannot forget it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from agentflow.kernel.llm.base import ChatMessage
from agentflow.kernel.results import ContextItem
from agentflow.kernel.stores import MemoryCase, MemoryStore, new_id
from agentflow.kernel.vectors import Vector

_ANON_CACHE_SIZE = 4_096


class MemoryManager:
    def __init__(
        self,
        store: MemoryStore,
        *,
        anonymise: Callable[[str], str],
        short_term_messages: int = 20,
        recall_limit: int = 3,
    ) -> None:
        self.store = store
        self._anonymise = anonymise
        self.short_term_messages = short_term_messages
        self.recall_limit = recall_limit
        # Anonymised copies by case id: other users' cases are few and recalled often.
        self._anon_cache: dict[str, MemoryCase] = {}

    async def history(self, session_id: str) -> list[ChatMessage]:
        return await self.store.recent_messages(session_id, self.short_term_messages)

    async def similar_cases(
        self, user_id: str, vector: Vector, limit: int | None = None
    ) -> list[tuple[MemoryCase, float]]:
        """The user's similar cases as stored, other users' ones anonymised."""
        found = await self.store.search_cases(
            vector, user_id=user_id, limit=limit or self.recall_limit, include_shared=True
        )
        return [
            (case if case.user_id == user_id else self._anonymised(case), score)
            for case, score in found
        ]

    async def recall(self, user_id: str, vector: Vector) -> list[ContextItem]:
        """Similar past cases as context items (cases still awaiting an answer are skipped)."""
        if self.recall_limit <= 0:
            return []
        found = await self.store.search_cases(
            vector, user_id=user_id, limit=self.recall_limit, include_shared=True
        )
        items = []
        for case, score in found:
            if case.user_id != user_id:
                case = self._anonymised(case)
            if case.answer:
                items.append(ContextItem("memory", case.case_id, case.question, case.answer, score))
        return items

    def _anonymised(self, case: MemoryCase) -> MemoryCase:
        copy = self._anon_cache.get(case.case_id)
        if copy is None or copy.resolved != case.resolved:
            copy = dataclasses.replace(
                case,
                user_id=None,
                question=self._anonymise(case.question),
                answer=self._anonymise(case.answer),
            )
            if len(self._anon_cache) >= _ANON_CACHE_SIZE:
                self._anon_cache.clear()
            self._anon_cache[case.case_id] = copy
        return copy

    async def remember(
        self,
        *,
        session_id: str,
        user_id: str,
        question: str,
        shown: str,
        answer: str,
        intent: str,
        thread_id: str | None,
        vector: Vector | None,
        now: float,
        resolved: bool = False,
        as_case: bool = True,
    ) -> MemoryCase | None:
        """Keep the exchange in short-term memory and as an episodic case.

        `shown` is what the user read; `answer` is empty when the reply was escalated,
        because no human has answered yet. `as_case=False` keeps only the messages
        (a closing "thanks!" is not a case worth recalling).
        """
        await self.store.append_messages(
            session_id, (ChatMessage("user", question), ChatMessage("assistant", shown))
        )
        if not as_case:
            return None
        case = MemoryCase(
            case_id=new_id(),
            user_id=user_id,
            question=question,
            answer=answer,
            intent=intent,
            created_at=now,
            thread_id=thread_id,
            resolved=resolved,
            effectiveness=1.0 if resolved else 0.0,
            vector=vector,
        )
        await self.store.add_case(case)
        return case

    async def resolve_thread(self, user_id: str, thread_id: str, effectiveness: float = 1.0) -> int:
        return await self.store.resolve_thread(user_id, thread_id, effectiveness)

    async def forget_user(self, user_id: str) -> None:
        await self.store.forget_user(user_id)
        self._anon_cache.clear()
