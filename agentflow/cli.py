"""The `agentflow` command line.

    agentflow chat [--config FILE] [--knowledge FILE] [--user ID] [--json]
    agentflow eval-intents --train CSV --test CSV [--oos-label LABEL] [--oos-threshold X]

`chat` talks to an agent in the terminal (offline unless the config names an LLM);
it reads one message per line from stdin, so it also works in a pipe. `eval-intents`
trains the offline intent classifier and prints one JSON object of metrics.
Bad paths, configs or data exit with status 2 and a one-line reason.
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


def main(
    argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    args = _parser().parse_args(argv)
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    try:
        if args.command == "chat":
            return asyncio.run(_chat(args, stdin, stdout))
        return _eval_intents(args, stdout)
    except UsageError as exc:
        print(f"agentflow {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
