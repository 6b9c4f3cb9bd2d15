"""The simulated API as a Starlette app.

Every request to `/graphql` and `/v1/avatar` reads top to bottom: authenticate
(401, not counted against any limit), count it against the key's per-minute
window (429 RATE_LIMITED), maybe fail on purpose (500, `--fail-rate`), then the
operation. Every answer after authentication carries X-RateLimit-Limit,
-Remaining and -Reset; 429s also carry Retry-After.

GraphQL requests are parsed, validated and run by `schema` (graphql-core);
how their outcome maps onto HTTP is described there. Unknown ids: the GraphQL
`avatar(id)` query answers HTTP 200 with `data.avatar: null` and a `NOT_FOUND`
error whose `path` names the field (the GraphQL convention: the request itself
was fine); `GET /v1/avatar/{id}` answers HTTP 404 with the same error. A job
made with another API key is not found either.

A client that hangs up before its body arrived is answered with a quiet 400
(nobody reads it) instead of a traceback in the log.

`GET /_simulator/stats` (no key needed) returns the counters; `GET /healthz`
says it is up. Both are the simulator's own, as are `avatar(id)` and
`GET /v1/avatar/{id}`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.simulator import inputs, schema
from receiver.simulator.config import Account, SimulatorConfig
from receiver.simulator.errors import INTERNAL, UNAUTHENTICATED, ApiError, Code, bad_request
from receiver.simulator.faults import Dice
from receiver.simulator.inputs import GenerateInput
from receiver.simulator.jobs import Job
from receiver.simulator.ratelimit import RateLimiter
from receiver.simulator.state import State
from receiver.simulator.stats import RequestStats

STATUS: dict[Code, int] = {
    "BAD_REQUEST": 400,
    "UNAUTHENTICATED": 401,
    "INSUFFICIENT_CREDITS": 402,
    "NOT_FOUND": 404,
    "RATE_LIMITED": 429,
    "CONCURRENCY_LIMIT": 429,
    "DAILY_LIMIT": 429,
    "INTERNAL_ERROR": 500,
}
MAX_BODY = 1024 * 1024

Answer = tuple[Any, int]
Operation = Callable[[Account, Request], Awaitable[Answer]]


class Backend(Protocol):
    """What the app needs of the simulator (`server.Simulator` is one); the app never imports it."""

    @property
    def config(self) -> SimulatorConfig: ...
    @property
    def state(self) -> State: ...
    @property
    def limiter(self) -> RateLimiter: ...
    @property
    def dice(self) -> Dice: ...
    @property
    def request_stats(self) -> RequestStats: ...

    def create(self, account: Account, request: GenerateInput) -> Job: ...

    def stats(self) -> dict[str, Any]: ...


def create(simulator: Backend) -> Starlette:
    """The ASGI app serving `simulator`."""
    stats = simulator.request_stats

    async def api(request: Request, operation: Operation) -> Response:
        stats.total += 1
        account = simulator.state.authenticate(_api_key(request))
        if account is None:
            stats.unauthenticated += 1
            return _error(ApiError("UNAUTHENTICATED", UNAUTHENTICATED), {})
        quota = simulator.limiter.hit(account.key, account.limits.requests_per_minute)
        headers = quota.headers()
        if not quota.allowed:
            stats.rate_limited += 1
            return _error(ApiError("RATE_LIMITED", "Rate limit exceeded", retry_after=quota.retry_after), headers)
        if simulator.dice.roll(simulator.config.fail_rate):
            stats.injected_errors += 1
            return _error(ApiError("INTERNAL_ERROR", INTERNAL), headers)
        try:
            content, status = await operation(account, request)
        except ClientDisconnect:
            stats.disconnected += 1
            return Response(status_code=400)
        except ApiError as exc:
            _count(stats, exc.code)
            return _error(exc, headers)
        stats.ok += 1
        return _json(content, status, headers)

    async def graphql_operation(account: Account, request: Request) -> Answer:
        context = schema.Context(
            create=lambda wanted: simulator.create(account, wanted),
            find=lambda job_id: simulator.state.find(account, job_id),
        )
        answer = schema.execute(schema.request(await _body(request)), context)
        for code in answer.codes:
            _count(stats, code)
        return answer.document, 200

    async def rest_create(account: Account, request: Request) -> Answer:
        job = simulator.create(account, inputs.rest(await _body(request)))
        return {"data": {"avatar": job.accepted()}}, 200

    async def rest_get(account: Account, request: Request) -> Answer:
        job = simulator.state.find(account, request.path_params["job_id"])
        return {"data": {"avatar": job.avatar()}}, 200

    async def graphql(request: Request) -> Response:
        return await api(request, graphql_operation)

    async def avatar_create(request: Request) -> Response:
        return await api(request, rest_create)

    async def avatar_get(request: Request) -> Response:
        return await api(request, rest_get)

    async def stats_endpoint(request: Request) -> Response:
        return _json(simulator.stats(), 200)

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"}, 200)

    routes = [
        Route("/graphql", graphql, methods=["POST"]),
        Route("/v1/avatar", avatar_create, methods=["POST"]),
        Route("/v1/avatar/{job_id}", avatar_get, methods=["GET"]),
        Route("/_simulator/stats", stats_endpoint, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_exception})


def _api_key(request: Request) -> str | None:
    """`Authorization: Bearer KEY` or `X-API-Key: KEY`, on either endpoint."""
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key", "").strip() or None


async def _body(request: Request) -> Any:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise bad_request(f"Request body is larger than {MAX_BODY} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("Request body is not valid JSON") from None


def _count(stats: RequestStats, code: Code) -> None:
    if code == "BAD_REQUEST":
        stats.bad_requests += 1
    elif code == "INSUFFICIENT_CREDITS":
        stats.insufficient_credits += 1
    elif code == "NOT_FOUND":
        stats.not_found += 1
    elif code in ("CONCURRENCY_LIMIT", "DAILY_LIMIT"):
        stats.limited += 1


def _error(error: ApiError, headers: Mapping[str, str]) -> Response:
    sent = dict(headers)
    if error.retry_after is not None:
        sent["Retry-After"] = str(error.retry_after)
    return _json(error.document(), STATUS[error.code], sent)


def _json(content: Any, status: int, headers: Mapping[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers=headers, media_type="application/json")


async def _http_exception(request: Request, exc: Exception) -> Response:
    # Unknown paths and methods answer in the API's error format too.
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = "NOT_FOUND" if status == 404 else "BAD_REQUEST"
    message = exc.detail if isinstance(exc, HTTPException) else INTERNAL
    headers = exc.headers if isinstance(exc, HTTPException) else None
    return _json({"errors": [{"message": message, "extensions": {"code": code}}]}, status, headers)
