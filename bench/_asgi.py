"""The bare-ASGI pieces both baselines (baseline_app.py, procrastinate_baseline.py) use:
the app around their webhook handler (routes and lifespan), read the body up to a limit,
check the signature, answer JSON. Kept minimal on purpose: the baselines are the floor the
receiver is measured against."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

SIGNATURE_HEADER = b"x-doitong-signature"
MAX_BODY = 1024 * 1024
_JSON = (b"content-type", b"application/json")

Handler = Callable[[Any, Any, Any], Awaitable[None]]  # (scope, receive, send)


def app(
    webhook: Handler, *, startup: Callable[[], Awaitable[None]], shutdown: Callable[[], Awaitable[None]]
) -> Handler:
    """POST /webhooks/doitong to `webhook`, GET /readyz and /healthz 200, anything else 404;
    `startup` and `shutdown` run in the lifespan (a failed start-up is told to the server)."""

    async def lifespan(receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/webhooks/doitong" and method == "POST":
            await webhook(scope, receive, send)
        elif path in ("/readyz", "/healthz") and method == "GET":
            await answer(send, 200, {"status": "ready"})
        else:
            await answer(send, 404, {"error": "not_found"})

    return asgi


async def answer(send: Any, status: int, content: Any) -> None:
    body = orjson.dumps(content)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Any, limit: int = MAX_BODY) -> bytes | None:
    """The request body, or None once it grows past `limit`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def signed(scope: Any, body: bytes, key: bytes) -> bool:
    """Exactly one `X-Doitong-Signature: sha256=<64 hex>` matching HMAC-SHA256(key, body)."""
    given = [v for k, v in scope["headers"] if k == SIGNATURE_HEADER]
    signature = given[0] if len(given) == 1 else b""
    try:
        digest = bytes.fromhex(signature[7:].decode()) if signature[:7] == b"sha256=" and len(signature) == 71 else b""
    except ValueError:
        digest = b""
    return hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), digest)
