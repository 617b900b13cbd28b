"""sentiment_monitor_agent offline: VADER + support phrases, trend, frustration alerts."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agentflow.kernel.agents import AgentRunResult
from agentflow.kernel.blueprints.sentiment_monitor import (
    FrustrationSettings,
    PastMessage,
    SentimentMonitorAgent,
    assess_messages,
    customer_text,
    score_sentiment,
)
from agentflow.kernel.guardrails import wrap_untrusted
from agentflow.kernel.planning.model import StepRecord

CALM = [
    "Hi, my CSV export fails with an 'unexpected column' error. Can you help?",
    "Thanks for the quick reply, I'll try the new template.",
    "That worked for the first file, great!",
]
ANGRY = (
    "This is ridiculous. It's still not working after your 'fix' and nobody has called me "
    "back. Third time I'm asking."
)


def path(result: AgentRunResult) -> list[StepRecord]:
    assert result.plan is not None
    return result.plan.path


class History:
    """The customer's earlier messages, per thread ("" for messages outside any thread)."""

    def __init__(self, messages: dict[str, list[str]], *, fail: bool = False) -> None:
        self.messages = messages
        self.fail = fail
        self.calls: list[tuple[str, str | None, int]] = []

    async def previous_messages(
        self, user_id: str, *, thread_id: str | None, limit: int
    ) -> Sequence[PastMessage]:
        self.calls.append((user_id, thread_id, limit))
        if self.fail:
            raise ConnectionError("database unavailable")
        if thread_id is None:
            texts = [text for texts in self.messages.values() for text in texts]
        else:
            texts = self.messages.get(thread_id, [])
        return [PastMessage(text) for text in texts[-limit:]]


def test_labels_follow_the_tone_of_real_messages() -> None:
    assert score_sentiment("Thanks so much, that fixed it! Great support.").label == "positive"
    assert score_sentiment("How do I download last year's invoices?").label == "neutral"
    angry = score_sentiment("Your service is a joke, I want to cancel my subscription.")
    assert angry.label == "negative"
    assert angry.compound <= -0.5


def test_support_phrases_vader_alone_reads_as_neutral_count_as_negative() -> None:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    text = "Still not working. I have been waiting for 3 days."
    assert SentimentIntensityAnalyzer().polarity_scores(text)["compound"] == 0.0
    assert score_sentiment(text).compound <= -0.5


def test_an_angry_message_after_calm_ones_alerts_for_frustration_and_decline() -> None:
    assessment = assess_messages(ANGRY, CALM)
    assert assessment.alert is True
    assert assessment.reasons == ["frustration", "rapid_decline"]
    customer = assessment.trend["customer"]
    assert customer["messages"] == 4
    assert customer["direction"] == "worsening"
    assert customer["delta"] <= -0.6
    assert customer["recent"][-1] == assessment.sentiment.compound


def test_a_fast_drop_alerts_before_the_threshold_is_crossed() -> None:
    happy = ["Love the new dashboard, thank you!", "Great, that works perfectly. Thanks!"]
    message = "Hmm, the export doesn't work now."
    assessment = assess_messages(message, happy)
    assert assessment.sentiment.compound > -0.5  # not frustrated on its own
    assert assessment.reasons == ["rapid_decline"]


def test_a_customer_calming_down_is_no_alert() -> None:
    earlier = [ANGRY, "Still broken. This is a waste of time."]
    assessment = assess_messages("Okay, it works now. Thank you for sorting it out!", earlier)
    assert assessment.alert is False
    assert assessment.reasons == []
    assert assessment.trend["customer"]["direction"] == "improving"


def test_thresholds_are_configurable() -> None:
    lenient = FrustrationSettings(frustration_threshold=-0.95, drop_delta=2.0)
    assert assess_messages(ANGRY, CALM, settings=lenient).alert is False
    strict = FrustrationSettings(frustration_threshold=0.0)
    assert assess_messages("The app crashes when I upload a file", settings=strict).alert


def test_the_window_bounds_the_messages_compared() -> None:
    assessment = assess_messages(ANGRY, CALM, settings=FrustrationSettings(window=1))
    assert len(assessment.trend["customer"]["recent"]) == 2  # one previous + this one


def test_a_decline_within_the_thread_alerts_even_when_the_customer_is_mixed() -> None:
    older = ["Still broken. This is a waste of time."] * 3
    thread = ["Thanks, the new invoice looks right!"]
    message = "Wait, the VAT line disappeared again."
    assessment = assess_messages(message, older + thread, thread_previous=thread)
    assert assessment.trend["customer"]["direction"] != "worsening"
    assert assessment.trend["thread"]["delta"] <= -0.6
    assert assessment.reasons == ["rapid_decline"]


async def test_the_agent_escalates_a_frustrated_customer_with_its_reasons() -> None:
    history = History({"": CALM})
    agent = SentimentMonitorAgent({}, history=history)
    result = await agent.run(ANGRY, user_id="cust-7", context={"metadata": {}})
    plan = result.state.plan_state
    assert [step.node for step in path(result)] == ["score", "trend", "assess", "alert"]
    assert plan.state["escalate"] is True
    assert plan.state["escalation_reason"] == "frustration: frustration, rapid_decline"
    output = plan.state["output"]
    assert output["alert"] is True
    assert output["sentiment"]["label"] == "negative"
    assert output["trend"]["customer"]["messages"] == 4
    assert history.calls == [("cust-7", None, 50)]


async def test_the_agent_reads_the_thread_named_in_the_run_metadata() -> None:
    history = History({"": CALM, "th-1": ["Thanks, the new invoice looks right!"]})
    agent = SentimentMonitorAgent({"history_limit": 10}, history=history)
    result = await agent.run(
        "Thanks, all good now.", user_id="cust-7", context={"metadata": {"thread_id": "th-1"}}
    )
    assert history.calls == [("cust-7", None, 10), ("cust-7", "th-1", 10)]
    output = result.state.plan_state.state["output"]
    assert output["trend"]["thread"]["messages"] == 2
    assert output["alert"] is False
    assert [step.node for step in path(result)][-1] == "report"
    assert result.state.plan_state.state["escalate"] is False


async def test_without_history_the_message_is_judged_on_its_own() -> None:
    agent = SentimentMonitorAgent({}, history=History({}, fail=True))
    result = await agent.run(ANGRY, user_id="cust-7")
    output = result.state.plan_state.state["output"]
    assert output["trend"]["unavailable"] is True
    assert output["reasons"] == ["frustration"]
    assert path(result)[1].status == "error"


@pytest.mark.parametrize("escalate", [True, False])
async def test_escalation_on_alert_can_be_turned_off(escalate: bool) -> None:
    agent = SentimentMonitorAgent({"escalate_on_alert": escalate}, history=History({}))
    result = await agent.run(ANGRY, user_id="cust-7")
    assert result.state.plan_state.state["output"]["alert"] is True
    assert result.state.plan_state.state["escalate"] is escalate


async def test_a_webhook_message_is_scored_on_the_customers_words_not_the_fence() -> None:
    fenced = wrap_untrusted(ANGRY, "zendesk webhook zendesk:ticket:9")
    assert customer_text(fenced) == ANGRY
    history = History({"": [wrap_untrusted(text, "zendesk webhook") for text in CALM]})
    result = await SentimentMonitorAgent({}, history=history).run(fenced, user_id="cust-7")
    output = result.state.plan_state.state["output"]
    assert output == {**assess_messages(ANGRY, CALM).to_dict(), "scored_by": "offline"}
