"""Offline accuracy of the ``triage_agent`` blueprint on its labelled tickets (issue 18).

    .venv/bin/python bench/triage_accuracy.py [--data tests/data/triage_tickets.jsonl]
                                              [--errors]

Runs the blueprint's kernel agent (`agentflow.kernel.blueprints.triage.TriageAgent`, default
config: default categories, urgency cues, tier boost and routing rules) on every ticket of
the labelled set, each with its subject and the customer's tier as run metadata, no ticket
history (duplicate detection is measured by the tests, not here), and prints one JSON object:
``{"n", "priority_accuracy", "routing_accuracy", "category_accuracy", ...}``; ``split``
gives the figures on the even ids (the default cues were tuned looking at their errors) and
on the odd ids (never looked at while tuning); ``--errors`` adds every misrouted or
misprioritised ticket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentflow.kernel.blueprints.triage import PastTicket, TriageAgent
from agentflow.kernel.llm.embeddings import OfflineEmbedder

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "triage_tickets.jsonl"


class NoHistory:
    async def recent_tickets(self, *, since: datetime, limit: int) -> Sequence[PastTicket]:
        return ()


def load(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def triage_all(tickets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    agent = TriageAgent({}, history=NoHistory(), embedder=OfflineEmbedder())
    outputs = []
    for ticket in tickets:
        metadata = {"subject": ticket["subject"], **ticket["metadata"]}
        result = await agent.run(ticket["body"], user_id="bench", context={"metadata": metadata})
        outputs.append(result.state.plan_state.state["output"])
    return outputs


def split(tickets: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy on the even ids (the cues were tuned looking at those) and the odd ones."""
    halves: dict[str, Any] = {}
    for name, parity in (("tuned_on_even_ids", 0), ("held_out_odd_ids", 1)):
        pairs = [
            (t, o) for t, o in zip(tickets, outputs, strict=True) if int(t["id"][1:]) % 2 == parity
        ]
        halves[name] = {
            "n": len(pairs),
            "priority_accuracy": round(
                sum(o["priority"] == t["priority"] for t, o in pairs) / len(pairs), 4
            ),
            "routing_accuracy": round(
                sum(o["queue"] == t["queue"] for t, o in pairs) / len(pairs), 4
            ),
        }
    return halves


def measure(tickets: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(tickets)
    hits: Counter[str] = Counter()
    confusion: Counter[str] = Counter()
    errors = []
    for ticket, output in zip(tickets, outputs, strict=True):
        for field in ("priority", "queue", "category"):
            hits[field] += output[field] == ticket[field]
        if output["priority"] != ticket["priority"]:
            confusion[f"{ticket['priority']}->{output['priority']}"] += 1
        if output["priority"] != ticket["priority"] or output["queue"] != ticket["queue"]:
            errors.append(
                {
                    "id": ticket["id"],
                    "subject": ticket["subject"],
                    "expected": [ticket["category"], ticket["priority"], ticket["queue"]],
                    "got": [output["category"], output["priority"], output["queue"]],
                    "reasons": output["reasons"],
                }
            )
    return {
        "n": n,
        "priority_accuracy": round(hits["priority"] / n, 4),
        "routing_accuracy": round(hits["queue"] / n, 4),
        "category_accuracy": round(hits["category"] / n, 4),
        "priority_confusion": dict(confusion.most_common()),
        "split": split(tickets, outputs),
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--errors", action="store_true", help="list the wrong tickets")
    args = parser.parse_args()
    tickets = load(args.data)
    report = measure(tickets, asyncio.run(triage_all(tickets)))
    if not args.errors:
        report.pop("errors")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
