"""code_review_agent offline: realistic diffs, findings anchored to file and line."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.kernel.blueprints import reply_of
from agentflow.kernel.blueprints.code_review import CodeReviewAgent, parse_diff, review_diff

RISKY = """\
diff --git a/billing/export.py b/billing/export.py
index 3f1c2ab..9d0e4f1 100644
--- a/billing/export.py
+++ b/billing/export.py
@@ -10,6 +10,18 @@ import requests
 from billing.models import Invoice


+STRIPE_KEY = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
+
+
 def export(customer_id, since):
-    rows = Invoice.objects.filter(customer_id=customer_id)
+    cursor = connection.cursor()
+    cursor.execute(f"SELECT * FROM invoices WHERE customer = {customer_id}")
+    rows = cursor.fetchall()
+    try:
+        requests.post(WEBHOOK, json=rows, verify=False)
+    except Exception:
+        pass
+    total = eval(request.GET["expr"])
     return rows
"""

CLEAN = """\
diff --git a/app/greeting.py b/app/greeting.py
--- a/app/greeting.py
+++ b/app/greeting.py
@@ -1,3 +1,4 @@
 def greet(name):
-    return "Hello " + name
+    cleaned = name.strip()
+    return f"Hello {cleaned}"
diff --git a/tests/test_greeting.py b/tests/test_greeting.py
--- a/tests/test_greeting.py
+++ b/tests/test_greeting.py
@@ -1,2 +1,5 @@
 from app.greeting import greet
+
+def test_strips():
+    assert greet("  Ann ") == "Hello Ann"
"""


def test_added_lines_are_numbered_as_in_the_new_file() -> None:
    files = parse_diff(RISKY)
    assert [f.path for f in files] == ["billing/export.py"]
    numbered = dict(files[0].added)
    assert numbered[13] == 'STRIPE_KEY = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"'
    assert numbered[18].strip().startswith("cursor.execute(f")


def test_each_risky_pattern_is_found_at_its_line() -> None:
    findings = review_diff(parse_diff(RISKY))
    by_rule = {(f.rule, f.line) for f in findings}
    assert ("secret", 13) in by_rule
    assert ("sql_from_strings", 18) in by_rule
    assert ("tls_disabled", 21) in by_rule
    assert ("broad_except", 22) in by_rule
    assert ("eval_exec", 24) in by_rule
    assert ("tests_missing", 13) in by_rule  # a source file changed, no test did
    assert all(f.file == "billing/export.py" for f in findings)


def test_a_clean_change_with_its_test_has_no_findings() -> None:
    assert review_diff(parse_diff(CLEAN)) == []


def test_safe_lookalikes_are_not_flagged() -> None:
    diff = (
        "+++ b/app/db.py\n@@ -1,0 +1,5 @@\n"
        '+cursor.execute("SELECT * FROM t WHERE id = %s", [user_id])\n'
        '+password = os.environ["DB_PASSWORD"]\n'
        "+data = yaml.load(text, Loader=yaml.SafeLoader)\n"
        "+model.evaluate(batch)\n"
        "+except ValueError:\n"
    )
    findings = review_diff(parse_diff(diff), disabled=["tests_missing"])
    assert findings == []


def test_disabled_rules_are_skipped() -> None:
    findings = review_diff(parse_diff(RISKY), disabled=["secret", "tests_missing"])
    assert {f.rule for f in findings} == {
        "sql_from_strings",
        "tls_disabled",
        "broad_except",
        "eval_exec",
    }


async def _review(text: str, **config: Any) -> Any:
    agent = CodeReviewAgent(config)
    result = await agent.run(text, user_id="ci")
    return reply_of(result, "ci", 0.0)


async def test_high_findings_escalate_with_the_report_as_proposed_answer() -> None:
    reply = await _review(RISKY)
    output = reply.metadata["output"]
    assert output["verdict"] == "request_changes"
    assert output["summary"] == {"high": 4, "medium": 1, "low": 1}
    assert reply.escalated
    assert reply.escalation_reason == "risky_change"
    assert "billing/export.py:18 [high] sql_from_strings" in (reply.proposed_answer or "")
    assert [step.node for step in reply.plan_path] == ["parse", "scan", "report"]


@pytest.mark.parametrize(
    ("escalate_on", "escalated"), [("high", False), ("low", True), ("never", False)]
)
async def test_escalation_threshold_is_configurable(escalate_on: str, escalated: bool) -> None:
    medium_only = "+++ b/tools/run.py\n@@ -1,0 +1,1 @@\n+subprocess.run(cmd, shell=True)\n"
    reply = await _review(medium_only, escalate_on=escalate_on)
    assert reply.escalated is escalated
    assert reply.metadata["output"]["verdict"] == "comment"


async def test_a_clean_diff_is_approved_without_escalation() -> None:
    reply = await _review(CLEAN)
    assert not reply.escalated
    assert reply.metadata["output"]["verdict"] == "approve"
    assert reply.content.startswith("No risky patterns found in 2 changed file(s)")


async def test_text_that_is_not_a_diff_takes_the_error_branch() -> None:
    reply = await _review("please review my code, it is great")
    assert reply.metadata["output"]["verdict"] == "invalid"
    assert "unified diff" in reply.content
    assert [(s.node, s.outcome) for s in reply.plan_path] == [
        ("parse", "error"),
        ("not_a_diff", "success"),
    ]
    assert not reply.escalated


async def test_an_oversized_diff_is_refused_by_the_limit() -> None:
    reply = await _review(RISKY, max_diff_chars=100)
    assert reply.metadata["output"]["error"] == "the diff is longer than 100 characters"
