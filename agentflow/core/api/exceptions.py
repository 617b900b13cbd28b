"""API errors that carry extra body fields and headers (429/402 say which limit and when)."""

from __future__ import annotations

from typing import Any

from rest_framework import status
from rest_framework.exceptions import APIException


class ContractError(APIException):
    """An APIException whose ``extra`` fields join the error body and ``headers`` the response."""

    def __init__(
        self,
        detail: str,
        *,
        status_code: int,
        error_type: str,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.error_type = error_type
        self.extra = extra or {}
        self.headers = headers or {}


def quota_exceeded(
    limit: str, retry_after: int, resets_at: str | None, *, hard_budget: bool = False
) -> ContractError:
    """429 (402 for a hard budget) naming the quota and, when it has one, its reset time."""
    when = f"it resets at {resets_at}" if resets_at else f"retry in {retry_after} s"
    return ContractError(
        f"Quota {limit!r} exhausted; {when}.",
        status_code=status.HTTP_402_PAYMENT_REQUIRED
        if hard_budget
        else status.HTTP_429_TOO_MANY_REQUESTS,
        error_type="budget_exhausted" if hard_budget else "quota_exceeded",
        extra={"limit": limit, "resets_at": resets_at, "retry_after": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


def conflict(detail: str, error_type: str = "conflict", **extra: Any) -> ContractError:
    return ContractError(
        detail, status_code=status.HTTP_409_CONFLICT, error_type=error_type, extra=extra
    )


def unprocessable(detail: str, errors: dict[str, list[str]]) -> ContractError:
    return ContractError(
        detail,
        status_code=status.HTTP_422_UNPROCESSABLE_ENTITY,
        error_type="validation_error",
        extra={"errors": errors},
    )
