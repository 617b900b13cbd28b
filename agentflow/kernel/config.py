"""Validated agent configuration and its loaders (SPEC 4.5).

One pydantic model tree, `AgentFrameworkConfig`, with `extra="forbid"` everywhere so a
misspelt key is an error instead of a silently ignored setting. `ConfigLoader` builds it
from a dict, a YAML or JSON file, or `AGENT_*` environment variables, after substituting
`${VAR}` / `${VAR:-default}` in string values (`$$` is a literal `$`, as in docker compose).
Every failure is a `ConfigError` naming the field path, the reason, the file and, for
files, the line.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
)

from agentflow.kernel.plugins import PLUGIN_SPEC_RE

__all__ = [
    "AgentFrameworkConfig", "BudgetConfig", "ConfidenceConfig", "ConfigError", "ConfigIssue",
    "ConfigLoader", "GuardrailsConfig", "IntentCategoryConfig", "IntentsConfig", "LLMConfig",
    "LoggingConfig", "MemoryConfig", "PlannerConfig", "PricesConfig", "ProviderConfig",
    "RateLimitConfig", "SentimentConfig", "SessionConfig", "ThreadsConfig", "TimeoutsConfig",
    "escape_env",
]  # fmt: skip

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
DEFAULT_TEMPLATE_ANSWER = (
    "Thanks for your message. We could not answer it automatically right now; "
    "a member of our support team will follow up shortly."
)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SECRET_PATH_RE = re.compile(r"key|secret|token|password|passwd", re.IGNORECASE)


class _Section(BaseModel):
    # No inf/nan: they do not survive a JSON round trip and are never meant.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SessionConfig(_Section):
    ttl_seconds: int = Field(default=3600, gt=0)
    max_sessions: int = Field(default=100_000, gt=0)


class MemoryConfig(_Section):
    episodic_limit: int = Field(default=100, gt=0)
    short_term_messages: int = Field(default=20, gt=0)
    # 0 turns knowledge retrieval off.
    knowledge_top_k: int = Field(default=3, ge=0)


class ConfidenceConfig(_Section):
    default_threshold: Unit = 0.6
    thresholds: dict[str, Unit] = Field(default_factory=dict)

    def threshold_for(self, intent: str) -> float:
        return self.thresholds.get(intent, self.default_threshold)


class IntentCategoryConfig(_Section):
    """Mirrors `agentflow.kernel.intents.IntentCategory`: `IntentCategory(**c.model_dump())`."""

    name: str = Field(min_length=1)
    description: str = ""
    examples: list[str] = Field(default_factory=list)
    threshold: Unit | None = None


class IntentsConfig(_Section):
    oos_threshold: Unit | None = None
    # The offline classifier's novelty gate: the share of each category's typical messages
    # it keeps (None: the classifier's default for its encoder). Lower refuses more
    # off-topic messages and more in-scope ones.
    novelty_keep: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    categories: list[IntentCategoryConfig] = Field(default_factory=list)

    @field_validator("categories")
    @classmethod
    def _unique_names(cls, value: list[IntentCategoryConfig]) -> list[IntentCategoryConfig]:
        seen: set[str] = set()
        for category in value:
            if category.name in seen:
                raise ValueError(f"duplicate category name {category.name!r}")
            seen.add(category.name)
        return value


class ThreadsConfig(_Section):
    inactivity_seconds: int = Field(default=1800, gt=0)
    similarity_threshold: Unit = 0.35


class ProviderConfig(_Section):
    kind: Literal["openai", "offline"]
    model: str = "gpt-4o-mini"
    base_url: str | None = None
    api_key: SecretStr | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=2, ge=0)

    @field_validator("model")
    @classmethod
    def _openai_needs_model(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("kind") == "openai" and not value.strip():
            raise ValueError("the openai provider requires a model name")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_serializer("api_key", when_used="json")
    def _dump_key(self, value: SecretStr | None, info: Any) -> str | None:
        # Masked unless the caller explicitly asks for the real value (writing a file back).
        if value is None:
            return None
        if isinstance(info.context, Mapping) and info.context.get("reveal_secrets"):
            return value.get_secret_value()
        return str(value)


def _default_providers() -> list[ProviderConfig]:
    return [ProviderConfig(kind="offline")]


class PricesConfig(_Section):
    """US dollars per million tokens, for a model the price table does not know (a
    self-hosted one is usually 0). Numbers only: a string or a bool is refused."""

    input_per_million: float = Field(ge=0, strict=True)
    output_per_million: float = Field(ge=0, strict=True)


class LLMConfig(_Section):
    providers: list[ProviderConfig] = Field(default_factory=_default_providers, min_length=1)
    template_answer: str = Field(default=DEFAULT_TEMPLATE_ANSWER, min_length=1)
    # Prices every call of the agent, whichever provider answers; None: the price table's.
    prices: PricesConfig | None = None


class RateLimitConfig(_Section):
    enabled: bool = False
    requests_per_minute: int = Field(default=60, gt=0)


class GuardrailsConfig(_Section):
    redact_pii: bool = True
    redact_before_persistence: bool = False


class BudgetConfig(_Section):
    soft_usd: float | None = Field(default=None, ge=0)
    hard_usd: float | None = Field(default=None, ge=0)

    @field_validator("hard_usd")
    @classmethod
    def _soft_below_hard(cls, value: float | None, info: ValidationInfo) -> float | None:
        soft = info.data.get("soft_usd")
        if value is not None and soft is not None and soft > value:
            raise ValueError(f"must be at least soft_usd ({soft})")
        return value


class TimeoutsConfig(_Section):
    context_branch_seconds: float = Field(default=5.0, gt=0)
    stage_seconds: float = Field(default=30.0, gt=0)


# `json` is the agreed key; it shadows the deprecated BaseModel.json() method, which pydantic
# warns about at class creation. Instance attributes win, so `config.logging.json` is the bool.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r'Field name "json"', category=UserWarning)

    class LoggingConfig(_Section):
        level: str = "INFO"
        json: bool = True  # type: ignore[assignment]

        @field_validator("level")
        @classmethod
        def _known_level(cls, value: str) -> str:
            if value.upper() not in _LOG_LEVELS:
                raise ValueError(f"must be one of {', '.join(_LOG_LEVELS)}")
            return value.upper()


class SentimentConfig(_Section):
    """Send a frustrated customer's message to a person (reason ``frustrated``).

    The message is scored like the sentiment_monitor blueprint scores it (VADER plus support
    phrases, compound -1..1); it escalates at or below `escalate_below`, or, with
    `drop_delta`, when it falls that far below the mean of the session's previous `window`
    customer messages.
    """

    escalate_below: float = Field(default=-0.6, ge=-1.0, le=0.0)
    drop_delta: float | None = Field(default=None, gt=0.0, le=2.0)  # None: no trend check
    window: int = Field(default=5, ge=1, le=50)


class PlannerConfig(_Section):
    """The plan the pipeline's built-in steps follow (SPEC 4.8), checked when the agent is
    built. `definition` is a mapping or YAML/JSON text; see docs/planners.md."""

    type: Literal["fsm", "behavior_tree", "llm"] = "fsm"
    definition: dict[str, Any] | str
    # What to do when a step fails, times out, meets a budget or a quality check
    # (`planning.replanning.ReplanPolicy.from_config`); None: follow the plan's on_error.
    replanning: dict[str, Any] | None = None


class AgentFrameworkConfig(_Section):
    name: str = Field(default="agent", min_length=1)
    session: SessionConfig = Field(default_factory=SessionConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    confidence: ConfidenceConfig = Field(default_factory=ConfidenceConfig)
    intents: IntentsConfig = Field(default_factory=IntentsConfig)
    threads: ThreadsConfig = Field(default_factory=ThreadsConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    prompts: dict[str, str] = Field(default_factory=dict)
    plugins: list[str] = Field(default_factory=list)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    # None: the support FSM (agentflow.kernel.planning.support.SUPPORT_PLANNER).
    planner: PlannerConfig | None = None
    # None: messages are not scored for frustration.
    sentiment: SentimentConfig | None = None

    @field_validator("plugins")
    @classmethod
    def _plugin_specs(cls, value: list[str]) -> list[str]:
        for spec in value:
            if not PLUGIN_SPEC_RE.fullmatch(spec):
                raise ValueError(f"{spec!r} is not 'package.module' or 'package.module:attr'")
        return value

    def to_dict(self, *, reveal_secrets: bool = False) -> dict[str, Any]:
        """Plain JSON-compatible data; secrets are masked unless `reveal_secrets`."""
        return self.model_dump(mode="json", context={"reveal_secrets": reveal_secrets})


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    path: str  # dotted field path, "" for the document as a whole
    reason: str
    line: int | None = None  # 1-based, when the source is a file
    env_var: str | None = None  # when the value came from the environment

    def describe(self) -> str:
        where = self.path or "<document>"
        if self.env_var:
            where = f"{self.env_var} ({where})"
        if self.line is not None:
            where = f"{where} (line {self.line})"
        return f"{where}: {self.reason}"


class ConfigError(ValueError):
    """Invalid configuration; the message names every bad field, the reason and the source."""

    def __init__(self, issues: Sequence[ConfigIssue], *, source: str | None = None) -> None:
        self.issues = tuple(issues)
        self.source = source
        head = (
            f"invalid agent configuration in {source}" if source else "invalid agent configuration"
        )
        body = "\n".join(f"  {issue.describe()}" for issue in self.issues)
        super().__init__(f"{head}:\n{body}")


def _format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The config section class found by following `loc` through the model tree."""
    annotation: Any = AgentFrameworkConfig
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return None
            annotation = field.annotation
        elif get_origin(annotation) in (list, dict):
            annotation = get_args(annotation)[-1]
        else:
            return None
    annotation = _unwrap(annotation)
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


