"""``send_email``: a plain-text email through Django's mail backend (``EMAIL_BACKEND``).

Every recipient must be at one of the agent's ``allowed_domains`` (or a subdomain of one):
an agent cannot mail arbitrary addresses. The backend call is blocking I/O (SMTP), so it
runs in a worker thread.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.validators import validate_email

from agentflow.builtin_tools.config import SendEmailSettings
from agentflow.kernel.tools import RateLimit, Tool, ToolError

__all__ = ["send_email_tool"]


def _domain_allowed(address: str, domains: list[str]) -> bool:
    domain = address.rpartition("@")[2].lower()
    return any(domain == allowed or domain.endswith(f".{allowed}") for allowed in domains)


def _check_recipients(addresses: list[str], options: SendEmailSettings) -> None:
    if len(addresses) > options.max_recipients:
        raise ToolError(f"send_email: at most {options.max_recipients} recipients")
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            raise ToolError(f"send_email: {address!r} is not an email address") from None
        if not _domain_allowed(address, options.allowed_domains):
            allowed = ", ".join(options.allowed_domains)
            raise ToolError(f"send_email: {address!r} is not at an allowed domain ({allowed})")


def send_email_tool(options: SendEmailSettings) -> Tool:
    def deliver(arguments: dict[str, Any]) -> dict[str, Any]:
        to, cc = list(arguments["to"]), list(arguments.get("cc", []))
        reply_to = [arguments["reply_to"]] if "reply_to" in arguments else []
        _check_recipients(to + cc, options)
        _check_recipients(reply_to, options)  # replies must not go elsewhere either
        message = EmailMessage(
            subject=arguments["subject"],
            body=arguments["body"],
            from_email=options.from_address,
            to=to,
            cc=cc,
            reply_to=reply_to,
        )
        sent = message.send(fail_silently=False)
        if not sent:
            raise ToolError("send_email: the mail backend sent nothing")
        return {"sent": True, "to": to, "cc": cc}

    async def call(arguments: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await sync_to_async(deliver, thread_sensitive=False)(arguments)
        return result

    address = {
        "type": "string",
        "minLength": 3,
        "maxLength": 254,
        "pattern": r"^[^\s<>,;]+@[^\s<>,;]+$",
    }
    return Tool(
        id="send_email",
        handler=call,
        description=(
            f"Send a plain-text email to addresses at {', '.join(options.allowed_domains)}."
        ),
        input_schema={
            "type": "object",
            "properties": {
                "to": {"type": "array", "items": address, "minItems": 1, "maxItems": 100},
                "cc": {"type": "array", "items": address, "maxItems": 100},
                "reply_to": address,
                # No line breaks: a subject is one header line (no header injection).
                "subject": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 250,
                    "pattern": r"^[^\r\n]*$",
                },
                "body": {"type": "string", "minLength": 1, "maxLength": 50_000},
            },
            "required": ["to", "subject", "body"],
            "additionalProperties": False,
        },
        output_schema={
            "type": "object",
            "properties": {
                "sent": {"const": True},
                "to": {"type": "array", "items": {"type": "string"}},
                "cc": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["sent", "to"],
        },
        required_permissions="execute",
        safety_level="requires_confirmation",
        timeout=20.0,
        rate_limit=RateLimit.parse("100/hour"),
        source="builtin",
    )
