"""A frustrated customer reaches a person sooner (issue 18): the support agent's `sentiment`
section, set through the API, on a real Celery worker."""

from __future__ import annotations

from typing import Any

import pytest

from tests.platform.api.conftest import SUPPORT_CONFIG, Persona
from tests.platform.api.test_bad_input import assert_field_errors, nothing_written

pytestmark = pytest.mark.django_db(transaction=True)

FURIOUS = (
    "I forgot my password and the reset link STILL does not work. Third time I ask, "
    "nobody has replied, this is a joke and I am fed up!"
)


def _run(owner: Persona, agent_id: Any, user_id: str, message: str) -> dict[str, Any]:
    response = owner.post(
        f"/api/v1/agents/{agent_id}/runs",
        {"user_id": user_id, "message": message},
        headers={"Prefer": "wait=20"},
    )
    assert response.status_code == 201, response.json()
    body: dict[str, Any] = response.json()
    return body


def test_a_furious_message_goes_to_a_person_a_calm_one_is_answered(
    owner: Persona, agent: Any, celery_worker_app: object
) -> None:
    config = {**SUPPORT_CONFIG, "sentiment": {"escalate_below": -0.6}}
    updated = owner.patch(f"/api/v1/agents/{agent.pk}", {"config": config})
    assert updated.status_code == 200, updated.json()
    assert updated.json()["config"]["sentiment"] == {
        "escalate_below": -0.6,
        "drop_delta": None,
        "window": 5,
    }

    furious = _run(owner, agent.pk, "angry", FURIOUS)
    calm = _run(owner, agent.pk, "calm", "How do I reset my password?")

    assert furious["status"] == "awaiting_review"
    assert furious["result"]["escalated"] is True
    assert furious["result"]["escalation_reason"] == "frustrated"
    sentiment = furious["result"]["metadata"]["sentiment"]
    assert sentiment["score"] <= -0.6
    assert sentiment["frustrated"] is True

    assert calm["status"] == "completed"
    assert calm["result"]["escalated"] is False
    assert "Reset password" in calm["result"]["content"]
    assert calm["result"]["metadata"]["sentiment"]["frustrated"] is False


def test_the_section_is_off_by_default(
    owner: Persona, agent: Any, celery_worker_app: object
) -> None:
    assert owner.get(f"/api/v1/agents/{agent.pk}").json()["config"]["sentiment"] is None

    furious = _run(owner, agent.pk, "angry", FURIOUS)

    assert furious["result"]["escalation_reason"] != "frustrated"
    assert "sentiment" not in furious["result"]["metadata"]


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"escalate_below": 0.5}, "sentiment.escalate_below"),
        ({"escalate_below": "very"}, "sentiment.escalate_below"),
        ({"drop_delta": -1}, "sentiment.drop_delta"),
        ({"window": 1000}, "sentiment.window"),
        ({"below": -0.5}, "sentiment.below"),
    ],
)
def test_bad_sentiment_settings_are_422_naming_the_field(
    owner: Persona, agent: Any, section: dict[str, Any], field: str
) -> None:
    before = owner.get(f"/api/v1/agents/{agent.pk}").json()

    with nothing_written(owner.tenant):
        response = owner.patch(
            f"/api/v1/agents/{agent.pk}", {"config": {**SUPPORT_CONFIG, "sentiment": section}}
        )

    assert_field_errors(response, field)
    after = owner.get(f"/api/v1/agents/{agent.pk}").json()
    assert (after["config"], after["version"]) == (before["config"], before["version"])
