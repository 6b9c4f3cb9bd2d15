"""Doitong's API, as its documentation describes it: GraphQL `generate` and the
`avatar(id)` status query, with its errors turned into exceptions that say what
to do. The query texts live here and nowhere else.

Retries (with `stamina`): 5xx answers and connection failures are retried with
exponential back-off (the documentation's advice); a 429 waits until
`X-RateLimit-Reset` (or `Retry-After`) when that is soon enough, else raises
RateLimited with the time to come back. Every retry is counted
(`stamina_retries_total`) and logged (logger `receiver.retries`).
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import stamina
from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue
from yarl import URL

from receiver import __version__
from receiver.core import tracing
from receiver.core.errors import ReceiverError

GENERATE = (
    "mutation Generate($input: GenerateInput!) "
    "{ generate(input: $input) { id status type provider url metadata creditCost createdAt } }"
)
AVATAR = "query Avatar($id: ID!) { avatar(id: $id) { id status url duration createdAt } }"


class ProviderError(ReceiverError):
    """Doitong answered with an error (its `errors[].extensions.code` is in `code`)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Unauthorized(ProviderError):
    """401: the API key is missing or wrong."""


class InsufficientCredits(ProviderError):
    """402: the account lacks credits for this generation."""

    def __init__(self, message: str, *, required: int | None, available: int | None) -> None:
        super().__init__(message, status=402, code="INSUFFICIENT_CREDITS")
        self.required = required
        self.available = available


class RateLimited(ProviderError):
    """429: the plan's limit is used up until `reset_at` (Unix seconds)."""

    def __init__(self, message: str, *, reset_at: float | None, code: str | None) -> None:
        super().__init__(message, status=429, code=code)
        self.reset_at = reset_at


class Unavailable(ProviderError):
    """5xx or no answer, after every retry."""


