"""The `agentflow` command line, run as a real subprocess with piped stdin."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentflow.cli import main

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
name: helpdesk
intents:
  categories:
    - name: LOGIN
      examples: ["I can't log in", "my login is broken", "password reset does not work"]
    - name: BILLING
      examples: ["my invoice is wrong", "I was charged twice", "refund please"]
confidence:
  default_threshold: 0.5
"""
KNOWLEDGE = [
    {
        "id": "kb-login",
        "title": "Fixing login problems",
        "text": "If your login is broken, clear your browser cookies and reset your password.",
    }
]


def run_subprocess(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "agentflow.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """In-process `main` (fast); stderr is captured by redirecting sys.stderr."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stderr
    sys.stderr = err
    try:
        code = main(list(args), stdin=io.StringIO(stdin), stdout=out)
    except SystemExit as exit_:  # argparse usage errors
        code = int(exit_.code or 0)
    finally:
        sys.stderr = saved
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    config = tmp_path / "agent.yaml"
    config.write_text(CONFIG)
    knowledge = tmp_path / "kb.json"
    knowledge.write_text(json.dumps(KNOWLEDGE))
    train = tmp_path / "train.csv"
    train.write_text(
        "text,category\n"
        + "".join(
            f"{t},LOGIN\n"
            for t in [
                "I can't log in",
                "login broken",
                "reset my password",
                "forgot password",
                "sign in fails",
            ]
        )
        + "".join(
            f"{t},BILLING\n"
            for t in [
                "invoice wrong",
                "charged twice",
                "refund please",
                "billing error",
                "payment failed",
            ]
        )
    )
    test = tmp_path / "test.csv"
    test.write_text("text,category\nmy login is broken,LOGIN\nI want a refund,BILLING\n")
    return {"config": config, "knowledge": knowledge, "train": train, "test": test}


def test_chat_answers_each_line_of_a_piped_conversation(files: dict[str, Path]) -> None:
    # A real process with a pipe for stdin: the console script must work without a TTY.
    result = run_subprocess(
        "chat",
        "--config",
        str(files["config"]),
        "--knowledge",
        str(files["knowledge"]),
        stdin="My login is broken\n\nWhat is the meaning of life?\nThanks, that fixed it!\n",
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("agent> If your login is broken")
    assert lines[1].startswith("agent> ")  # the out-of-scope question is escalated
    assert lines[2] == "       (escalated to a human: out_of_scope)"
    assert "resolved" in lines[3]
    assert len(lines) == 4


def test_chat_json_mode_prints_one_reply_object_per_message(files: dict[str, Path]) -> None:
    result = run(
        "chat",
        "--config",
        str(files["config"]),
        "--json",
        stdin="I was charged twice\n/quit\nnot read\n",
    )

    assert result.returncode == 0, result.stderr
    replies = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(replies) == 1
    assert replies[0]["intent"] == "BILLING"
    assert replies[0]["metadata"]["offline"] is True


def test_chat_without_config_runs_offline() -> None:
    result = run("chat", stdin="hello\n")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("agent> ")


def test_chat_reports_a_missing_config_file(tmp_path: Path) -> None:
    result = run("chat", "--config", str(tmp_path / "nope.yaml"))

    assert result.returncode == 2
    assert "nope.yaml does not exist" in result.stderr


def test_chat_reports_the_bad_field_of_a_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("session:\n  ttl_seconds: -5\n")

    result = run("chat", "--config", str(bad))

    assert result.returncode == 2
    assert "session.ttl_seconds" in result.stderr
    assert "greater than 0" in result.stderr


def test_eval_intents_prints_one_json_object(files: dict[str, Path]) -> None:
    result = run("eval-intents", "--train", str(files["train"]), "--test", str(files["test"]))

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n_test"] == 2
    assert report["n_categories"] == 2
    assert 0.0 <= report["accuracy"] <= 1.0
    assert "macro_f1" in report


def test_eval_intents_sweeps_and_sets_the_novelty_keep(tmp_path: Path) -> None:
    train = tmp_path / "train.csv"
    rows = [f"{verb} my password {n},PASSWORD" for verb in ("reset", "lost") for n in range(10)]
    rows += [f"{verb} my card {n},CARD" for verb in ("block", "freeze") for n in range(10)]
    train.write_text("text,category\n" + "\n".join(rows) + "\n")
    test = tmp_path / "test.csv"
    test.write_text("text,category\nreset my password,PASSWORD\nlunch,oos\n")
    common = ("eval-intents", "--train", str(train), "--test", str(test), "--oos-label", "oos")

    result = run(*common, "--encoder", "none", "--novelty-keep", "0.9", "--sweep", "1, 0.5")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["novelty_keep"] == 0.9
    assert [row["novelty_keep"] for row in report["sweep"]] == [1.0, 0.5]
    for bad, reason in (
        (("--novelty-keep", "0"), "--novelty-keep must be within (0, 1]"),
        (("--sweep", "0.9,x"), "--sweep: 'x' is not a number"),
        (("--sweep", "1.5"), "--sweep: 1.5 is not within (0, 1]"),
    ):
        refused = run(*common, *bad)
        assert refused.returncode == 2, bad
        assert reason in refused.stderr


def test_eval_intents_rejects_missing_files_and_bad_csv(
    files: dict[str, Path], tmp_path: Path
) -> None:
    missing = run("eval-intents", "--train", str(tmp_path / "x.csv"), "--test", str(files["test"]))
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("words,label\nhello,GREETING\n")
    malformed = run("eval-intents", "--train", str(bad_csv), "--test", str(files["test"]))
    usage = run("eval-intents", "--train", str(files["train"]))

    assert missing.returncode == 2
    assert "x.csv does not exist" in missing.stderr
    assert malformed.returncode == 2
    assert "missing column" in malformed.stderr
    assert usage.returncode == 2
    assert "--test" in usage.stderr
