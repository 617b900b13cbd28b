"""code_review_agent with a model configured: its findings add to the rules', anchored to
added lines only; a failing or malformed answer leaves the rules' review. Against a real
OpenAI-compatible HTTP server (tests/kernel/fake_openai_server.py)."""

from __future__ import annotations

import json
from typing import Any

from agentflow.kernel.blueprints import reply_of
from agentflow.kernel.blueprints.code_review import CodeReviewAgent, parse_diff, review_diff
from tests.kernel.blueprints.test_code_review import RISKY
from tests.kernel.fake_openai_server import (
    FakeOpenAIServer,
    ScriptedResponse,
    chat_completion,
    error,
    strict_provider,
)

# An authorisation check weakened: no pattern rule sees it, a reviewer does.
BYPASS = """\
diff --git a/accounts/views.py b/accounts/views.py
--- a/accounts/views.py
+++ b/accounts/views.py
@@ -20,4 +20,4 @@ def delete_account(request, account_id):
     account = Account.objects.get(pk=account_id)
-    if account.owner_id != request.user.id:
+    if account.owner_id != request.user.id and not settings.DEBUG:
         raise PermissionDenied
     account.delete()
diff --git a/tests/test_accounts.py b/tests/test_accounts.py
--- a/tests/test_accounts.py
+++ b/tests/test_accounts.py
@@ -1,2 +1,3 @@
 from accounts.views import delete_account
+# covered by test_delete_requires_owner
"""
BYPASS_FINDING = {
    "file": "accounts/views.py",
    "line": 21,
    "severity": "high",
    "message": "The ownership check is skipped whenever DEBUG is on.",
}


def _findings(*items: dict[str, Any]) -> ScriptedResponse:
    return chat_completion(json.dumps({"findings": list(items)}))


async def _review(server: FakeOpenAIServer, diff: str) -> tuple[dict[str, Any], Any]:
    async with strict_provider(server) as llm:
        result = await CodeReviewAgent({}, llm=llm).run(diff)
    output: dict[str, Any] = result.state.plan_state.state["output"]
    return output, reply_of(result, "ci", 0.0)


async def test_the_model_finds_what_the_rules_cannot_anchored_to_an_added_line() -> None:
    assert review_diff(parse_diff(BYPASS)) == []  # the rules see nothing
    with FakeOpenAIServer() as server:
        server.enqueue(
            _findings(
                BYPASS_FINDING,
                {**BYPASS_FINDING, "line": 22, "message": "not an added line"},
                {**BYPASS_FINDING, "file": "accounts/models.py", "message": "not in the diff"},
                {**BYPASS_FINDING, "line": 1, "severity": "fatal"},
            )
        )
        output, reply = await _review(server, BYPASS)
        sent = server.sent_text()

    assert output["reviewed_by"] == "llm+rules"
    assert output["findings"] == [
        {
            "rule": "llm_review",
            "severity": "high",
            "file": "accounts/views.py",
            "line": 21,
            "message": "The ownership check is skipped whenever DEBUG is on.",
            "excerpt": "if account.owner_id != request.user.id and not settings.DEBUG:",
        }
    ]
    assert output["verdict"] == "request_changes"
    assert reply.escalated  # a high finding goes to a person, whoever found it
    assert "accounts/views.py:21:     if account.owner_id" in sent
    assert "tests/test_accounts.py:2: # covered by" in sent


async def test_a_line_the_rules_flagged_is_not_reported_twice() -> None:
    offline = review_diff(parse_diff(RISKY))
    flagged = offline[0]
    with FakeOpenAIServer() as server:
        server.enqueue(_findings({**BYPASS_FINDING, "file": flagged.file, "line": flagged.line}))
        output, _ = await _review(server, RISKY)

    assert output["reviewed_by"] == "llm+rules"
    assert [f["rule"] for f in output["findings"]] == [f.rule for f in offline]


async def test_a_failing_or_malformed_model_leaves_the_rules_review() -> None:
    offline = [f.rule for f in review_diff(parse_diff(RISKY))]
    for answer in (
        error(500),
        chat_completion("Looks fine to me."),
        chat_completion('{"findings": "none"}'),
    ):
        with FakeOpenAIServer() as server:
            server.enqueue(answer)
            output, reply = await _review(server, RISKY)
        assert output["reviewed_by"] == "rules", answer
        assert [f["rule"] for f in output["findings"]] == offline
        assert reply.escalated


async def test_without_a_model_the_rules_review_alone() -> None:
    result = await CodeReviewAgent({}).run(BYPASS)

    output = result.state.plan_state.state["output"]
    assert output["reviewed_by"] == "rules"
    assert output["verdict"] == "approve"
