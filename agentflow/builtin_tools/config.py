"""An agent config's ``tool_settings``: what each built-in tool may reach, and with which secret.

A tenant writes these settings and the server runs them, so two operator allowlists bound
them (as LLM endpoints and keys are bounded, `agentflow.pipelines`):

* every URL (``http_request.allowed_hosts``, ``zendesk.base_url``, ``jira.base_url``,
  ``lookup_order.url_template``) must lie under a prefix of ``TOOL_ALLOWED_URLS``;
* a secret is never a value, only a ``${VAR}`` reference to a server environment variable
  listed in ``TOOL_SECRET_ENV_VARS``; it is read when a call is made, so a rotated key is
  picked up without touching the config.

Validation errors carry pydantic's location (``zendesk.api_token``), which the config
validation turns into the 422's field.
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from agentflow.core.conf import setting_list
from agentflow.kernel.tools import ToolError
from agentflow.kernel.tools.http import url_allowed

__all__ = [
    "BuiltinToolContext",
    "BuiltinToolSettings",
    "HttpRequestSettings",
    "JiraSettings",
    "LookupOrderSettings",
    "SendEmailSettings",
    "ZendeskSettings",
    "allowed_urls",
    "resolve_secret",
    "secret_env_vars",
]

_ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_ENV_INSIDE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,100}$")
# Header names whose value is a credential: a reference, never the credential itself.
_SECRET_HEADER = re.compile(r"(?i)authorization|cookie|token|secret|api[-_]?key|password")


def allowed_urls() -> tuple[str, ...]:
    """The operator's URL prefixes (``TOOL_ALLOWED_URLS``); empty: no URL tool is usable."""
    return tuple(url for url in setting_list("TOOL_ALLOWED_URLS") if url)


def secret_env_vars() -> tuple[str, ...]:
    """Server environment variables a tool setting may reference (``TOOL_SECRET_ENV_VARS``)."""
    return tuple(name for name in setting_list("TOOL_SECRET_ENV_VARS") if name)


def resolve_secret(reference: str, what: str) -> str:
    """The value of a validated ``${VAR}`` reference, read now (ToolError when unset)."""
    match = _ENV_REFERENCE.match(reference)
    value = os.environ.get(match.group(1), "") if match else ""
    if not value:
        raise ToolError(f"{what}: the server has no value for {reference}")
    return value


def resolve_references(text: str, what: str) -> str:
    """``text`` with every ``${VAR}`` replaced by its value (a header like ``Bearer ${X}``)."""
    return _ENV_INSIDE.sub(lambda m: resolve_secret(m.group(0), what), text)


# ----------------------------------------------------------------------------- validators


def _check_reference(name: str) -> None:
    allowed = secret_env_vars()
    if name not in allowed:
        names = ", ".join(f"${{{var}}}" for var in allowed) or "none"
        raise ValueError(f"${{{name}}} is not a variable the operator allows (allowed: {names})")


def _secret_reference(value: str) -> str:
    match = _ENV_REFERENCE.match(value)
    if match is None:
        raise ValueError(
            "must be a ${VAR} reference to a server environment variable, not a secret"
        )
    _check_reference(match.group(1))
    return value


def _allowed_url(value: str) -> str:
    """An absolute http(s) URL without credentials, query or fragment, under the allowlist."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if parts.username or parts.password or "@" in parts.netloc:
        raise ValueError("must not carry credentials (use the api_token setting)")
    if parts.query or parts.fragment or any(ch.isspace() for ch in value):
        raise ValueError("must not have a query, a fragment or whitespace")
    if "{" in value or "}" in value:
        raise ValueError("must not contain braces")
    prefixes = allowed_urls()
    if not url_allowed(value, prefixes):
        allowed = ", ".join(prefixes) or "none: the operator has not set TOOL_ALLOWED_URLS"
        raise ValueError(f"not under an allowed URL prefix (allowed: {allowed})")
    return value.rstrip("/")


def _email(value: str) -> str:
    try:
        validate_email(value)
    except DjangoValidationError:
        raise ValueError("must be an email address") from None
    return value


def _domain(value: str) -> str:
    domain = value.strip().lower()
    if not _DOMAIN.match(domain):
        raise ValueError(f"{value!r} is not a domain name")
    return domain


SecretRef = Annotated[str, AfterValidator(_secret_reference)]
AllowedUrl = Annotated[str, Field(max_length=500), AfterValidator(_allowed_url)]
Email = Annotated[str, Field(max_length=254), AfterValidator(_email)]
Domain = Annotated[str, AfterValidator(_domain)]
MaxBytes = Annotated[int, Field(ge=1, le=10_000_000)]
Timeout = Annotated[float, Field(gt=0, le=60)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------- sections


class HttpRequestSettings(_Strict):
    """``http_request``: GET (and POST when ``allow_post``) to these URL prefixes only."""

    allowed_hosts: list[AllowedUrl] = Field(min_length=1, max_length=50)
    allow_post: bool = False
    max_bytes: MaxBytes = 1_000_000
    timeout: Timeout = 10.0


class ZendeskSettings(_Strict):
    base_url: AllowedUrl  # https://<subdomain>.zendesk.com
    email: Email
    api_token: SecretRef
    timeout: Timeout = 15.0


class JiraSettings(_Strict):
    base_url: AllowedUrl  # https://<site>.atlassian.net
    email: Email
    api_token: SecretRef
    project_key: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,9}$")
    issue_type: str = Field(default="Task", min_length=1, max_length=100)
    timeout: Timeout = 15.0


class LookupOrderSettings(_Strict):
    """``lookup_order``: GET ``url_template`` with the order id quoted into ``{order_id}``."""

    url_template: str = Field(max_length=500)
    headers: dict[str, str] = Field(default_factory=dict, max_length=20)
    max_bytes: MaxBytes = 200_000
    timeout: Timeout = 10.0

    @field_validator("url_template")
    @classmethod
    def _template(cls, template: str) -> str:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        if fields != ["order_id"]:
            raise ValueError("must contain {order_id} once and no other placeholder")
        before, _, after = template.partition("{order_id}")
        if "?" in before or "#" in before or "?" in after or "#" in after:
            raise ValueError("must not have a query or a fragment")
        _allowed_url(before + "0" + after)
        return template

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            _check_header(name, value)
        return headers


def _check_header(name: str, value: str) -> None:
    if not _HEADER_NAME.match(name) or "\n" in value or "\r" in value or len(value) > 2000:
        raise ValueError(f"{name!r} is not a valid header")
    references = _ENV_INSIDE.findall(value)
    for reference in references:
        _check_reference(reference)
    if _SECRET_HEADER.search(name) and not references:
        raise ValueError(f"{name!r} carries a credential: its value must use a ${{VAR}} reference")


class SendEmailSettings(_Strict):
    from_address: Email
    allowed_domains: list[Domain] = Field(min_length=1, max_length=50)
    max_recipients: int = Field(default=10, ge=1, le=100)


class BuiltinToolSettings(_Strict):
    """An agent config's ``tool_settings``: a tool whose section is absent is not offered
    (``knowledge_search`` and ``handoff_to_human`` need none and always are)."""

    http_request: HttpRequestSettings | None = None
    zendesk: ZendeskSettings | None = None
    jira: JiraSettings | None = None
    lookup_order: LookupOrderSettings | None = None
    send_email: SendEmailSettings | None = None


@dataclass(frozen=True)
class BuiltinToolContext:
    """Whose tools these are: the tenant scope their data access runs in, and the agent."""

    tenant_id: int
    agent_id: str
    settings: BuiltinToolSettings
