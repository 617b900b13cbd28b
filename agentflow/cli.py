"""The `agentflow` command line.

    agentflow chat [--config FILE] [--knowledge FILE] [--user ID] [--json]
    agentflow eval-intents --train CSV --test CSV [--oos-label LABEL] [--oos-threshold X]
                           [--novelty-keep K] [--sweep K,K,...]
                           [--encoder auto|none|wordllama|minilm]
    agentflow validate FILE [FILE ...] [--steps A,B] [--tools T,U] [--agents X,Y]
    agentflow preflight CONFIG --message TEXT [--knowledge FILE] [--spent USD]
    agentflow test SCENARIOS [--agent ID|NAME] [--tenant SLUG] [--scenario NAME] [--json]
    agentflow init BLUEPRINT [--name NAME] [-o FILE] [--json]
    agentflow costs [--days N] [--agent ID] [--json] [--url URL]

`chat` talks to an agent in the terminal (offline unless the config names an LLM);
it reads one message per line from stdin, so it also works in a pipe. `eval-intents`
trains the offline intent classifier and prints one JSON object of metrics. `validate`
checks planner definitions (FSM, behavior tree, LLM) and prints every error with its line;
`preflight` prints the cost estimate of an agent's plan for one message, without running it.
`test` runs a scenario file (the qa_test_agent's format) against an agent of the local
database and exits 1 when a scenario fails. `init` writes a new agent's file (YAML, or JSON
with --json or a .json name) from a blueprint's defaults: the body of `POST /api/v1/agents`,
which `validate` checks as the API does. `costs` prints tokens and dollars per agent and UTC
day from a running platform (AGENTFLOW_URL, AGENTFLOW_API_KEY), through `agentflow.client`;
it exits 1 when the platform cannot be reached or fails.
Bad paths, configs or data (and invalid plans, agent configs or suites, a rejected request)
exit with status 2 and a reason.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from agentflow.kernel.costs import PriceTable

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
    evaluate.add_argument(
        "--novelty-keep",
        type=float,
        help="share of each category's typical messages the novelty gate keeps, in (0, 1] "
        "(an agent's intents.novelty_keep); default: the classifier's for its encoder",
    )
    evaluate.add_argument(
        "--sweep",
        help="comma-separated novelty keeps to score the same trained classifier at "
        "(JSON 'sweep': accuracy, in-scope accuracy, out-of-scope recall of each)",
    )
    evaluate.add_argument(
        "--encoder",
        choices=("auto", "none", "wordllama", "minilm"),
        default="auto",
        help="auto: INTENT_ENCODER, else wordllama when the quality extra is installed; "
        "none: lexical; wordllama or minilm (the intent-minilm extra): that encoder",
    )

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

    test = commands.add_parser(
        "test", help="run scenario tests against an agent of the local database"
    )
    test.add_argument("scenarios", type=Path, help="scenario file (YAML or JSON)")
    test.add_argument("--agent", help="id or name of the agent under test (else the file's)")
    test.add_argument("--tenant", help="slug of the agent's tenant (needed to name it by name)")
    test.add_argument("--json", action="store_true", help="print the report as one JSON object")
    test.add_argument("--timeout", type=float, default=30.0, help="seconds per reply (30)")
    test.add_argument("--concurrency", type=int, default=1, help="scenarios at once (1)")
    test.add_argument(
        "--scenario", action="append", help="run only the scenario of this name (repeatable)"
    )
    test.add_argument(
        "--keep-conversations", action="store_true", help="keep the test conversations"
    )
    _ops_parsers(commands)
    return parser


def _ops_parsers(commands: Any) -> None:
    init = commands.add_parser("init", help="write a new agent's config from a blueprint")
    init.add_argument("blueprint", help="blueprint name (GET /api/v1/blueprints lists them)")
    init.add_argument("--name", help="the agent's name (default: the blueprint's)")
    init.add_argument("-o", "--output", type=Path, help="file to create (default: stdout)")
    init.add_argument("--json", action="store_true", help="JSON instead of YAML")

    costs = commands.add_parser("costs", help="tokens and dollars per agent and day")
    costs.add_argument("--days", type=int, default=7, help="the last N UTC days, 1-90 (7)")
    costs.add_argument("--agent", help="one agent's id (default: every agent)")
    costs.add_argument("--json", action="store_true", help="print the API's answer as JSON")
    costs.add_argument(
        "--url",
        default=os.environ.get("AGENTFLOW_URL", "http://127.0.0.1:8000"),
        help="the platform (AGENTFLOW_URL, default http://127.0.0.1:8000)",
    )


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
    from agentflow.kernel.intents_encoder import configured_encoder, encoder_named
    from agentflow.kernel.intents_eval import evaluate

    train = _existing_file(args.train, "training CSV")
    test = _existing_file(args.test, "test CSV")
    if args.oos_threshold is not None and not 0.0 <= args.oos_threshold <= 1.0:
        raise UsageError("--oos-threshold must be within [0, 1]")
    if args.novelty_keep is not None and not 0.0 < args.novelty_keep <= 1.0:
        raise UsageError("--novelty-keep must be within (0, 1]")
    sweep = _keeps(args.sweep)
    try:
        encoder = configured_encoder() if args.encoder == "auto" else encoder_named(args.encoder)
    except ValueError as exc:  # INTENT_ENCODER names another, or the extra is not installed
        raise UsageError(str(exc)) from exc
    try:
        report = evaluate(
            train,
            test,
            args.oos_label,
            oos_threshold=args.oos_threshold,
            novelty_keep=args.novelty_keep,
            encoder=encoder,
            sweep=sweep,
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError) as exc:
        raise UsageError(f"cannot evaluate: {exc}") from exc
    print(json.dumps(report, sort_keys=True), file=stdout)
    return 0


def _keeps(value: str | None) -> list[float]:
    """--sweep's comma-separated novelty keeps, each within (0, 1]."""
    keeps: list[float] = []
    for part in (value or "").split(","):
        if not part.strip():
            continue
        try:
            keep = float(part)
        except ValueError:
            raise UsageError(f"--sweep: {part.strip()!r} is not a number") from None
        if not 0.0 < keep <= 1.0:
            raise UsageError(f"--sweep: {keep:g} is not within (0, 1]")
        keeps.append(keep)
    return keeps


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
        if _is_agent_document(text):
            status = max(status, _validate_agent(path, text, stdout))
            continue
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


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentflow.server.settings")
    import django

    django.setup()


