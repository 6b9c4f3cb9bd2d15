"""How deep JSON from outside may nest before we refuse it.

orjson parses 1,024 levels but serialises only 254, and we serialise what we parsed (webhook
`metadata`, a job's `input`) on its way to PostgreSQL; a body between the two was a 500 that the
provider retried forever. The limit sits far below both, and below the 64 levels that common
parsers allow by default (.NET's System.Text.Json), because a webhook's `metadata` reaches
subscribers one level deeper, inside the event envelope.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 32
# A signed webhook refused is a webhook lost (the provider retries it until it gives up), so the
# webhook path allows more: still far under orjson's 254 once the event envelope wraps `metadata`.
WEBHOOK_MAX_DEPTH = 128
_CONTAINERS = (dict, list)  # isinstance() is faster with a tuple than with `dict | list`


def deeper_than(document: Any, limit: int = MAX_DEPTH, *, raw: bytes | None = None) -> bool:
    """Whether `document` (what orjson.loads returned) nests more than `limit` objects and arrays.

    `{}` is one level, `{"a": []}` two. Pass the `raw` bytes it was parsed from and a body with
    no more than `limit` opening brackets in all is passed without a walk: two C-speed counts,
    ~0.3 µs for a 600-byte webhook. Otherwise the walk is iterative (no recursion limit to hit)
    and visits only containers.
    """
    if raw is not None and raw.count(b"{") + raw.count(b"[") <= limit:
        return False
    stack: list[tuple[Any, int]] = [(document, 1)] if isinstance(document, _CONTAINERS) else []
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, _CONTAINERS):
                stack.append((child, depth + 1))
    return False
