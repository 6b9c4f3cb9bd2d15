"""Which deliveries are the same delivery.

Per endpoint, the first of these headers that is present names the delivery:
`Idempotency-Key`, `X-Doitong-Delivery`, `webhook-id`. Without one, the SHA-256
of the raw body does, so a byte-identical redelivery is recognised either way.
A second, semantic guard lives in the database: at most one outbox event per
(job, status), whatever key a redelivery arrives under.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

HEADERS = ("idempotency-key", "x-doitong-delivery", "webhook-id")
MAX_KEY_LENGTH = 255


def body_digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def key_for(headers: Mapping[str, str], digest: bytes) -> str:
    """The idempotency key of a delivery; header keys are prefixed so they never collide
    with body digests."""
    for name in HEADERS:
        value = headers.get(name)
        if value is not None and value.strip():
            value = value.strip()
            if len(value) > MAX_KEY_LENGTH:
                # Long keys are hashed, not cut: two keys sharing a prefix stay distinct.
                value = "sha256:" + hashlib.sha256(value.encode()).hexdigest()
            return f"{name}:{value}"
    return "sha256:" + digest.hex()
