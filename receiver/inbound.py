"""POST /webhooks/doitong[/{endpoint}]: limit, verify, parse, one transaction, answer.

Each step is a call into the module that owns it; this module only chooses the
HTTP answer. A 2xx is sent only after the transaction committed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from receiver import db, idempotency, jobs, metrics, payloads, signatures
from receiver.endpoints import DEFAULT
from receiver.errors import BodyTooLarge, DatabaseUnavailable, PayloadError, SignatureError
from receiver.logs import FIELDS_KEY
from receiver.state import AppState, json_response

log = logging.getLogger("receiver.inbound")

_REDACTED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
_UNKNOWN = "(unknown)"


PATH = "/webhooks/doitong"


def matches(scope: Scope) -> bool:
    """Whether a request is for this handler (checked before any routing, on every request)."""
    return scope["type"] == "http" and str(scope["path"]).startswith(PATH)


async def asgi(state: AppState, scope: Scope, receive: Receive, send: Send) -> None:
    """The webhook endpoint as a bare ASGI call: it is the hot path, and skips the router and
    exception middleware (bench/ingest.py measured them at ~10 % of its CPU)."""
    rest = scope["path"][len(PATH) :]
    if rest in ("", "/"):
        name = DEFAULT
    elif rest.startswith("/") and "/" not in rest[1:].rstrip("/"):
        name = rest[1:].rstrip("/")
    else:
        await json_response({"error": "not_found"}, 404)(scope, receive, send)
        return
    if scope["method"] != "POST":
        await json_response({"error": "method_not_allowed"}, 405, headers={"Allow": "POST"})(scope, receive, send)
        return
    response = await handle(Request(scope, receive), state, name)
    await response(scope, receive, send)


async def handle(request: Request, state: AppState, name: str) -> Response:
    started = time.perf_counter()
    fields: dict[str, Any] = request.scope.setdefault(FIELDS_KEY, {})
    outcome = "error"
    label = name if state.secrets.secrets_for(name) is not None else _UNKNOWN
    try:
        response, outcome, label = await _handle(request, state, name, fields)
        return response
    finally:
        fields["endpoint"] = name
        fields["outcome"] = outcome
        metrics.WEBHOOKS.labels(label, outcome).inc()
        metrics.LATENCY.observe(time.perf_counter() - started)


async def _handle(request: Request, state: AppState, name: str, fields: dict[str, Any]) -> tuple[Response, str, str]:
    secrets = state.secrets.secrets_for(name)
    if secrets is None:
        if not state.secrets.loaded:
            return _unavailable(state, "endpoints not loaded yet"), "unavailable", _UNKNOWN
        return json_response({"error": "unknown_endpoint"}, 404), "not_found", _UNKNOWN

    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        fields["reason"] = f"content-encoding {encoding}"
        return (
            json_response({"error": "unsupported_content_encoding"}, 415),
            "unsupported_encoding",
            name,
        )

    try:
        body = await _read_limited(request, state.settings.max_body_bytes)
    except BodyTooLarge:
        return (
            json_response({"error": "body_too_large", "limit_bytes": state.settings.max_body_bytes}, 413),
            "too_large",
            name,
        )
    except ClientDisconnect:
        # The sender gave up mid-body: nothing stored, nobody left to answer.
        return json_response({"error": "client_disconnected"}, 400), "disconnected", name

    try:
        matched = signatures.verify(request.headers.getlist(signatures.HEADER), body, secrets)
    except SignatureError as exc:
        fields["reason"] = str(exc)
        return json_response({"error": "invalid_signature"}, 401), "unauthorized", name
    metrics.SECRET_MATCHES.labels(name, str(matched)).inc()

    try:
        payload = payloads.parse(body)
    except PayloadError as exc:
        fields["reason"] = str(exc)
        return (
            json_response({"error": "invalid_payload", "detail": str(exc)}, 400),
            "bad_request",
            name,
        )
    fields["job_id"] = payload.job_id
    fields["status_reported"] = payload.status

    headers = {k: v for k, v in request.headers.items() if k not in _REDACTED_HEADERS}
    digest = idempotency.body_digest(body)
    try:
        async with db.translated(), state.pool.connection() as conn:
            result = await jobs.ingest(
                conn,
                endpoint=name,
                idempotency_key=idempotency.key_for(request.headers, digest),
                body_sha256=digest,
                headers=headers,
                body=body,
                payload=payload,
            )
    except DatabaseUnavailable as exc:
        fields["reason"] = str(exc)
        return _unavailable(state, "database unavailable"), "unavailable", name

    if result.outcome == "accepted":
        event_id = str(result.event_id) if result.event_id else None
        fields["event_id"] = event_id
        if event_id is not None:
            state.notifier.poke()
            metrics.EVENTS.labels(_event_type(payload.status)).inc()
        if result.registered is False:
            metrics.UNREGISTERED.labels(name).inc()
        answer = {"status": "accepted", "job_id": result.job_id, "event_id": event_id}
        return json_response(answer, 200), "accepted", name
    metrics.REPLAYS.labels(name).inc()
    if result.outcome == "conflict":
        metrics.REPLAY_CONFLICTS.labels(name).inc()
        log.warning(
            "replay with a different body under a used idempotency key; not applied",
            extra={"fields": {"endpoint": name, "job_id": result.job_id}},
        )
    return (
        json_response({"status": "duplicate", "job_id": result.job_id}, 200),
        result.outcome,
        name,
    )


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, reading no further than `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"declared {declared} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _unavailable(state: AppState, reason: str) -> Response:
    seconds = max(1, round(state.settings.retry_after.total_seconds()))
    return json_response({"error": "unavailable", "detail": reason}, 503, headers={"Retry-After": str(seconds)})


def _event_type(status: str) -> str:
    known = status if status in payloads.KNOWN_STATUSES else "other"
    return f"job.{known}"
