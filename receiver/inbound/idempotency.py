"""Which deliveries are the same delivery.

Per endpoint, the first of these headers that is present names the delivery:
`Idempotency-Key`, `X-Doitong-Delivery`, `webhook-id`. Without one, the SHA-256
of the raw body does, so a byte-identical redelivery is recognised either way.
A second, semantic guard lives in the database: at most one outbox event per
(job, status), whatever key a redelivery arrives under.

A key is 1 to RECEIVER_MAX_IDEMPOTENCY_KEY_BYTES (255) printable ASCII
characters, space and tab around it trimmed; anything else is an
IdempotencyKeyError, answered 400 before anything is stored. Why these bounds:
- 255 is Stripe's limit for its Idempotency-Key and far above what providers
  send (a UUID is 36 characters, a Standard Webhooks `msg_…` id about 30). Keys
  used to be hashed when longer, which kept a megabyte header for the stored
  headers and made every such request cost a SHA-256 of it.
- Printable ASCII (0x20-0x7E) is the IETF Idempotency-Key draft's sf-string.
  Header bytes above 0x7F have no agreed charset (latin-1 decoding would store
  a different key than the sender meant), control characters would reach log
  lines, and PostgreSQL's text cannot hold NUL.
- The key is part of the unique (endpoint, idempotency_key) b-tree index,
  whose entries PostgreSQL refuses above ~2,700 bytes: the setting stops at
  1,024 so no configuration turns a long key into a 500.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from receiver.core.errors import IdempotencyKeyError

HEADERS = ("idempotency-key", "x-doitong-delivery", "webhook-id")
MAX_KEY_BYTES = 255  # RECEIVER_MAX_IDEMPOTENCY_KEY_BYTES's default
LONGEST_MAX_KEY_BYTES = 1024  # the setting's ceiling: see the b-tree note above
_OWS = " \t"  # HTTP's optional whitespace; str.strip() would also trim U+00A0 and friends


def body_digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def key_for(headers: Mapping[str, str], digest: bytes, max_bytes: int = MAX_KEY_BYTES) -> str:
    """The idempotency key of a delivery; header keys are prefixed so they never collide
    with body digests. A header that is empty or only whitespace counts as absent.

    Cost: a dict lookup per header name, and a scan of at most `max_bytes`
    characters: the length is checked before the characters are."""
    for name in HEADERS:
        value = headers.get(name)
        if value is None:
            continue
        value = value.strip(_OWS)
        if not value:
            continue
        if len(value) > max_bytes:
            raise IdempotencyKeyError(f"{name} is {len(value)} bytes, longer than {max_bytes}")
        # str.isascii() is O(1) in CPython; isprintable() then scans at most max_bytes characters.
        if not (value.isascii() and value.isprintable()):
            raise IdempotencyKeyError(f"{name} has characters outside printable ASCII")
        return f"{name}:{value}"
    return "sha256:" + digest.hex()
