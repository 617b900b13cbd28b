"""OpenAI and OpenAI-compatible servers (vLLM, Ollama, TGI) through the official async SDK.

Retries are ours, not the SDK's (it is built with ``max_retries=0``) so that they are explicit
and testable: tenacity with exponential backoff and jitter, honouring ``Retry-After`` on 429
up to a cap, retrying 408/409/429/5xx, timeouts and connection errors, never other 4xx.
When retries are exhausted the call raises `ProviderUnavailable`, which the provider's
`CircuitBreaker` counts; an open breaker raises `CircuitOpen` without calling at all.

Errors, so the failover chain can tell them apart:

* `ProviderUnavailable`: the provider is down, overloaded, timing out, or refuses our
  credentials or model (401/403/404). The next provider should be tried.
* `RequestRejected`: the server is up but rejects this request (400, 413, 422, ...).
* `InvalidResponse`: the answer is unusable (malformed JSON, schema violation, bad tool
  arguments); it carries the `LLMResponse` so its tokens are still accounted for.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, TypeVar

import jsonschema
import openai
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from agentflow.kernel.costs import PriceTable, estimate_tokens, estimate_usage
from agentflow.kernel.llm.base import (
    ChatMessage,
    EmbeddingResponse,
    InvalidResponse,
    LLMError,
    LLMResponse,
    ProviderUnavailable,
    RequestRejected,
    TokenUsage,
    ToolCallRequest,
    ToolSpec,
)
from agentflow.kernel.llm.resilience import CircuitBreaker

__all__ = ["InvalidResponse", "OpenAIProvider", "RequestRejected", "RetryPolicy"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

_RETRYABLE_STATUS = frozenset({408, 409, 429})
_UNAVAILABLE_STATUS = frozenset({401, 403, 404})
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_SCHEMA_NAME = re.compile(r"[^a-zA-Z0-9_-]+")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff of our retries: ``initial_wait * 2**n`` capped at ``max_wait``, plus jitter.

    A 429's ``Retry-After`` replaces the backoff, capped at ``retry_after_cap`` so one slow
    provider cannot hold a customer's answer for minutes when failover could answer now.
    """

    initial_wait: float = 0.5
    max_wait: float = 8.0
    jitter: float = 0.5
    retry_after_cap: float = 10.0

    def wait_seconds(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = _retry_after_seconds(exc)
        if retry_after is not None:
            return min(retry_after, self.retry_after_cap)
        backoff = wait_exponential_jitter(
            multiplier=self.initial_wait, max=self.max_wait, jitter=self.jitter
        )
        return float(backoff(retry_state))


def _retry_after_seconds(exc: BaseException | None) -> float | None:
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500
    return False


class OpenAIProvider:
    """`LLMProvider` over ``openai.AsyncOpenAI`` with retries, a circuit breaker and costs."""

    def __init__(
        self,
        model: str = "gpt-4o-mini",
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_seconds: float = 30.0,
        max_retries: int = 2,
        name: str = "openai",
        price_table: PriceTable | None = None,
        breaker: CircuitBreaker | None = None,
        embedding_model: str = "text-embedding-3-small",
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_tokens_param: Literal["max_tokens", "max_completion_tokens"] | None = None,
        client: openai.AsyncOpenAI | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries cannot be negative")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self.model = model
        self.name = name
        self.embedding_model = embedding_model
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.price_table = price_table or PriceTable()
        self.breaker = breaker or CircuitBreaker(name=name)
        self.retry_policy = retry_policy or RetryPolicy()
        self._sleep = sleep
        # OpenAI deprecates max_tokens for chat; compatible servers mostly know only max_tokens.
        self._max_tokens_param = max_tokens_param or (
            "max_completion_tokens" if base_url is None else "max_tokens"
        )
        self._client = client or openai.AsyncOpenAI(
            api_key=_resolve_api_key(api_key, base_url),
            base_url=base_url,
            timeout=timeout_seconds,
            max_retries=0,
        )

    async def __aenter__(self) -> OpenAIProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.close()

    async def chat(
        self,
        messages: list[ChatMessage],
        *,
        model: str | None = None,
        tools: list[ToolSpec] | None = None,
        json_schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> LLMResponse:
        # ``metadata`` is pipeline context for offline answering; it is not sent anywhere.
        del metadata
        model_name = model or self.model
        request: dict[str, Any] = {
            "model": model_name,
            "messages": [_to_openai_message(m) for m in messages],
            "temperature": temperature,
        }
        if max_tokens is not None:
            request[self._max_tokens_param] = max_tokens
        if tools:
            request["tools"] = [_to_openai_tool(t) for t in tools]
        if json_schema is not None:
            _check_schema(json_schema)
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": _schema_name(json_schema),
                    "schema": json_schema,
                    # Strict mode rejects common schemas (optional fields, open objects); we
                    # validate the answer ourselves instead.
                    "strict": False,
                },
            }

        async def call() -> Any:
            return await self._client.chat.completions.create(**request)

        completion, attempts = await self._guarded(call)
        return self._to_response(completion, model_name, messages, json_schema, attempts)

    async def embed(self, texts: list[str], *, model: str | None = None) -> EmbeddingResponse:
        model_name = model or self.embedding_model
        if not texts:
            return EmbeddingResponse(vectors=[], model=model_name, provider=self.name)

        async def call() -> Any:
            return await self._client.embeddings.create(
                model=model_name, input=list(texts), encoding_format="float"
            )

        result, _ = await self._guarded(call)
        vectors = [list(item.embedding) for item in sorted(result.data, key=lambda d: d.index)]
        if result.usage is not None:
            usage = TokenUsage(prompt_tokens=result.usage.prompt_tokens)
        else:
            usage = TokenUsage(prompt_tokens=sum(estimate_tokens(t) for t in texts))
        used_model = result.model or model_name
        return EmbeddingResponse(
            vectors=vectors,
            model=used_model,
            provider=self.name,
            usage=usage,
            cost_usd=self.price_table.cost(used_model, usage),
        )

    async def _guarded(self, make: Callable[[], Awaitable[T]]) -> tuple[T, int]:
        """Breaker check, retries, and the mapping of SDK errors to ours."""
        self.breaker.before_call()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self.retry_policy.wait_seconds,
            retry=retry_if_exception(_is_retryable),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            result: T = await retrying(make)
        except (openai.OpenAIError, json.JSONDecodeError) as exc:
            # The SDK lets a 2xx body that is not JSON escape as a bare JSONDecodeError.
            attempts = int(retrying.statistics.get("attempt_number", 1))
            error = self._map_error(exc, attempts)
            if isinstance(error, ProviderUnavailable):
                self.breaker.record_failure()
            else:
                self.breaker.record_success()  # it answered: the provider itself is up
            raise error from exc
        except BaseException:
            self.breaker.release_probe()
            raise
        self.breaker.record_success()
        return result, int(retrying.statistics.get("attempt_number", 1))

    def _log_retry(self, retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        log.warning(
            "llm.retry",
            provider=self.name,
            attempt=retry_state.attempt_number,
            wait_seconds=round(retry_state.upcoming_sleep, 3),
            error=f"{type(exc).__name__}: {exc}" if exc else None,
        )

    def _map_error(self, exc: Exception, attempts: int) -> LLMError:
        tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        if isinstance(exc, openai.APITimeoutError):
            return ProviderUnavailable(
                f"{self.name}: timed out ({self.timeout_seconds:g}s per attempt) {tries}"
            )
        if isinstance(exc, openai.APIConnectionError):
            return ProviderUnavailable(f"{self.name}: connection failed {tries}: {exc}")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if _is_retryable(exc) or status in _UNAVAILABLE_STATUS:
                return ProviderUnavailable(f"{self.name}: HTTP {status} {tries}: {_detail(exc)}")
            return RequestRejected(
                f"{self.name}: HTTP {status}: {_detail(exc)}", status_code=status
            )
        if isinstance(exc, json.JSONDecodeError):
            return ProviderUnavailable(f"{self.name}: malformed response body: {exc}")
        # Anything else the SDK raises: treat the provider as unusable.
        return ProviderUnavailable(f"{self.name}: {type(exc).__name__}: {exc}")

    def _to_response(
        self,
        completion: Any,
        model_name: str,
        messages: Sequence[ChatMessage],
        json_schema: dict[str, Any] | None,
        attempts: int,
    ) -> LLMResponse:
        if not completion.choices:
            raise InvalidResponse(
                f"{self.name}: response without choices",
                response=LLMResponse(content="", model=model_name, provider=self.name),
            )
        choice = completion.choices[0]
        message = choice.message
        content = message.content or ""
        used_model = completion.model or model_name
        metadata: dict[str, Any] = {
            "offline": False,
            "finish_reason": choice.finish_reason,
            "attempts": attempts,
            "response_id": completion.id,
        }
        if completion.usage is not None:
            usage = TokenUsage(
                prompt_tokens=completion.usage.prompt_tokens or 0,
                completion_tokens=completion.usage.completion_tokens or 0,
            )
        else:  # some compatible servers omit usage: estimate so budgets still see the call
            usage = TokenUsage(
                prompt_tokens=estimate_usage(messages, 0).prompt_tokens,
                completion_tokens=estimate_tokens(content),
            )
            metadata["usage_estimated"] = True
        if getattr(message, "refusal", None):
            metadata["refusal"] = message.refusal
        response = LLMResponse(
            content=content,
            model=used_model,
            provider=self.name,
            usage=usage,
            cost_usd=self.price_table.cost(used_model, usage),
            metadata=metadata,
        )
        response.tool_calls = self._parse_tool_calls(message, response)
        if json_schema is not None:
            response.metadata["json"] = self._parse_json(content, json_schema, response)
        return response

    def _parse_tool_calls(self, message: Any, response: LLMResponse) -> list[ToolCallRequest]:
        calls: list[ToolCallRequest] = []
        for call in message.tool_calls or ():
            function = getattr(call, "function", None)
            if function is None:  # non-function tool kinds are not offered by us
                continue
            try:
                arguments = json.loads(function.arguments or "{}")
            except json.JSONDecodeError as exc:
                raise InvalidResponse(
                    f"{self.name}: tool call {function.name!r} has malformed arguments: {exc}",
                    response=response,
                ) from exc
            if not isinstance(arguments, dict):
                raise InvalidResponse(
                    f"{self.name}: tool call {function.name!r} arguments are not an object",
                    response=response,
                )
            calls.append(ToolCallRequest(id=call.id, name=function.name, arguments=arguments))
        return calls

    def _parse_json(self, content: str, schema: dict[str, Any], response: LLMResponse) -> Any:
        if response.metadata.get("refusal"):
            raise InvalidResponse(
                f"{self.name}: the model refused: {response.metadata['refusal']}",
                response=response,
            )
        fenced = _FENCE.match(content)  # local models often wrap JSON in a code fence
        text = fenced.group(1) if fenced else content
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidResponse(
                f"{self.name}: answer is not JSON: {exc}", response=response
            ) from exc
        validator = jsonschema.Draft202012Validator(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise InvalidResponse(
                f"{self.name}: JSON answer violates the schema at {where}: {error.message}",
                response=response,
            )
        return value


def _detail(exc: openai.APIStatusError) -> str:
    """The server's own error message, without the SDK's "Error code: N - " prefix."""
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return exc.message


def _resolve_api_key(api_key: str | None, base_url: str | None) -> str:
    if api_key:
        return api_key
    from_env = os.environ.get("OPENAI_API_KEY")
    if from_env:
        return from_env
    if base_url is not None:
        # Self-hosted OpenAI-compatible servers usually ignore the key, but the SDK needs one.
        return "not-needed"
    raise ValueError(
        "OpenAIProvider needs an api_key (or OPENAI_API_KEY in the environment) "
        "unless base_url points at a server that needs none"
    )


def _check_schema(schema: dict[str, Any]) -> None:
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise RequestRejected(f"invalid JSON schema for the answer: {exc.message}") from exc


def _schema_name(schema: dict[str, Any]) -> str:
    title = str(schema.get("title") or "response")
    return _SCHEMA_NAME.sub("_", title).strip("_")[:64] or "response"


def _to_openai_message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name:
        out["name"] = message.name
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in message.tool_calls
        ]
        if not message.content:
            out["content"] = None
    return out


def _to_openai_tool(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters or {"type": "object", "properties": {}},
        },
    }