class TryAgain(Exception):
    """One attempt failed in a way the next may not (a 5xx, no answer, a 429 whose window
    resets soon): the retry loop's signal to stamina, never raised to a caller. `error` is
    what the caller gets when no attempt is left; `delay`, when set, replaces the back-off."""

    def __init__(self, error: ProviderError, *, delay: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.delay = delay


def _retry_on(exc: Exception) -> bool | float:
    """stamina's hook: retry on TryAgain only, after its own delay when it has one."""
    if not isinstance(exc, TryAgain):
        return False
    return True if exc.delay is None else exc.delay


@dataclass(frozen=True, slots=True)
class Generated:
    id: str
    status: str
    type: str | None
    provider: str | None
    credit_cost: int | None
    created_at: datetime | None
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AvatarStatus:
    id: str
    status: str
    url: str | None
    duration: float | None
    created_at: datetime | None
    raw: dict[str, Any]


class DoitongClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 1.0,
        max_rate_wait: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self._retries = retries
        self._backoff = backoff
        self._max_rate_wait = max_rate_wait
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout),
            headers={"user-agent": f"doitong-receiver/{__version__}"},
        )

    async def __aenter__(self) -> DoitongClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def generate(
        self,
        *,
        text: str,
        avatar: str,
        voice: str | None,
        service: str,
        webhook_url: str,
        version: str | None = None,
    ) -> Generated:
        options: dict[str, Any] = {}
        if voice:
            options["voice"] = voice
        if version:
            options["version"] = version
        variables = {
            "input": {
                "type": "AVATAR",
                "provider": service,
                "input": {"text": text, "avatarId": avatar},
                "options": options,
                "webhookUrl": webhook_url,
            }
        }
        data = await self._graphql(GENERATE, variables, operation=("mutation", "Generate"))
        job = data.get("generate")
        if not isinstance(job, dict) or not isinstance(job.get("id"), str):
            raise ProviderError("generate answered without a job id")
        cost = job.get("creditCost")
        return Generated(
            id=job["id"],
            status=str(job.get("status") or "processing"),
            type=job.get("type"),
            provider=job.get("provider"),
            credit_cost=cost if isinstance(cost, int) else None,
            created_at=_time(job.get("createdAt")),
            raw=job,
        )

    async def avatar(self, job_id: str) -> AvatarStatus | None:
        """The job as the provider sees it now; None when it does not know the id."""
        data = await self._graphql(AVATAR, {"id": job_id}, not_found_ok=True, operation=("query", "Avatar"))
        job = data.get("avatar")
        if not isinstance(job, dict):
            return None
        duration = job.get("duration")
        return AvatarStatus(
            id=str(job.get("id") or job_id),
            status=str(job.get("status") or ""),
            url=job.get("url") if isinstance(job.get("url"), str) else None,
            duration=float(duration) if isinstance(duration, int | float) and not isinstance(duration, bool) else None,
            created_at=_time(job.get("createdAt")),
            raw=job,
        )

    async def _graphql(
        self,
        query: str,
        variables: dict[str, Any],
        *,
        not_found_ok: bool = False,
        operation: tuple[str, str] = ("query", "Query"),
    ) -> dict[str, Any]:
        # `retries` retries after the first attempt, waiting backoff, 2 x backoff, 4 x ...
        # without jitter or a cap (a caller may wait that long), and no overall time limit
        # beyond each request's timeout.
        try:
            async for attempt in stamina.retry_context(
                on=_retry_on,
                attempts=self._retries + 1,
                timeout=None,
                wait_initial=self._backoff,
                wait_max=self._backoff * 2**self._retries,
                wait_jitter=0.0,
                wait_exp_base=2,
            ):
                with attempt, self._span(operation, attempt.num) as span:
                    return await self._attempt(
                        query, variables, not_found_ok=not_found_ok, attempt=attempt.num, span=span
                    )
        except TryAgain as exc:
            raise exc.error from None
        raise AssertionError("unreachable: stamina makes at least one attempt")

    def _span(self, operation: tuple[str, str], attempt: int) -> AbstractContextManager[Span]:
        """One request's CLIENT span (HTTP and GraphQL conventions); an exception out of it,
        TryAgain included, marks it failed. A no-op when tracing is off."""
        url = URL(self.base_url + "/graphql")
        attributes: dict[str, AttributeValue] = {
            "http.request.method": "POST",
            "url.full": str(url),
            "server.address": url.host or "",
            "graphql.operation.type": operation[0],
            "graphql.operation.name": operation[1],
        }
        if url.port is not None:
            attributes["server.port"] = url.port
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        return tracing.span("POST", kind=SpanKind.CLIENT, attributes=attributes)

    async def _attempt(
        self, query: str, variables: dict[str, Any], *, not_found_ok: bool, attempt: int, span: Span
    ) -> dict[str, Any]:
        """One request; TryAgain when another attempt may succeed, and `attempt` is not the last.
        Doitong gets the request's `traceparent`, so its side can join the trace."""
        try:
            async with self._session.post(
                self.base_url + "/graphql",
                json={"query": query, "variables": variables},
                headers={"authorization": f"Bearer {self._key}", **tracing.headers()},
            ) as response:
                status = response.status
                span.set_attribute("http.response.status_code", status)
                headers = response.headers
                try:
                    body = await response.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    body = None
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TryAgain(Unavailable(f"Doitong did not answer ({exc or type(exc).__name__})")) from None
        error = _first_error(body)
        message = (error or {}).get("message") or f"HTTP {status}"
        code = ((error or {}).get("extensions") or {}).get("code")
        if status >= 500:
            raise TryAgain(
                Unavailable(
                    f"Doitong failed with {status} ({message}) after {attempt} attempts", status=status, code=code
                )
            )
        if status == 429:
            reset_at = _reset_at(headers)
            limited = RateLimited(
                f"rate limited by Doitong ({message}); the window resets at {reset_at}", reset_at=reset_at, code=code
            )
            wait = (reset_at - time.time()) if reset_at is not None else None
            if wait is not None and 0 <= wait <= self._max_rate_wait and attempt <= self._retries:
                raise TryAgain(limited, delay=wait + 0.05)
            raise limited
        if status == 401:
            raise Unauthorized(f"Doitong refused the API key (DOITONG_API_KEY): {message}", status=401, code=code)
        if status == 402:
            extensions = (error or {}).get("extensions") or {}
            required, available = extensions.get("creditsRequired"), extensions.get("creditsAvailable")
            raise InsufficientCredits(
                f"not enough Doitong credits: {required} required, {available} available",
                required=required if isinstance(required, int) else None,
                available=available if isinstance(available, int) else None,
            )
        if status == 404 and not_found_ok:
            return {}
        if status >= 400:
            raise ProviderError(f"Doitong rejected the request ({status}): {message}", status=status, code=code)
        if error is not None:
            if code == "NOT_FOUND" and not_found_ok:
                return {}
            raise ProviderError(f"Doitong answered an error: {message}", status=status, code=code)
        data = (body or {}).get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise ProviderError(f"Doitong answered {status} without data")
        return data


def _first_error(body: object) -> dict[str, Any] | None:
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return errors[0]
    return None


def _reset_at(headers: Any) -> float | None:
    for name in ("x-ratelimit-reset",):
        value = (headers.get(name) or "").strip()
        if value:
            # Unix seconds: float() alone would take "nan", "inf" and other scripts' digits.
            if not (value.isascii() and value.replace(".", "", 1).isdigit()):
                return None
            return float(value)
    retry_after = (headers.get("retry-after") or "").strip()
    if retry_after.isascii() and retry_after.isdigit():
        return time.time() + float(retry_after)
    return None


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
