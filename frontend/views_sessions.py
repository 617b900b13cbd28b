"""The conversation page (``/sessions/<id>/``): an end user's messages, live, and human takeover.

Everyone who may read runs reads the conversation; reviewers, operators and owners take it
over, answer the end user themselves and hand it back (:mod:`agentflow.takeover` decides;
the page only asks). New messages arrive over the live socket (``session.*`` events, and
``run.updated`` for the agent's own turns): the page re-reads its ``conversation`` fragment.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect

from agentflow import takeover
from agentflow.api.serializers import MESSAGE_MAX_CHARS, MessageSerializer
from agentflow.core.api.exceptions import ContractError
from agentflow.core.api.serializers import unstorable_text
from agentflow.models import AgentSession, Message, SessionMode
from frontend.access import DashboardView
from governance.services import restrict_to_visible_agents

ACTIONS = ("takeover", "handback", "reply")
DONE = {
    "takeover": "You have taken this conversation over: the agent stays silent until you hand "
    "it back.",
    "handback": "Handed back: the agent answers the next message.",
    "reply": "Your reply went to the customer.",
}


class ReplyForm(forms.Form):
    content = forms.CharField(max_length=MESSAGE_MAX_CHARS)

    def clean_content(self) -> str:
        content = str(self.cleaned_data["content"])
        if unstorable_text(content, "content") is not None:
            raise forms.ValidationError("Contains a NUL character or invalid Unicode.")
        return content


def _conversation(session: AgentSession) -> dict[str, Any]:
    rows = Message.objects.filter(session=session).select_related("author")
    return {
        "session": takeover.session_body(session),
        "messages": MessageSerializer(rows.order_by("created_at", "id"), many=True).data,
    }


class SessionDetailView(DashboardView):
    page = "sessions"

    def live_events(self) -> tuple[str, ...]:
        return ("session.*", "run.updated")

    def _session(self, request: HttpRequest, session_id: Any) -> AgentSession:
        assert self.access.tenant is not None
        rows = restrict_to_visible_agents(
            AgentSession.objects.select_related("agent", "taken_by"),
            request.user,
            self.access.tenant.pk,
            "agent",
        )
        session = rows.filter(pk=session_id).first()
        if session is None:
            raise Http404
        return session

    def get(self, request: HttpRequest, session_id: Any) -> HttpResponse:
        session = self._session(request, session_id)
        if request.GET.get("fragment") == "conversation":
            return JsonResponse(_conversation(session))
        return self._render(request, session, ReplyForm())

    def post(self, request: HttpRequest, session_id: Any) -> HttpResponse:
        session = self._session(request, session_id)  # 404 before anything else: no oracle
        action = request.POST.get("action", "")
        form = ReplyForm(request.POST if action == "reply" else None)
        if action not in ACTIONS:
            return self._render(request, session, form, 422, f"Unknown action {action!r}.")
        self.require(self.access.can_review)
        if action == "reply" and not form.is_valid():
            return self._render(request, session, form, status=422)
        try:
            self._act(request, session, action, form)
        except ContractError as exc:
            fresh = self._session(request, session_id)
            return self._render(request, fresh, form, exc.status_code, str(exc.detail))
        messages.success(request, DONE[action])
        return redirect(f"/sessions/{session.pk}/")

    def _act(
        self, request: HttpRequest, session: AgentSession, action: str, form: ReplyForm
    ) -> None:
        actor, user = self.access.actor, request.user
        if action == "takeover":
            takeover.take_over(actor=actor, user=user, session=session)
        elif action == "handback":
            takeover.hand_back(actor=actor, user=user, session=session)
        else:
            content = form.cleaned_data["content"]
            takeover.reply(actor=actor, user=user, session=session, content=content)

    def _render(
        self,
        request: HttpRequest,
        session: AgentSession,
        form: ReplyForm,
        status: int = 200,
        problem: str = "",
    ) -> HttpResponse:
        data = _conversation(session)
        human = session.mode == SessionMode.HUMAN
        return self.render_page(
            request,
            "frontend/session_detail.html",
            {
                "title": "Conversation",
                "session": session,
                "data": data,
                "human": human,
                "mine": human and session.taken_by_id == request.user.pk,
                "form": form,
                "problem": problem,
            },
            status=status,
        )
