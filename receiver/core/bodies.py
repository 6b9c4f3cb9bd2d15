"""Request bodies from outside, read no further than a limit: the webhook path and the job API."""

from __future__ import annotations

from starlette.types import Receive

from receiver.core.errors import BodyTooLarge, ClientGone


async def read_limited(receive: Receive, declared: str | None, limit: int) -> bytes:
    """The body of an ASGI request, reading no further than `limit` bytes: BodyTooLarge as soon
    as the declared Content-Length (ASCII digits only: int() takes other scripts' too) or what
    arrived passes it, ClientGone when the sender hangs up first."""
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"declared {declared} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"more than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
