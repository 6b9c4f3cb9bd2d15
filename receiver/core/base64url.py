"""URL-safe base64 without padding (RFC 4648 §5), as master keys and API cursors are written.

The `=` padding is dropped when writing, because it is noise in a URL or an
environment variable, and restored when reading, because Python's decoder wants it.
"""

from __future__ import annotations

import base64


def encode(raw: bytes) -> str:
    """`raw` as URL-safe base64 without trailing `=`."""
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(text: str) -> bytes:
    """What `encode` wrote (padding may be present or not); ValueError when it is not base64."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
