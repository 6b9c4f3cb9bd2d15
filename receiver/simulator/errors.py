"""The documented API errors: `{"errors":[{"message", "extensions":{"code", ...}}]}`.

An ApiError carries the documented code; the app chooses the HTTP status
from it (`app.STATUS`), so status codes stay in the app layer.
"""

from __future__ import annotations

from typing import Any, Literal

from receiver.core.errors import ReceiverError

Code = Literal[
    "BAD_REQUEST",
    "UNAUTHENTICATED",
    "INSUFFICIENT_CREDITS",
    "NOT_FOUND",
    "RATE_LIMITED",
    "CONCURRENCY_LIMIT",
    "DAILY_LIMIT",
    "INTERNAL_ERROR",
]


class ApiError(ReceiverError):
    """An answer the simulated API gives instead of a result."""

    def __init__(self, code: Code, message: str, *, retry_after: int | None = None, **extensions: Any) -> None:
        super().__init__(message)
        self.code: Code = code
        self.message = message
        self.retry_after = retry_after
        self.extensions = extensions
        if retry_after is not None:
            self.extensions["retryAfter"] = retry_after

    def document(self, path: list[str] | None = None) -> dict[str, Any]:
        """The documented error body for this error."""
        error: dict[str, Any] = {"message": self.message, "extensions": {"code": self.code, **self.extensions}}
        if path:
            error["path"] = path
        return {"errors": [error]}


class RequestErrors(ApiError):
    """A request refused with several errors at once, each already in the documented form.

    GraphQL reports every syntax or validation error it finds, with where in
    the document it is (`locations`); each entry keeps the documented
    `extensions.code`.
    """

    def __init__(self, code: Code, errors: list[dict[str, Any]]) -> None:
        super().__init__(code, "; ".join(str(e.get("message")) for e in errors))
        self.errors = errors

    def document(self, path: list[str] | None = None) -> dict[str, Any]:
        return {"errors": self.errors}


def bad_request(message: str) -> ApiError:
    return ApiError("BAD_REQUEST", message)


UNAUTHENTICATED = "Missing or invalid API key"
INTERNAL = "Internal server error"
