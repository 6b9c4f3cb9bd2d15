"""Doitong's `X-Doitong-Signature: sha256=<hex HMAC-SHA256 of the raw body>`.

The same scheme as GitHub's `X-Hub-Signature-256`. Only the exact form
`sha256=` + 64 lowercase-or-uppercase hex digits is accepted; anything else is a
SignatureError with a reason fit for a log line (never the secret, never the
expected digest).

Around the value only HTTP's optional whitespace (space and tab, RFC 9110 OWS)
is trimmed. `str.strip()` would also trim what the handler's latin-1 decoding
makes of bytes such as 0xA0 (NO-BREAK SPACE), 0x85 and 0x1C-0x1F, so a value
that is not the documented form would verify.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence

from receiver.core.errors import SignatureError

HEADER = "x-doitong-signature"
OWS = " \t"
_FORM = re.compile(r"sha256=([0-9a-fA-F]{64})")


def sign(secret: str, body: bytes) -> str:
    """The header value Doitong sends for `body` (used by tests, bench and the simulator)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def parse(values: Sequence[str]) -> bytes:
    """The 32-byte digest from the header's values; SignatureError unless exactly one well-formed."""
    if not values:
        raise SignatureError("signature header missing")
    if len(values) > 1:
        raise SignatureError("signature header sent more than once")
    match = _FORM.fullmatch(values[0].strip(OWS))
    if match is None:
        raise SignatureError("signature header malformed (expected sha256=<64 hex>)")
    return bytes.fromhex(match.group(1))


def verify(values: Sequence[str], body: bytes, secrets: Iterable[str]) -> int:
    """Check the raw `body` against every active secret in constant time.

    Returns the index of the secret that matched (so operators can see when the
    old secret of a rotation stops being used); raises SignatureError otherwise.
    Every secret is tried even after a match so timing does not tell which one.
    """
    digest = parse(values)
    matched = -1
    for index, secret in enumerate(secrets):
        expected = hmac.digest(secret.encode(), body, "sha256")  # OpenSSL's one-shot HMAC
        if hmac.compare_digest(expected, digest) and matched < 0:
            matched = index
    if matched < 0:
        raise SignatureError("signature does not match any active secret")
    return matched
