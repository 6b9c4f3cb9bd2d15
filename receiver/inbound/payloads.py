"""Doitong's webhook body, parsed once into typed fields.

Body: `{"id","status","url","service","createdAt","completedAt",
"metadata":{"duration","width","height"}}`. Only `id` and `status` are
required; anything else that is missing or oddly typed becomes None in the
typed columns while the raw JSON is kept whole in `job_events.payload`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from receiver.core import json_depth
from receiver.core.errors import PayloadError

MAX_ID_LENGTH = 255
MAX_STATUS_LENGTH = 64
KNOWN_STATUSES = ("submitted", "processing", "completed", "failed")


@dataclass(frozen=True, slots=True)
class WebhookPayload:
    job_id: str
    status: str
    service: str | None
    url: str | None
    created_at: datetime | None
    completed_at: datetime | None
    duration: float | None
    width: int | None
    height: int | None
    metadata: dict[str, Any] | None


def parse(body: bytes) -> WebhookPayload:
    """Parse and check a webhook body; PayloadError says what is wrong."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PayloadError("body is not valid UTF-8 JSON") from None
    # Before anything walks it recursively or serialises it again: orjson parses deeper than it
    # writes, and what it cannot write would be a 500 that the provider retries forever.
    if json_depth.deeper_than(document, json_depth.WEBHOOK_MAX_DEPTH, raw=body):
        raise PayloadError(f"body nests deeper than {json_depth.WEBHOOK_MAX_DEPTH} levels of objects and arrays")
    if b"\\u0000" in body and _has_nul(document):
        # PostgreSQL's jsonb cannot hold NUL characters; refuse rather than store half.
        raise PayloadError("body contains a \\u0000 character, which cannot be stored")
    if not isinstance(document, dict):
        raise PayloadError("body is not a JSON object")
    job_id = document.get("id")
    status = document.get("status")
    if not isinstance(job_id, str) or not job_id.strip():
        raise PayloadError("body has no string `id`")
    if not isinstance(status, str) or not status.strip():
        raise PayloadError("body has no string `status`")
    if len(job_id) > MAX_ID_LENGTH:
        raise PayloadError(f"`id` is longer than {MAX_ID_LENGTH} characters")
    if len(status) > MAX_STATUS_LENGTH:
        raise PayloadError(f"`status` is longer than {MAX_STATUS_LENGTH} characters")
    metadata = document.get("metadata")
    meta = metadata if isinstance(metadata, dict) else None
    return WebhookPayload(
        job_id=job_id,
        status=normalize_status(status),
        service=_str(document.get("service")),
        url=_str(document.get("url")),
        created_at=_timestamp(document.get("createdAt")),
        completed_at=_timestamp(document.get("completedAt")),
        duration=_number(meta.get("duration")) if meta else None,
        width=_whole(meta.get("width")) if meta else None,
        height=_whole(meta.get("height")) if meta else None,
        metadata=meta,
    )


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def normalize_status(status: str) -> str:
    """Known statuses compare case-insensitively (`COMPLETED` is `completed`);
    any other string is kept exactly as received."""
    lowered = status.strip().lower()
    return lowered if lowered in KNOWN_STATUSES else status


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # the provider documents UTC
    try:
        # PostgreSQL would store 9999-12-31T23:59-05:00 (year 10000 in UTC), which then cannot be
        # read back: such a time is no time at all.
        parsed.astimezone(UTC)
    except OverflowError:
        return None
    return parsed


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _whole(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if -(2**31) < value < 2**31 else None
