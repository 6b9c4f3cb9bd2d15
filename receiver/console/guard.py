"""What stands in front of every /console route (pure ASGI, so nothing reaches a page without it):

1. the console is off (no RECEIVER_CONSOLE_TOKEN): 404, as if it did not exist;
2. security headers on every answer: a CSP with no inline script or style, no framing, no
   referrer, no caching of pages;
3. who is asking: a bearer token (rate-limited when wrong) or a session cookie. Without either,
   a page request is sent to the login page and anything else gets 401;
4. a POST's form is read here (bounded) and, for a session, must carry the session's CSRF token
   and, when the browser says where it came from, this origin.

The handlers find the actor and the form in the scope (`actor()`, `form()`).
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver.console import auth
from receiver.console.state import Console

log = logging.getLogger("receiver.console")

PREFIX = "/console"
LOGIN = PREFIX + "/login"
STATIC = PREFIX + "/static/"
MAX_FORM_BYTES = 256 * 1024  # a selection of a few thousand delivery ids fits
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
_ACTOR = "receiver.console.actor"
_FORM = "receiver.console.form"
_GUARD = "receiver.console.guard"

# No inline script or style anywhere (style attributes included): every script and sheet comes
# from /console/static/. Charts are inline SVG drawn with presentation attributes and classes.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)


class Guard:
    def __init__(self, app: ASGIApp, console: Console) -> None:
        self.app = app
        self.console = console
        self.keys = console.keys
        self.failures = console.failures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.keys is None:
            await PlainTextResponse("Not Found", 404)(scope, receive, send)
            return
        path: str = scope["path"]
        send = _with_headers(
            send, cacheable=path.startswith(STATIC), started=time.perf_counter(), cpu_started=time.thread_time()
        )
        headers = Headers(scope=scope)
        client = scope["client"][0] if scope.get("client") else "unknown"
        actor: auth.Actor | None = None
        token = auth.bearer(headers.get("authorization"))
        if token is not None:
            refused = self.check_token(token, client)
            if refused is not None:
                await refused(scope, receive, send)
                return
            actor = auth.Actor("bearer", None, client)
        else:
            session_id = self.keys.session(_cookie(headers, auth.COOKIE))
            if session_id is not None:
                actor = auth.Actor("session", session_id, client)
        scope[_ACTOR] = actor
        scope[_GUARD] = self
        self.console.enter(scope)
        if actor is None and not (path == LOGIN or path.startswith(STATIC)):
            await _unauthenticated(scope, headers)(scope, receive, send)
            return
        if scope["method"] == "POST":
            body = await _read(receive)
            if body is None:
                await _refuse(scope, 413, "form too large")(scope, receive, send)
                return
            form = _parse_form(headers, body)
            problem = self.post_problem(scope, headers, actor, form)
            if problem is not None:
                log.warning("console POST refused: %s", problem, extra={"fields": {"path": path, "client": client}})
                await _refuse(scope, 403, problem)(scope, receive, send)
                return
            scope[_FORM] = form
            receive = _replaying(body)
        await self.app(scope, receive, send)

    def check_token(self, token: str, client: str) -> Response | None:
        """None when `token` is the console token and `client` is not locked out; else the refusal."""
        assert self.keys is not None
        wait = self.failures.retry_after(client)
        if wait > 0:
            return _too_many(wait)
        if not self.keys.token_matches(token):
            self.failures.failed(client)
            log.warning("wrong console token", extra={"fields": {"client": client}})
            return JSONResponse({"error": "unauthorized"}, 401, headers={"www-authenticate": "Bearer"})
        self.failures.succeeded(client)
        return None

    def post_problem(
        self, scope: Scope, headers: Headers, actor: auth.Actor | None, form: Mapping[str, list[str]]
    ) -> str | None:
        """Why a POST may not go on (None: it may)."""
        origin = headers.get("origin")
        if origin is not None and not _same_host(origin, headers):
            return f"cross-origin request (Origin {origin[:100]!r})"
        # Signing in needs no CSRF token: it only starts a session of whoever holds the token (a
        # stale login form, posted while a session exists, must not be refused).
        if actor is not None and actor.kind == "session" and scope["path"] != LOGIN:
            assert self.keys is not None and actor.session_id is not None
            given = headers.get(CSRF_HEADER) or next(iter(form.get(CSRF_FIELD, [])), None)
            if not self.keys.csrf_matches(actor.session_id, given):
                return "CSRF token missing or wrong; reload the page and try again"
        return None


def actor(scope: Scope) -> auth.Actor:
    """Who is asking (pages and actions only: the guard let nobody else through)."""
    found = scope.get(_ACTOR)
    assert isinstance(found, auth.Actor)
    return found


def maybe_actor(scope: Scope) -> auth.Actor | None:
    found = scope.get(_ACTOR)
    return found if isinstance(found, auth.Actor) else None


def of(scope: Scope) -> Guard:
    found = scope[_GUARD]
    assert isinstance(found, Guard)
    return found


def keys(scope: Scope) -> auth.Keys:
    found = of(scope).keys
    assert found is not None  # the guard let the request through: the console is on
    return found


def form(scope: Scope) -> dict[str, list[str]]:
    """The POST's form fields, each with every value given."""
    found: dict[str, list[str]] = scope.get(_FORM, {})
    return found


