"""The `agentflow` command line.

    agentflow chat [--config FILE] [--knowledge FILE] [--user ID] [--json]
    agentflow eval-intents --train CSV --test CSV [--oos-label LABEL] [--oos-threshold X]
    agentflow validate FILE [FILE ...] [--steps A,B] [--tools T,U] [--agents X,Y]
    agentflow preflight CONFIG --message TEXT [--knowledge FILE] [--spent USD]

`chat` talks to an agent in the terminal (offline unless the config names an LLM);
it reads one message per line from stdin, so it also works in a pipe. `eval-intents`
trains the offline intent classifier and prints one JSON object of metrics. `validate`
checks planner definitions (FSM, behavior tree, LLM) and prints every error with its line;
`preflight` prints the cost estimate of an agent's plan for one message, without running it.
Bad paths, configs or data (and invalid plans) exit with status 2 and a one-line reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

EXIT_USAGE = 2


class UsageError(Exception):
    """A user mistake: reported in one line, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentflow", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    chat = commands.add_parser("chat", help="talk to an agent in the terminal")
    chat.add_argument("--config", type=Path, help="agent configuration (.yaml, .yml or .json)")
    chat.add_argument(
        "--knowledge",
        type=Path,
        help="knowledge articles: a JSON or YAML list of {id, title, text}",
    )
    chat.add_argument("--user", default="cli-user", help="user id of this conversation")
    chat.add_argument("--json", action="store_true", help="print each reply as one JSON object")

    evaluate = commands.add_parser(
        "eval-intents", help="train and score the offline intent classifier on CSV files"
    )
    evaluate.add_argument("--train", type=Path, required=True, help="CSV with text,category")
    evaluate.add_argument("--test", type=Path, required=True, help="CSV with text,category")
    evaluate.add_argument("--oos-label", help="category label that means out of scope")
    evaluate.add_argument("--oos-threshold", type=float, help="out-of-scope threshold in [0, 1]")

    validate = commands.add_parser("validate", help="check planner definitions (YAML or JSON)")
    validate.add_argument("files", nargs="+", type=Path, help="plan or agent config files")
    for name, what in (("steps", "built-in steps"), ("tools", "tool ids"), ("agents", "agents")):
        validate.add_argument(
            f"--{name}", help=f"comma-separated {what} a plan may name (unchecked if omitted)"
        )

    preflight = commands.add_parser(
        "preflight", help="estimate the tokens and dollars of a plan for one message"
    )
    preflight.add_argument("config", type=Path, help="agent configuration (.yaml or .json)")
    preflight.add_argument("--message", required=True, help="the message to estimate for")
    preflight.add_argument("--knowledge", type=Path, help="knowledge articles (JSON/YAML list)")
    preflight.add_argument("--spent", type=float, default=0.0, help="USD already spent")
    return parser


def _existing_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UsageError(f"{what} {path} does not exist or is not a file")
    return path


