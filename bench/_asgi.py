"""The bare-ASGI pieces both baselines (baseline_app.py, procrastinate_baseline.py) use:
read the body up to a limit, check the signature, answer JSON. Kept minimal on purpose:
the baselines are the floor the receiver is measured against."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

SIGNATURE_HEADER = b"x-doitong-signature"
MAX_BODY = 1024 * 1024
_JSON = (b"content-type", b"application/json")


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