def client(scope: Scope) -> str:
    return scope["client"][0] if scope.get("client") else "unknown"


def _same_host(origin: str, headers: Headers) -> bool:
    """Whether the page that posted came from this host. The host is compared, not the scheme: a
    proxy that terminates TLS may not say so (X-Forwarded-Proto), and one that rewrites Host
    usually says what it was (X-Forwarded-Host). The CSRF token is the check that matters; this
    one refuses what a browser itself says came from elsewhere."""
    _, separator, host = origin.partition("://")
    return bool(separator) and host in (headers.get("host"), headers.get("x-forwarded-host"))


def _cookie(headers: Headers, name: str) -> str | None:
    for header in headers.getlist("cookie"):
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
    return None


def _unauthenticated(scope: Scope, headers: Headers) -> Response:
    if scope["method"] in ("GET", "HEAD") and "text/html" in headers.get("accept", ""):
        target = scope["path"] + ("?" + scope["query_string"].decode("latin-1") if scope["query_string"] else "")
        return RedirectResponse(LOGIN + "?" + urllib.parse.urlencode({"next": target}), 303)
    return JSONResponse(
        {"error": "unauthorized", "detail": "sign in at /console/login, or send Authorization: Bearer"},
        401,
        headers={"www-authenticate": "Bearer"},
    )


def _too_many(wait: float) -> Response:
    seconds = max(1, round(wait))
    return JSONResponse(
        {"error": "too_many_attempts", "detail": f"too many wrong tokens; try again in {seconds}s"},
        429,
        headers={"retry-after": str(seconds)},
    )


def _refuse(scope: Scope, status: int, problem: str) -> Response:
    return PlainTextResponse(f"{status}: {problem}", status)


async def _read(receive: Receive) -> bytes | None:
    """The whole body, or None past MAX_FORM_BYTES."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _parse_form(headers: Headers, body: bytes) -> dict[str, list[str]]:
    if not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    fields: dict[str, list[str]] = {}
    for name, value in urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        fields.setdefault(name, []).append(value.replace("\x00", ""))
    return fields


def _replaying(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _with_headers(send: Send, *, cacheable: bool, started: float, cpu_started: float) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers: list[Any] = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            headers.extend(pair for pair in _HEADERS if pair[0] not in present)
            # How long the page took to make, for the browser's network panel and bench/console.py;
            # `cpu`: the CPU its thread used meanwhile (the page's own when nothing else was being
            # served). With RECEIVER_CONSOLE_PROCESS=same that thread answers webhooks too, and
            # this is how long a page holds them up.
            took, cpu = time.perf_counter() - started, time.thread_time() - cpu_started
            timing = f"app;dur={took * 1000:.1f}, cpu;dur={cpu * 1000:.1f}"
            headers.append((b"server-timing", timing.encode()))
            if not cacheable and b"cache-control" not in present:
                headers.append((b"cache-control", b"no-store"))
            message = {**message, "headers": headers}
        await send(message)

    return sending
