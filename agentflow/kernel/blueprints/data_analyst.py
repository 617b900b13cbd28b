"""``data_analyst_agent``: answers a tenant's questions about its own support data.

Never SQL written by a model or a user: the question only selects one of a fixed catalogue
of `QueryTemplate` (matched by TF-IDF over the templates' descriptions and keywords) and
fills its bounded parameters (a period of at most `MAX_DAYS` days, one grouping dimension).
The template runs through the `SupportData` port, whose platform implementation is a
read-only Django ORM aggregation inside the tenant's scope. The answer is a table and a
chart spec: ``{template, parameters, columns, rows, chart: {type, x, y}}``.

A question no template matches gets the list of what can be answered, not an error.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, Protocol

import structlog

from agentflow.kernel.agents import AgentState
from agentflow.kernel.blueprints.base import StepAgent, finish
from agentflow.kernel.planning.model import StepOutcome

__all__ = [
    "DIMENSIONS",
    "MAX_DAYS",
    "TEMPLATES",
    "DataAnalystAgent",
    "Match",
    "Period",
    "QueryTemplate",
    "SupportData",
    "extract_group_by",
    "extract_period",
    "match_template",
    "mentioned_agent",
]

log = structlog.get_logger(__name__)

MAX_DAYS = 366
# Grouping dimensions a template may offer; "day" draws a line, the others bars.
DIMENSIONS = ("day", "agent", "intent", "priority")


@dataclass(frozen=True)
class QueryTemplate:
    """One read-only question the platform knows how to answer."""

    id: str
    title: str
    description: str
    keywords: tuple[str, ...]
    dimensions: tuple[str, ...]  # allowed groupings, the default first
    measures: tuple[str, ...]  # the value columns, in order; the first one is charted
    # Measures that are counts or sums: a day without rows is a 0 (rates stay null).
    additive: tuple[str, ...] = ()


TEMPLATES: tuple[QueryTemplate, ...] = (
    QueryTemplate(
        "run_volume",
        "Run volume",
        "How many runs (conversations, messages, requests, tickets) the agents handled, "
        "and how many completed or failed.",
        (
            "volume",
            "number",
            "count",
            "traffic",
            "busy",
            "load",
            "handled",
            "questions",
            "asked",
            "chats",
            "sessions",
            "incoming",
            "work",
        ),
        ("day", "agent", "intent"),
        ("runs", "completed", "failed"),
        additive=("runs", "completed", "failed"),
    ),
    QueryTemplate(
        "escalation_rate",
        "Escalation rate",
        "Share of runs escalated to a human reviewer (handoff, human review, escalations).",
        (
            "escalation rate",
            "escalated",
            "escalations",
            "handoff",
            "hand off",
            "human",
            "deflection",
            "person",
            "people",
        ),
        ("day", "agent", "intent"),
        ("escalation_rate", "escalated", "runs"),
        additive=("escalated", "runs"),
    ),
    QueryTemplate(
        "csat",
        "Customer satisfaction (CSAT)",
        "Customer satisfaction from feedback: CSAT (share of positive ratings and thumbs up), "
        "average score and rating, number of responses.",
        ("csat", "satisfaction", "satisfied", "happy", "feedback", "rating", "ratings", "thumbs"),
        ("day", "agent", "intent"),
        ("csat", "avg_score", "avg_rating", "responses"),
        additive=("responses",),
    ),
    QueryTemplate(
        "cost",
        "Cost and tokens",
        "What the runs cost: spend in US dollars, LLM tokens used, cost per run.",
        (
            "cost",
            "spend",
            "spent",
            "pay",
            "paid",
            "bill",
            "dollars",
            "usd",
            "money",
            "tokens",
            "llm",
            "expensive",
            "spending",
            "pricey",
        ),
        ("day", "agent", "intent"),
        ("cost_usd", "tokens", "runs", "cost_per_run_usd"),
        additive=("cost_usd", "tokens", "runs"),
    ),
    QueryTemplate(
        "sla_breaches",
        "SLA breaches",
        "Human review requests that breached their SLA deadline (late, overdue reviews), "
        "and the breach rate.",
        ("sla", "breach", "breaches", "breached", "overdue", "late", "deadline"),
        ("day", "priority", "agent"),
        ("breached", "reviews", "breach_rate"),
        additive=("breached", "reviews"),
    ),
)
_BY_ID = {template.id: template for template in TEMPLATES}


class SupportData(Protocol):
    """Runs one catalogue template, read-only, over the current tenant's data.

    Rows are mappings keyed by the grouping dimension (a ``date`` for "day", a label
    otherwise) and the template's measures; the order does not matter. ``agent`` narrows
    to one agent, by one of the names `agent_names` returned.
    """

    async def agent_names(self) -> list[str]: ...

    async def query(
        self,
        template: str,
        group_by: str,
        start: datetime,
        end: datetime,
        *,
        agent: str | None = None,
    ) -> list[dict[str, Any]]: ...


# ------------------------------------------------------------------------------ matching

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    (
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "did",
        "do",
        "does",
        "for",
        "from",
        "give",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "last",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "past",
        "per",
        "please",
        "show",
        "the",
        "this",
        "to",
        "us",
        "was",
        "we",
        "were",
        "what",
        "which",
        "with",
        "you",
        "your",
        "each",
        "over",
        "during",
        "since",
        "days",
        "day",
        "weeks",
        "week",
        "months",
        "month",
        "year",
        "years",
        "today",
        "yesterday",
        "agent",
        "agents",
        "intent",
        "intents",
        "priority",
        "daily",
        "many",
        "much",
    )
)


def _stem(token: str) -> str:
    """A crude stem: 'escalations', 'escalated' and 'escalation' all read 'escala'."""
    if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
        token = token[:-1]
    return token[:6]


def _terms(text: str) -> list[str]:
    return [_stem(word) for word in _WORD.findall(text.lower()) if word not in _STOP]


def _document(template: QueryTemplate) -> list[str]:
    # Keywords count twice: they are what people say, the description how we say it.
    return _terms(f"{template.title} {template.description}") + 2 * _terms(
        " ".join(template.keywords)
    )


def _idf(documents: Sequence[Sequence[str]]) -> dict[str, float]:
    frequency = Counter(term for document in documents for term in set(document))
    total = len(documents)
    return {term: math.log((1 + total) / (1 + seen)) + 1.0 for term, seen in frequency.items()}


def _vector(terms: Sequence[str], idf: Mapping[str, float]) -> dict[str, float]:
    counts = Counter(term for term in terms if term in idf)
    vector = {term: count * idf[term] for term, count in counts.items()}
    norm = math.sqrt(sum(value * value for value in vector.values())) or 1.0
    return {term: value / norm for term, value in vector.items()}


_DOCUMENTS = [_document(template) for template in TEMPLATES]
_IDF = _idf(_DOCUMENTS)
_VECTORS = [_vector(document, _IDF) for document in _DOCUMENTS]


@dataclass(frozen=True)
class Match:
    template: QueryTemplate | None
    score: float
    scores: dict[str, float] = field(default_factory=dict)


def match_template(question: str, *, min_score: float = 0.12) -> Match:
    """The catalogue template closest to ``question`` (cosine of TF-IDF vectors), if any."""
    query = _vector(_terms(question), _IDF)
    scores = {
        template.id: round(sum(weight * vector.get(term, 0.0) for term, weight in query.items()), 4)
        for template, vector in zip(TEMPLATES, _VECTORS, strict=True)
    }
    best = max(TEMPLATES, key=lambda template: scores[template.id])
    if scores[best.id] < min_score:
        return Match(None, scores[best.id], scores)
    return Match(best, scores[best.id], scores)


def mentioned_agent(question: str, names: Sequence[str]) -> str | None:
    """The agent the question names ("CSAT of billing-bot"), the longest name if several."""
    text = question.lower()
    found = [
        name
        for name in names
        if len(name) >= 3
        and re.search(r"(?<![\w-])" + re.escape(name.lower()) + r"(?![\w-])", text)
    ]
    return max(found, key=len) if found else None


# ---------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    label: str
    clamped_from_days: int | None = None  # the period asked for, when longer than allowed

    @property
    def days(self) -> int:
        return max(1, math.ceil((self.end - self.start).total_seconds() / 86400))

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "days": self.days,
            "label": self.label,
        }
        if self.clamped_from_days is not None:
            found["clamped_from_days"] = self.clamped_from_days
        return found


_NUMBERS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "twelve": 12,
    "thirty": 30,
}
_UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "quarter": 91, "year": 365}
_RELATIVE = re.compile(
    r"\b(?:last|past|previous|over the last|in the last)\s+(?:(\d{1,6}|[a-z]+)\s+)?"
    r"(day|week|month|quarter|year)s?\b"
)
_ISO_DATE = r"(\d{4}-\d{2}-\d{2})"
_BETWEEN = re.compile(rf"\b(?:between|from)\s+{_ISO_DATE}\s+(?:and|to|until)\s+{_ISO_DATE}")
_SINCE = re.compile(rf"\bsince\s+{_ISO_DATE}")


def _day_start(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _bounded(start: datetime, end: datetime, label: str, max_days: int) -> Period:
    asked = math.ceil((end - start).total_seconds() / 86400)
    if asked > max_days:
        return Period(end - timedelta(days=max_days), end, label, clamped_from_days=asked)
    return Period(start, end, label)


def _calendar_period(text: str, now: datetime) -> tuple[datetime, datetime, str] | None:
    today = _day_start(now)
    if re.search(r"\btoday\b", text):
        return today, now, "today"
    if re.search(r"\byesterday\b", text):
        return today - timedelta(days=1), today, "yesterday"
    if re.search(r"\bthis week\b", text):
        return today - timedelta(days=today.weekday()), now, "this week"
    if re.search(r"\bthis month\b", text):
        return today.replace(day=1), now, "this month"
    if re.search(r"\bthis year\b", text):
        return today.replace(month=1, day=1), now, "this year"
    between = _BETWEEN.search(text)
    if between:
        first, last = (_parse_date(value) for value in between.groups())
        if first is not None and last is not None and first <= last:
            return first, last + timedelta(days=1), f"{between[1]} to {between[2]}"
    since = _SINCE.search(text)
    if since:
        first = _parse_date(since[1])
        if first is not None and first < now:
            return first, now, f"since {since[1]}"
    return None


def _parse_date(text: str) -> datetime | None:
    try:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
    except ValueError:
        return None


def _count(amount: str | None) -> int:
    if amount is None:
        return 1
    return int(amount) if amount.isdigit() else _NUMBERS.get(amount, 0)


def extract_period(
    question: str, now: datetime, *, default_days: int = 30, max_days: int = MAX_DAYS
) -> Period:
    """The period a question asks about ("last 7 days", "this month"...), at most max_days."""
    text = question.lower()
    calendar = _calendar_period(text, now)
    if calendar is not None:
        return _bounded(*calendar, max_days)
    relative = _RELATIVE.search(text)
    if relative:
        amount, unit = relative.groups()
        count = _count(amount)
        if count > 0:
            days = count * _UNIT_DAYS[unit]
            label = f"last {count} {unit}{'s' if count > 1 else ''}"
            if days > max_days:  # cut before subtracting: a huge period is no date at all
                return Period(now - timedelta(days=max_days), now, label, clamped_from_days=days)
            return Period(now - timedelta(days=days), now, label)
    return _bounded(now - timedelta(days=default_days), now, f"last {default_days} days", max_days)


_GROUPING = re.compile(
    r"\b(?:by|per|for each|each|broken down by|split by|grouped by)\s+"
    r"(day|date|agent|bot|intent|category|topic|priority|urgency)s?\b"
)
_ALIASES = {
    "date": "day",
    "bot": "agent",
    "category": "intent",
    "topic": "intent",
    "urgency": "priority",
}


def extract_group_by(question: str) -> str | None:
    """The dimension a question groups by ("by agent", "per day", "daily", "trend"), if any."""
    text = question.lower()
    found = _GROUPING.search(text)
    if found:
        return _ALIASES.get(found[1], found[1])
    if re.search(r"\b(daily|trend|over time|day by day|each day|every day)\b", text):
        return "day"
    if re.search(r"\bwhich agents?\b", text):
        return "agent"
    if re.search(r"\bwhich (?:intents?|categor(?:y|ies)|topics?)\b", text):
        return "intent"
    return None


# ---------------------------------------------------------------------------------- table


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 6)
    return value


def _fill_days(
    rows: list[dict[str, Any]], template: QueryTemplate, period: Period
) -> list[dict[str, Any]]:
    """Every day of the period, in order: a day without data is 0 runs, not a gap."""
    by_day = {_cell(row["day"]): row for row in rows}
    empty = {m: (0 if m in template.additive else None) for m in template.measures}
    filled = []
    day, last = period.start.date(), (period.end - timedelta(microseconds=1)).date()
    while day <= last:
        key = day.isoformat()
        filled.append(by_day.get(key) or {"day": key, **empty})
        day += timedelta(days=1)
    return filled


def build_table(
    template: QueryTemplate, group_by: str, period: Period, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    """The structured answer: columns, rows (lists in column order) and the chart spec."""
    if group_by == "day":
        rows = _fill_days(rows, template, period)
    else:  # the biggest first: what a bar chart of agents or intents should show
        first = template.measures[0]
        rows = sorted(rows, key=lambda row: (-(row.get(first) or 0), str(row.get(group_by))))
    columns = [group_by, *template.measures]
    return {
        "template": template.id,
        "columns": columns,
        "rows": [[_cell(row.get(column)) for column in columns] for row in rows],
        "chart": {
            "type": "line" if group_by == "day" else "bar",
            "x": group_by,
            "y": template.measures[0],
        },
    }


def _summary(
    template: QueryTemplate, table: Mapping[str, Any], period: Period, agent: str | None = None
) -> str:
    columns = table["columns"]
    rows = table["rows"]
    head = f"{template.title}" + (f" of {agent}" if agent else "")
    head += f", {period.label}, by {columns[0]}"
    if period.clamped_from_days is not None:
        head += f" (limited to {period.days} days; {period.clamped_from_days} were asked)"
    if not rows or all(all(v in (0, None) for v in row[1:]) for row in rows):
        return f"{head}: no data in this period."
    y = columns.index(table["chart"]["y"])
    if template.measures[0] in template.additive:
        total = sum(row[y] or 0 for row in rows)
        return f"{head}: {columns[y]} {_cell(total)} in total."
    values = [row[y] for row in rows if row[y] is not None]
    best = max((row for row in rows if row[y] is not None), key=lambda row: row[y])
    return f"{head}: {columns[y]} from {min(values)} to {max(values)}, highest for {best[0]}."


def catalogue_answer() -> str:
    listed = "; ".join(
        f"{template.title} (by {', '.join(template.dimensions)})" for template in TEMPLATES
    )
    return (
        "I can answer questions about your own support data: "
        f"{listed}. Add a period such as 'last 7 days', 'this month' or 'since 2026-01-01' "
        f"(at most {MAX_DAYS} days) and a grouping such as 'by agent'."
    )


def catalogue() -> list[dict[str, Any]]:
    return [
        {
            "template": template.id,
            "title": template.title,
            "description": template.description,
            "group_by": list(template.dimensions),
            "measures": list(template.measures),
        }
        for template in TEMPLATES
    ]


# ---------------------------------------------------------------------------------- agent


class DataAnalystAgent(StepAgent):
    """Match the question to a template, fill its parameters, run it, answer with a table."""

    default_planner: ClassVar[Mapping[str, Any]] = {
        "type": "fsm",
        "definition": {
            "initial_state": "match_template",
            "states": {
                "match_template": {
                    "condition": "state.matched",
                    "on_true": "extract_parameters",
                    "on_false": "list_capabilities",
                },
                "extract_parameters": {"on_success": "run_query"},
                "run_query": {"on_success": "answer", "on_error": "query_failed"},
            },
            "final_states": ["answer", "list_capabilities", "query_failed"],
        },
    }

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        data: SupportData,
        clock: Callable[[], float] = time.time,
        **kwargs: Any,
    ) -> None:
        super().__init__(config, **kwargs)
        self.data = data
        self.clock = clock

    async def step_match_template(self, state: AgentState) -> Any:
        plan = state.plan_state.state
        try:
            names = await self.data.agent_names()
        except Exception:  # no agent filter then; the query itself will say if data is down
            log.exception("data_analyst.agent_names_failed")
            names = []
        agent = mentioned_agent(state.message, names)
        plan["agent"] = agent
        # An agent's name says which rows, not which question: it must not pick the template.
        question = state.message
        if agent is not None:
            question = re.sub(re.escape(agent), " ", question, flags=re.IGNORECASE)
        found = match_template(question, min_score=float(self.config.get("min_score", 0.12)))
        plan["matched"] = found.template is not None
        plan["template"] = found.template.id if found.template is not None else None
        plan["match_scores"] = found.scores
        return {"template": plan["template"], "score": found.score}

    async def step_extract_parameters(self, state: AgentState) -> Any:
        template = _BY_ID[state.plan_state.state["template"]]
        now = datetime.fromtimestamp(self.clock(), tz=UTC)
        max_days = int(self.config.get("max_days", MAX_DAYS))
        period = extract_period(
            state.message,
            now,
            default_days=min(int(self.config.get("default_days", 30)), max_days),
            max_days=max_days,
        )
        asked = extract_group_by(state.message)
        group_by = asked if asked in template.dimensions else template.dimensions[0]
        parameters: dict[str, Any] = {"period": period.as_dict(), "group_by": group_by}
        if state.plan_state.state.get("agent"):
            parameters["agent"] = state.plan_state.state["agent"]
        if asked is not None and asked != group_by:
            parameters["group_by_refused"] = asked
        state.plan_state.state["parameters"] = parameters
        return parameters

    async def step_run_query(self, state: AgentState) -> Any:
        plan = state.plan_state.state
        template = _BY_ID[plan["template"]]
        period = _period_of(plan["parameters"]["period"])
        group_by = plan["parameters"]["group_by"]
        try:
            rows = await self.data.query(
                template.id,
                group_by,
                period.start,
                period.end,
                agent=plan["parameters"].get("agent"),
            )
        except Exception as exc:  # a failed query is an answer that says so, never a 5xx
            log.exception("data_analyst.query_failed", template=template.id, group_by=group_by)
            return StepOutcome.failed(f"{template.id}: {type(exc).__name__}")
        plan["table"] = build_table(template, group_by, period, rows)
        return {"rows": len(plan["table"]["rows"])}

    async def step_answer(self, state: AgentState) -> Any:
        plan = state.plan_state.state
        template = _BY_ID[plan["template"]]
        parameters = plan["parameters"]
        period = _period_of(parameters["period"])
        table = plan["table"]
        content = _summary(template, table, period, parameters.get("agent"))
        if "group_by_refused" in parameters:
            content += (
                f" ({template.title} cannot be grouped by {parameters['group_by_refused']}; "
                f"it can by {', '.join(template.dimensions)}.)"
            )
        output = {
            "template": template.id,
            "parameters": parameters,
            "columns": table["columns"],
            "rows": table["rows"],
            "chart": table["chart"],
        }
        finish(state, content=content, output=output, intent=template.id)

    async def step_list_capabilities(self, state: AgentState) -> Any:
        output = {"template": None, "answerable": catalogue()}
        finish(state, content=catalogue_answer(), output=output, confidence=0.0, intent="unknown")

    async def step_query_failed(self, state: AgentState) -> Any:
        finish(
            state,
            content="I could not read the data for this question right now; please retry.",
            output={"template": state.plan_state.state.get("template"), "error": "query failed"},
            confidence=0.0,
        )


def _period_of(found: Mapping[str, Any]) -> Period:
    return Period(
        datetime.fromisoformat(found["start"]),
        datetime.fromisoformat(found["end"]),
        str(found["label"]),
        found.get("clamped_from_days"),
    )
