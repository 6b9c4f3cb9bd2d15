"""POST /webhooks/doitong[/{endpoint}]: limit, verify, parse, one transaction, answer.

Each step is a call into the module that owns it; this module only chooses the
HTTP answer. A 2xx is sent only after the transaction committed.

It is the hot path, so it speaks bare ASGI: no router, no Request or Response
objects, one pass over the headers. bench/ingest.py showed the single uvicorn
worker's thread to be what limits accepted webhooks/s, so every microsecond of
Python per request is throughput.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson
from opentelemetry.trace import SpanKind
from prometheus_client import Counter
from starlette.types import Receive, Scope, Send

from receiver.core import bodies, db, metrics, tracing
from receiver.core.errors import (
    BodyTooLarge,
    ClientGone,
    DatabaseUnavailable,
    IdempotencyKeyError,
    PayloadError,
    SignatureError,
)
from receiver.core.logs import FIELDS_KEY
from receiver.inbound import idempotency, ingest, payloads, signatures
from receiver.inbound.endpoints import DEFAULT, MAX_NAME_LENGTH
from receiver.inbound.state import AppState

log = logging.getLogger("receiver.inbound.handler")

PATH = "/webhooks/doitong"
_REDACTED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
# Headers looked up by name; the first occurrence counts, as in Starlette's Headers.get.
_LOOKED_UP = frozenset({"content-encoding", "content-length", *idempotency.HEADERS})
_SIGNATURE = signatures.HEADER.encode("latin-1")
_UNKNOWN = "(unknown)"
# The entry inbound_webhooks.headers gets when headers were left out. A header name is an HTTP
# token, which cannot hold "(", so no request header can pose as it.
LEFT_OUT = "(left out)"
_JSON = (b"content-type", b"application/json")


@dataclass(slots=True)
class Answer:
    status: int
    content: dict[str, Any]
    outcome: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class _Headers:
    """What the handler needs from the request headers, read in one pass."""

    stored: dict[str, str]  # what inbound_webhooks.headers keeps (last occurrence, secrets left out, bounded)
    looked_up: dict[str, str]  # first occurrence of each name in _LOOKED_UP
    signatures: list[str]  # every X-Doitong-Signature value, in order

    @classmethod
    def of(cls, raw: list[tuple[bytes, bytes]], budget: int) -> _Headers:
        """`budget` bytes of names and values are stored, in arrival order; a header that does not
        fit in what is left is left out (later, smaller ones may still fit), and LEFT_OUT says how
        many and how big. Refusing instead would make the provider retry a signed, valid webhook
        forever because a proxy on the way added headers; the headers are kept for forensics, and
        the header block as a whole is bounded by the HTTP layer. Cost: a len() and a comparison
        per header."""
        stored: dict[str, str] = {}
        looked_up: dict[str, str] = {}
        signature_values: list[str] = []
        left_out = left_out_bytes = 0
        for raw_name, raw_value in raw:
            value = raw_value.decode("latin-1")
            if raw_name == _SIGNATURE:
                signature_values.append(value)
            name = raw_name.decode("latin-1")
            if name in _LOOKED_UP and name not in looked_up:
                looked_up[name] = value
            if name not in _REDACTED_HEADERS:
                # Each occurrence of a repeated name is charged, although only the last is kept.
                size = len(raw_name) + len(raw_value)
                if size <= budget:
                    stored[name] = value
                    budget -= size
                else:
                    left_out += 1
                    left_out_bytes += size
        if left_out:
            stored[LEFT_OUT] = f"{left_out} header(s), {left_out_bytes} bytes, over RECEIVER_MAX_STORED_HEADER_BYTES"
        return cls(stored, looked_up, signature_values)


def matches(scope: Scope) -> bool:
    """Whether a request is for this handler (checked before any routing, on every request)."""
    return scope["type"] == "http" and str(scope["path"]).startswith(PATH)


def route(scope: Scope) -> str:
    """The route template of a request this handler took, for its server span."""
    return PATH if scope["path"][len(PATH) :] in ("", "/") else PATH + "/{endpoint}"


async def asgi(state: AppState, scope: Scope, receive: Receive, send: Send) -> None:
    """The webhook endpoint as a bare ASGI call (the router and exception middleware
    were ~10 % of bench/ingest.py's CPU)."""
    rest = scope["path"][len(PATH) :]
    if rest in ("", "/"):
        name = DEFAULT
    elif rest.startswith("/") and "/" not in rest[1:].rstrip("/"):
        name = rest[1:].rstrip("/")
        if len(name) > MAX_NAME_LENGTH:
            # No endpoint can have this name (endpoints.check_name): no lookup, and no unbounded
            # name in the log line. Not counted, like the other malformed paths here.
            await _send(send, Answer(404, {"error": "unknown_endpoint"}, "not_found"))
            return
    else:
        await _send(send, Answer(404, {"error": "not_found"}, "not_found"))
        return
    if scope["method"] != "POST":
        answer = Answer(405, {"error": "method_not_allowed"}, "not_allowed", [(b"allow", b"POST")])
        await _send(send, answer)
        return
    await _send(send, await handle(scope, receive, state, name))


async def handle(scope: Scope, receive: Receive, state: AppState, name: str) -> Answer:
    started = time.perf_counter()
    fields: dict[str, Any] = scope.setdefault(FIELDS_KEY, {})
    secrets = state.secrets.secrets_for(name)
    label = name if secrets is not None else _UNKNOWN
    outcome = "error"
    try:
        answer = await _handle(scope, receive, state, name, secrets, fields)
        outcome = answer.outcome
        return answer
    finally:
        fields["endpoint"] = name
        fields["outcome"] = outcome
        _webhooks(label, outcome).inc()
        metrics.LATENCY.observe(time.perf_counter() - started)


async def _handle(
    scope: Scope, receive: Receive, state: AppState, name: str, secrets: list[str] | None, fields: dict[str, Any]
) -> Answer:
    if secrets is None:
        if not state.secrets.loaded:
            return _unavailable(state, "endpoints not loaded yet")
        return Answer(404, {"error": "unknown_endpoint"}, "not_found")

    headers = _Headers.of(scope["headers"], state.settings.max_stored_header_bytes)
    encoding = headers.looked_up.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        fields["reason"] = f"content-encoding {_clip(encoding)}"
        return Answer(415, {"error": "unsupported_content_encoding"}, "unsupported_encoding")

    limit = state.settings.max_body_bytes
    try:
        body = await bodies.read_limited(receive, headers.looked_up.get("content-length"), limit)
    except BodyTooLarge:
        return Answer(413, {"error": "body_too_large", "limit_bytes": limit}, "too_large")
    except ClientGone:
        # The sender gave up mid-body: nothing stored, nobody left to answer.
        return Answer(400, {"error": "client_disconnected"}, "disconnected")

    try:
        matched = signatures.verify(headers.signatures, body, secrets)
    except SignatureError as exc:
        fields["reason"] = str(exc)
        return Answer(401, {"error": "invalid_signature"}, "unauthorized")
    _secret_matches(name, matched).inc()

    try:
        payload = payloads.parse(body)
    except PayloadError as exc:
        fields["reason"] = str(exc)
        return Answer(400, {"error": "invalid_payload", "detail": str(exc)}, "bad_request")
    fields["job_id"] = payload.job_id
    fields["status_reported"] = payload.status

    digest = idempotency.body_digest(body)
    try:
        key = idempotency.key_for(headers.looked_up, digest, state.settings.max_idempotency_key_bytes)
    except IdempotencyKeyError as exc:
        fields["reason"] = str(exc)
        return Answer(400, {"error": "invalid_idempotency_key", "detail": str(exc)}, "bad_request")
    try:
        result = await _ingest(
            state,
            endpoint=name,
            idempotency_key=key,
            body_sha256=digest,
            headers=headers.stored,
            body=body,
            payload=payload,
        )
    except DatabaseUnavailable as exc:
        fields["reason"] = str(exc)
        return _unavailable(state, "database unavailable")

    if result.outcome == "accepted":
        event_id = str(result.event_id) if result.event_id else None
        fields["event_id"] = event_id
        if event_id is not None:
            state.notifier.poke()
            _events(payload.status if payload.status in payloads.KNOWN_STATUSES else "other").inc()
        if result.registered is False:
            metrics.UNREGISTERED.labels(name).inc()
        return Answer(200, {"status": "accepted", "job_id": result.job_id, "event_id": event_id}, "accepted")
    metrics.REPLAYS.labels(name).inc()
    if result.outcome == "conflict":
        metrics.REPLAY_CONFLICTS.labels(name).inc()
        log.warning(
            "replay with a different body under a used idempotency key; not applied",
            extra={"fields": {"endpoint": name, "job_id": result.job_id}},
        )
    return Answer(200, {"status": "duplicate", "job_id": result.job_id}, result.outcome)


async def _ingest(state: AppState, **webhook: Any) -> ingest.IngestResult:
    if state.settings.tracing:
        return await _traced_ingest(state, webhook)
    return await _transaction(state, webhook)


async def _transaction(state: AppState, webhook: dict[str, Any]) -> ingest.IngestResult:
    """The webhook transaction on a pooled connection, driver errors translated."""
    try:
        conn = await state.pool.getconn()
        try:
            return await ingest.ingest(conn, **webhook)
        finally:
            await state.pool.putconn(conn)
    except Exception as exc:
        unavailable = db.unavailable(exc)
        if unavailable is None:
            raise
        raise unavailable from exc


async def _traced_ingest(state: AppState, webhook: dict[str, Any]) -> ingest.IngestResult:
    """The transaction in a span of its own, whose context the outbox event keeps: each delivery
    of the event is a child of this span, whichever publisher sends it and however late."""
    payload: payloads.WebhookPayload = webhook["payload"]
    attributes = {
        "db.system.name": "postgresql",
        "db.stored_procedure.name": "receiver_ingest",
        "doitong.webhook.endpoint": webhook["endpoint"],
        "doitong.job.id": payload.job_id,
        "doitong.job.status": payload.status,
    }
    with tracing.span("receiver_ingest", kind=SpanKind.CLIENT, attributes=attributes) as span:
        webhook["traceparent"], webhook["tracestate"] = tracing.w3c(span)
        try:
            result = await _transaction(state, webhook)
        except DatabaseUnavailable as exc:
            tracing.failed(span, str(exc), "database_unavailable")
            raise
        span.set_attribute("doitong.webhook.outcome", result.detail(payload.status))
        if result.event_id is not None:
            span.set_attribute("doitong.event.id", str(result.event_id))
        return result


async def _send(send: Send, answer: Answer) -> None:
    body = orjson.dumps(answer.content)
    headers = [_JSON, (b"content-length", str(len(body)).encode()), *answer.headers]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _clip(text: str, limit: int = 64) -> str:
    """A header value as a log field: bounded, so no request makes a log line of any size."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _unavailable(state: AppState, reason: str) -> Answer:
    return Answer(
        503,
        {"error": "unavailable", "detail": reason},
        "unavailable",
        [(b"retry-after", str(state.settings.retry_after_seconds).encode())],
    )


# Labelled children, looked up once: `labels()` validates and locks on every call. Their
# number is bounded: endpoint names are configured ones or "(unknown)".
@cache
def _webhooks(endpoint: str, outcome: str) -> Counter:
    return metrics.WEBHOOKS.labels(endpoint, outcome)


@cache
def _secret_matches(endpoint: str, index: int) -> Counter:
    return metrics.SECRET_MATCHES.labels(endpoint, str(index))


@cache
def _events(known_status: str) -> Counter:
    return metrics.EVENTS.labels(f"job.{known_status}")