def _unwrap(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        return args[0] if len(args) == 1 else annotation
    if get_origin(annotation) is Annotated:
        return get_args(annotation)[0]
    return annotation


def _reason(error: Mapping[str, Any], path: str) -> str:
    loc = error["loc"]
    if error["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        if parent is None:
            return "unknown key"
        allowed = list(parent.model_fields)
        unknown = str(loc[-1])
        hint = difflib.get_close_matches(unknown, allowed, n=1, cutoff=0.6) or [
            name for name in allowed if name.startswith(unknown) or unknown.startswith(name)
        ]
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"unknown key (allowed: {', '.join(allowed)}){suggestion}"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    secret = _SECRET_PATH_RE.search(path) is not None
    if error["type"] != "missing" and not secret and _shows_well(value):
        message += f" (got {value!r})"
    return message


def _shows_well(value: Any) -> bool:
    if isinstance(value, bool | int | float) or value is None:
        return True
    return isinstance(value, str) and len(value) <= 40 and "\n" not in value


# ------------------------------------------------------------- env substitution

_SUBST_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def escape_env(value: Any) -> Any:
    """Escape `$` in every string so substitution gives the original value back."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, Mapping):
        return {key: escape_env(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [escape_env(item) for item in value]
    return value


def _lookup_env(name: str, environ: Mapping[str, str]) -> str | None:
    value = environ.get(name)
    secret_file = environ.get(f"{name}_FILE")
    if not value and secret_file:
        # Docker/Kubernetes secrets: VAR_FILE names a file holding the value.
        try:
            return Path(secret_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise _SubstitutionError(f"cannot read {name}_FILE={secret_file}: {exc}") from exc
    return value


class _SubstitutionError(Exception):
    loc: tuple[int | str, ...] = ()


def _substitute(value: Any, environ: Mapping[str, str], loc: tuple[int | str, ...]) -> Any:
    if isinstance(value, str):
        if "$" not in value:
            return value

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            found = _lookup_env(name, environ)
            if found:
                return found
            if default is not None:  # like the shell, ${VAR:-x} also covers an empty VAR
                return default
            if found is not None:
                return found
            raise _SubstitutionError(
                f"environment variable {name} is not set and ${{{name}}} has no default "
                f"(write ${{{name}:-default}} to give one)"
            )

        try:
            return _SUBST_RE.sub(replace, value)
        except _SubstitutionError as exc:
            exc.loc = loc
            raise
    if isinstance(value, Mapping):
        return {key: _substitute(item, environ, (*loc, str(key))) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_substitute(item, environ, (*loc, index)) for index, item in enumerate(value)]
    return value


# -------------------------------------------------------------------- YAML lines


class _StrictYamlLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which PyYAML silently lets override."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """1-based line of the key at `loc`, or of its deepest ancestor present in the file."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                    line = key_node.start_mark.line + 1
                    child = value_node
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and (0 <= part < len(node.value))
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            return line
        node = child
    return line


# ------------------------------------------------------------------------ loader


class ConfigLoader:
    """Builds `AgentFrameworkConfig` from the supported sources; raises `ConfigError`."""

    @staticmethod
    def from_dict(
        data: Mapping[str, Any] | None,
        *,
        environ: Mapping[str, str] | None = None,
        source: str | None = None,
    ) -> AgentFrameworkConfig:
        return _build(data, environ=environ, source=source)

    @staticmethod
    def from_yaml(
        path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
    ) -> AgentFrameworkConfig:
        text, source = _read(path)
        loader = _StrictYamlLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            column = f", column {mark.column + 1}" if mark is not None else ""
            problem = "; ".join(part for part in (exc.context, exc.problem) if part)
            raise ConfigError(
                [ConfigIssue("", f"YAML syntax error{column}: {problem}", line)], source=source
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError([ConfigIssue("", f"YAML error: {exc}")], source=source) from None
        finally:
            loader.dispose()
        return _build(data, environ=environ, source=source, node=node)

    @staticmethod
    def from_json(
        path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
    ) -> AgentFrameworkConfig:
        text, source = _read(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            issue = ConfigIssue("", f"JSON syntax error, column {exc.colno}: {exc.msg}", exc.lineno)
            raise ConfigError([issue], source=source) from None
        node = _compose_quietly(text)  # JSON is YAML: reuse its node marks for field lines
        return _build(data, environ=environ, source=source, node=node)

    @staticmethod
    def from_env(
        prefix: str = "AGENT_", *, environ: Mapping[str, str] | None = None
    ) -> AgentFrameworkConfig:
        """`AGENT_SESSION__TTL_SECONDS=60`; values starting with `{` or `[` are JSON."""
        env = os.environ if environ is None else environ
        data, origins = _env_tree(prefix, env)
        return _build(data, environ=env, source=f"environment ({prefix}*)", origins=origins)

    @staticmethod
    def load(
        source: AgentFrameworkConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        *,
        env_prefix: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> AgentFrameworkConfig:
        """Config object, dict, or .yaml/.yml/.json path; `env_prefix` overlays the environment."""
        if isinstance(source, AgentFrameworkConfig):
            config = source
        elif source is None or isinstance(source, Mapping):
            config = ConfigLoader.from_dict(source, environ=environ)
        elif isinstance(source, str | os.PathLike):
            suffix = Path(source).suffix.lower()
            if suffix in (".yaml", ".yml"):
                config = ConfigLoader.from_yaml(source, environ=environ)
            elif suffix == ".json":
                config = ConfigLoader.from_json(source, environ=environ)
            else:
                issue = ConfigIssue(
                    "",
                    f"unsupported config file type {suffix or '(none)'!r}; "
                    "use .yaml, .yml or .json",
                )
                raise ConfigError([issue], source=str(source))
        else:
            issue = ConfigIssue("", f"cannot load configuration from {type(source).__name__}")
            raise ConfigError([issue])
        if env_prefix is None:
            return config
        env = os.environ if environ is None else environ
        overlay, origins = _env_tree(env_prefix, env)
        if not overlay:
            return config
        # The base is already resolved: escape it so only the overlay is substituted.
        merged = _deep_merge(escape_env(config.to_dict(reveal_secrets=True)), overlay)
        source_name = f"environment ({env_prefix}*) over the configuration"
        return _build(merged, environ=env, source=source_name, origins=origins)


def _read(path: str | os.PathLike[str]) -> tuple[str, str]:
    source = os.fspath(path)
    try:
        # newline="": parsers see the file as written (a quoted "\r" stays a "\r").
        with open(source, encoding="utf-8", newline="") as handle:
            return handle.read(), source
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([ConfigIssue("", f"cannot read file: {reason}")], source=source) from None


def _compose_quietly(text: str) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None


def _build(
    data: Any,
    *,
    environ: Mapping[str, str] | None,
    source: str | None,
    node: yaml.Node | None = None,
    origins: Mapping[tuple[str, ...], str] | None = None,
) -> AgentFrameworkConfig:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        reason = f"the top level must be a mapping of sections, not {type(data).__name__}"
        raise ConfigError([ConfigIssue("", reason, _line_of(node, ()))], source=source)
    env = os.environ if environ is None else environ
    try:
        resolved = _substitute(data, env, ())
    except _SubstitutionError as exc:
        line, env_var = _line_of(node, exc.loc), _origin(origins, exc.loc)
        issue = ConfigIssue(_format_loc(exc.loc), str(exc), line, env_var)
        raise ConfigError([issue], source=source) from None
    try:
        return AgentFrameworkConfig.model_validate(resolved)
    except ValidationError as exc:
        issues = []
        for error in exc.errors():
            loc = tuple(part for part in error["loc"] if part != "[key]")
            path = _format_loc(loc)
            issues.append(
                ConfigIssue(path, _reason(error, path), _line_of(node, loc), _origin(origins, loc))
            )
        raise ConfigError(issues, source=source) from None


def _origin(
    origins: Mapping[tuple[str, ...], str] | None, loc: tuple[int | str, ...]
) -> str | None:
    """The environment variable(s) that set the value at `loc` (or something under it)."""
    if not origins:
        return None
    key = tuple(str(part) for part in loc)
    for size in range(len(key), 0, -1):
        if key[:size] in origins:
            return origins[key[:size]]
    below = sorted(var for path, var in origins.items() if path[: len(key)] == key)
    return ", ".join(below) or None


def _env_tree(
    prefix: str, environ: Mapping[str, str]
) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    tree: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}
    made: set[int] = {id(tree)}  # dicts built from name parts (not JSON values)
    upper = prefix.upper()
    for var in sorted(environ):
        if not var.upper().startswith(upper) or len(var) == len(prefix):
            continue
        parts = _env_path(var[len(prefix) :].split("__"))
        raw = environ[var]
        value: Any = raw
        stripped = raw.strip()
        if stripped.startswith(("{", "[")):
            try:
                value = json.loads(stripped)
            except json.JSONDecodeError as exc:
                issue = ConfigIssue(
                    _format_loc(parts), f"invalid JSON value: {exc.msg}", env_var=var
                )
                raise ConfigError([issue], source=f"environment ({prefix}*)") from None
        elif stripped == "null":
            value = None
        node = tree
        for part in parts[:-1]:
            if part not in node:
                node[part] = {}
                made.add(id(node[part]))
            child = node[part]
            if not isinstance(child, dict):
                issue = ConfigIssue(
                    _format_loc(parts), "conflicts with another variable", env_var=var
                )
                raise ConfigError([issue], source=f"environment ({prefix}*)")
            node = child
        node[parts[-1]] = value
        origins[tuple(parts)] = var
    return _lists_from_indices(tree, made), origins


def _env_path(raw_parts: list[str]) -> list[str]:
    """Lower-case the parts that name model fields; keep dict keys (intent names) as written."""
    parts: list[str] = []
    for raw in raw_parts:
        parts.append(raw.lower() if _model_at(parts) is not None else raw)
    return parts


def _lists_from_indices(value: Any, made: set[int]) -> Any:
    """`{"0": a, "1": b}` built from `..__0__..` names becomes `[a, b]`."""
    if not isinstance(value, dict) or id(value) not in made:
        return value
    converted = {key: _lists_from_indices(item, made) for key, item in value.items()}
    if converted and all(key.isdigit() for key in converted):
        indices = sorted(int(key) for key in converted)
        if indices == list(range(len(indices))):
            return [converted[str(index)] for index in indices]
    return converted


def _deep_merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overlay.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            merged[key] = _deep_merge(current, value)
        elif (
            isinstance(current, list)
            and isinstance(value, list)
            and all(isinstance(item, dict) for item in current + value)
        ):
            # AGENT_LLM__PROVIDERS__0__MODEL edits the first provider instead of replacing the list.
            items = [dict(item) for item in current]
            for index, item in enumerate(value):
                if index < len(items):
                    items[index] = _deep_merge(items[index], item)
                else:
                    items.append(item)
            merged[key] = items
        else:
            merged[key] = value
    return merged