def _is_agent_document(text: str) -> bool:
    """An agent's create body (`agentflow init`'s file): ``blueprint`` and ``config``."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False  # the plan loader reports it with its line
    return isinstance(data, dict) and "blueprint" in data and "config" in data


def _validate_agent(path: Path, text: str, stdout: TextIO) -> int:
    """The agent's config checked by the API's own validation (422 on create otherwise)."""
    import yaml

    _setup_django()
    from agentflow.pipelines import AgentConfigError, validate_agent_config

    data = yaml.safe_load(text)
    try:
        validate_agent_config(data["blueprint"], data["config"])
    except AgentConfigError as exc:
        fields = exc.by_field()
        for field, reasons in fields.items():
            label = field if field in ("blueprint", "config") else f"config.{field}"
            for reason in reasons:
                print(f"{path}: {label}: {reason}", file=stdout)
        print(f"{path}: {sum(len(r) for r in fields.values())} error(s)", file=stdout)
        return EXIT_USAGE
    print(f"{path}: ok ({data['blueprint']} agent {data.get('name')!r})", file=stdout)
    return 0


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
        price_table=_config_prices(config),
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


def _config_prices(config: dict[str, Any]) -> PriceTable:
    """The default price table, overridden by the config's ``llm.prices`` when it sets them."""
    from pydantic import ValidationError

    from agentflow.kernel.config import PricesConfig
    from agentflow.kernel.costs import ModelPrice, PriceTable

    given = (config.get("llm") or {}).get("prices")
    if given is None:
        return PriceTable()
    try:
        own = PricesConfig.model_validate(given)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"llm.prices: {reasons}") from exc
    return PriceTable().overriding(ModelPrice(own.input_per_million, own.output_per_million))