def _load_documents(path: Path) -> list[Any]:
    import yaml

    try:
        data = yaml.safe_load(_existing_file(path, "knowledge file").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read knowledge file {path}: {exc}") from exc
    if not isinstance(data, list):
        raise UsageError(f"knowledge file {path} must hold a list of {{id, title, text}}")
    return data


async def _chat(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    from agentflow.kernel.builder import AgentFrameworkBuilder
    from agentflow.kernel.config import ConfigError

    builder = AgentFrameworkBuilder()
    if args.config is not None:
        builder.with_config(_existing_file(args.config, "config file"))
    try:
        if args.knowledge is not None:
            builder.with_knowledge(_load_documents(args.knowledge))
        agent = await builder.build()
    except ConfigError as exc:
        raise UsageError(str(exc).replace("\n", " ")) from exc
    interactive = stdin.isatty()
    if interactive:
        offline = all(p.kind == "offline" for p in agent.config.llm.providers)
        mode = "offline" if offline else "LLM"
        print(f"{agent.name} ({mode}); /quit or Ctrl-D to leave.", file=stdout)
    try:
        while True:
            if interactive:
                print("you> ", end="", file=stdout, flush=True)
            line = await asyncio.to_thread(stdin.readline)
            if not line:
                break
            message = line.strip()
            if not message:
                continue
            if message in ("/quit", "/exit"):
                break
            reply = await agent.process_message(args.user, message)
            if args.json:
                print(json.dumps(reply.to_dict(), default=str), file=stdout, flush=True)
                continue
            print(f"agent> {reply.content}", file=stdout)
            if reply.escalated:
                print(
                    f"       (escalated to a human: {reply.escalation_reason})",
                    file=stdout,
                )
            stdout.flush()
    finally:
        await agent.aclose()
    return 0


def _eval_intents(args: argparse.Namespace, stdout: TextIO) -> int:
    from agentflow.kernel.intents_eval import evaluate

    train = _existing_file(args.train, "training CSV")
    test = _existing_file(args.test, "test CSV")
    if args.oos_threshold is not None and not 0.0 <= args.oos_threshold <= 1.0:
        raise UsageError("--oos-threshold must be within [0, 1]")
    try:
        report = evaluate(train, test, args.oos_label, oos_threshold=args.oos_threshold)
    except (OSError, UnicodeDecodeError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot evaluate: {exc}") from exc
    print(json.dumps(report, sort_keys=True), file=stdout)
    return 0


def _names(value: str | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def _validate(args: argparse.Namespace, stdout: TextIO) -> int:
    from agentflow.kernel.planning.parsing import Known
    from agentflow.kernel.planning.source import PlanValidationError
    from agentflow.kernel.planning.validation import load_document

    known = Known(_names(args.steps), _names(args.tools), _names(args.agents))
    status = 0
    for path in args.files:
        try:
            text = _existing_file(path, "plan file").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from exc
        try:
            plans = load_document(text, known=known)
        except PlanValidationError as exc:
            status = EXIT_USAGE
            for error in exc.errors:
                print(f"{path}: {error}", file=stdout)
            print(f"{path}: {len(exc.errors)} error(s)", file=stdout)
            continue
        summary = "; ".join(plan.summary() for plan in plans)
        print(f"{path}: ok ({summary})", file=stdout)
    return status


def _preflight(args: argparse.Namespace, stdout: TextIO) -> int:
    import yaml

    from agentflow.kernel.costs import Budget
    from agentflow.kernel.intents import IntentCategory
    from agentflow.kernel.planning.preflight import CostProfile, preflight
    from agentflow.kernel.planning.source import PlanValidationError
    from agentflow.kernel.planning.support import SUPPORT_PLANNER
    from agentflow.kernel.planning.validation import load_plan

    path = _existing_file(args.config, "config file")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise UsageError(f"config file {path} must hold a mapping")
    try:
        plan = load_plan(config.get("planner") or SUPPORT_PLANNER)
    except PlanValidationError as exc:
        raise UsageError("; ".join(str(e) for e in exc.errors)) from exc
    providers = (config.get("llm") or {}).get("providers") or [{"kind": "offline"}]
    paid = [p for p in providers if isinstance(p, dict) and p.get("kind") != "offline"]
    model = str(paid[0].get("model") or "gpt-4o-mini") if paid else "offline"
    categories = [
        IntentCategory(c["name"], c.get("description", ""), list(c.get("examples") or []))
        for c in (config.get("intents") or {}).get("categories") or []
        if isinstance(c, dict) and c.get("name")
    ]
    prompts = config.get("prompts") or {}
    profile = CostProfile(
        model=model,
        agent_name=str(config.get("name") or "agent"),
        categories=categories,
        knowledge_top_k=int((config.get("memory") or {}).get("knowledge_top_k", 3)),
        knowledge=_load_documents(args.knowledge) if args.knowledge else (),
        classify_with_llm=bool(paid),
        **({"system_prompt": prompts["system"]} if "system" in prompts else {}),
    )
    raw_budget = config.get("budget") or {}
    try:
        budget = (
            Budget(raw_budget.get("soft_usd"), raw_budget.get("hard_usd")) if raw_budget else None
        )
    except ValueError as exc:
        raise UsageError(f"budget: {exc}") from exc
    estimate = preflight(plan, args.message, profile, budget=budget, spent_usd=args.spent)
    print(json.dumps(estimate.to_dict(), sort_keys=True), file=stdout)
    return 0


def main(
    argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    args = _parser().parse_args(argv)
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    try:
        if args.command == "chat":
            return asyncio.run(_chat(args, stdin, stdout))
        if args.command == "validate":
            return _validate(args, stdout)
        if args.command == "preflight":
            return _preflight(args, stdout)
        return _eval_intents(args, stdout)
    except UsageError as exc:
        print(f"agentflow {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