def _test_target(ref: str, tenant_slug: str | None) -> tuple[int, str]:
    """(tenant id, agent id) of the agent under test; one tenant's agent, looked up in it."""
    from agentflow.blueprints.qa_test import find_target
    from agentflow.kernel.blueprints.qa_test import TargetError, looks_like_id
    from agentflow.models import Agent
    from tenants.context import tenant_scope
    from tenants.models import Tenant

    if tenant_slug is not None:
        tenant = Tenant.objects.filter(slug=tenant_slug).first()
        if tenant is None:
            raise UsageError(f"--tenant: no tenant {tenant_slug!r}")
        tenant_id = tenant.pk
    elif looks_like_id(ref):
        # The operator's own database: the agent's id says which tenant it belongs to.
        owner = Agent.unscoped.filter(pk=ref).values_list("tenant_id", flat=True).first()
        if owner is None:
            raise UsageError(f"--agent: no agent {ref!r}")
        tenant_id = owner
    else:
        raise UsageError(f"--agent: {ref!r} is a name; give --tenant too, or the agent's id")
    with tenant_scope(tenant_id):
        try:
            return tenant_id, str(find_target(ref).pk)
        except TargetError as exc:
            raise UsageError(f"--agent: {exc}") from exc


async def _run_test(suite: Any, agent_id: str, limits: Any) -> dict[str, Any]:
    from agentflow.blueprints.qa_test import AgentTargets
    from agentflow.kernel.blueprints.qa_test import run_suite
    from agentflow.pipelines import get_pipeline

    target = await AgentTargets(get_pipeline).open(agent_id)
    try:
        return await run_suite(suite, target, limits=limits)
    finally:
        await (await get_pipeline(target.agent)).aclose()


def _only(suite: Any, names: list[str]) -> Any:
    """The suite reduced to the named scenarios (seed 002's ``af test --scenario=...``)."""
    known = [scenario.name for scenario in suite.scenarios]
    for name in names:
        if name not in known:
            raise UsageError(f"--scenario: no scenario {name!r}; the file has: {', '.join(known)}")
    chosen = [scenario for scenario in suite.scenarios if scenario.name in names]
    return suite.model_copy(update={"scenarios": chosen})


def _test(args: argparse.Namespace, stdout: TextIO) -> int:
    from agentflow.kernel.blueprints.qa_test import (
        RunLimits,
        SuiteError,
        format_report,
        invalid_report,
        load_suite,
    )

    path = _existing_file(args.scenarios, "scenario file")
    if not 0 < args.timeout <= 300:
        raise UsageError("--timeout must be within (0, 300] seconds")
    if not 1 <= args.concurrency <= 8:
        raise UsageError("--concurrency must be within 1 and 8")
    try:
        suite = load_suite(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    except SuiteError as exc:
        report = invalid_report(exc.issues)
        print(json.dumps(report) if args.json else f"{path}: {format_report(report)}", file=stdout)
        return EXIT_USAGE
    if args.scenario:
        suite = _only(suite, args.scenario)
    ref = args.agent or suite.agent
    if not ref:
        raise UsageError("name the agent under test: --agent, or `agent:` in the file")
    _setup_django()
    from tenants.context import tenant_scope

    tenant_id, agent_id = _test_target(ref, args.tenant)
    limits = RunLimits(
        max_turns=10_000,  # the operator's own file: the run quota's bound does not apply
        turn_timeout_seconds=args.timeout,
        keep_conversations=args.keep_conversations,
        concurrency=args.concurrency,
    )
    with tenant_scope(tenant_id):
        report = asyncio.run(_run_test(suite, agent_id, limits))
    print(json.dumps(report) if args.json else format_report(report), file=stdout)
    return 0 if report["failed"] == 0 else 1


def _described(schema: dict[str, Any], key: str) -> str:
    """A config key's description in the blueprint's JSON schema (or its model's)."""
    prop = schema.get("properties", {}).get(key, {})
    if prop.get("description"):
        return str(prop["description"])
    refs = [prop, *prop.get("allOf", []), *prop.get("anyOf", [])]
    for ref in (r.get("$ref", "") for r in refs):
        if ref:
            found = schema.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {})
            return str(found.get("description") or "")
    return ""


def _scaffold_yaml(document: dict[str, Any], description: str, schema: dict[str, Any]) -> str:
    """The agent's YAML, each config key under its description from the schema."""
    import textwrap

    import yaml

    def dump(value: Any) -> str:
        return str(yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=96))

    lines = [f"# {line}" for line in textwrap.wrap(description, 90)]
    lines += [
        "# Check it: agentflow validate FILE. Create the agent: POST /api/v1/agents with this",
        "# body as JSON, or agentflow.client's create_agent(name, blueprint, config).",
        dump({"name": document["name"], "blueprint": document["blueprint"]}).rstrip("\n"),
        "config:",
    ]
    for key, value in document["config"].items():
        lines += [f"  # {line}" for line in textwrap.wrap(_described(schema, key), 88)]
        lines += [f"  {line}" for line in dump({key: value}).rstrip("\n").split("\n")]
    return "\n".join(lines) + "\n"


def _init(args: argparse.Namespace, stdout: TextIO) -> int:
    _setup_django()
    from agentflow.pipelines import BLUEPRINTS

    found = BLUEPRINTS.get(args.blueprint)
    if found is None:
        raise UsageError(f"no blueprint {args.blueprint!r}; available: {', '.join(BLUEPRINTS)}")
    name = args.name if args.name is not None else found.name.removesuffix("_agent")
    if not name.strip() or len(name) > 200:
        raise UsageError("--name must be 1 to 200 characters")
    blueprint = found.to_dict()
    document = {"name": name, "blueprint": found.name, "config": blueprint["default_config"]}
    as_json = args.json or (args.output is not None and args.output.suffix == ".json")
    if as_json:
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    else:
        text = _scaffold_yaml(document, found.description, blueprint["config_schema"])
    if args.output is None:
        stdout.write(text)
        return 0
    try:
        with args.output.open("x", encoding="utf-8") as out:  # never overwrite a config
            out.write(text)
    except OSError as exc:
        raise UsageError(f"cannot create {args.output}: {exc.strerror or exc}") from exc
    print(f"{args.output}: {found.name} agent {name!r}", file=stdout)
    return 0


def _usage_table(usage: dict[str, Any]) -> list[str]:
    rows = [("day", "agent", "runs", "tokens", "usd")]
    rows += [
        (
            r["day"],
            f"{r['agent_name']} ({r['agent_id'][:8]})",
            r["runs"],
            r["tokens"],
            r["cost_usd"],
        )
        for r in usage["results"]
    ]
    totals = usage["totals"]
    rows.append(("total", "", totals["runs"], totals["tokens"], totals["cost_usd"]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(5)]
    return [
        "  ".join(
            str(cell).rjust(width) if i >= 2 else str(cell).ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _costs(args: argparse.Namespace, stdout: TextIO) -> int:
    from agentflow.client import AgentFlowClient, APIError, TransportError

    key = os.environ.get("AGENTFLOW_API_KEY", "")
    if not key:
        raise UsageError("set AGENTFLOW_API_KEY to an API key of the tenant (scope read)")
    if not 1 <= args.days <= 90:
        raise UsageError("--days must be within 1 and 90")
    try:
        with AgentFlowClient(args.url, key, timeout=30.0) as client:
            usage = client.agent_usage(days=args.days, agent_id=args.agent)
    except APIError as exc:
        if exc.status_code >= 500:
            print(f"agentflow costs: {exc}", file=sys.stderr)
            return 1
        raise UsageError(str(exc)) from exc
    except TransportError as exc:
        print(f"agentflow costs: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(usage, sort_keys=True), file=stdout)
        return 0
    print(f"{usage['since']} to {usage['until']} (UTC)", file=stdout)
    for line in _usage_table(dict(usage)):
        print(line, file=stdout)
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
        if args.command == "test":
            return _test(args, stdout)
        if args.command == "init":
            return _init(args, stdout)
        if args.command == "costs":
            return _costs(args, stdout)
        return _eval_intents(args, stdout)
    except UsageError as exc:
        print(f"agentflow {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
