"""Fuzz target: the webhook body parser (receiver/inbound/payloads.py).

Only PayloadError may escape, and what it accepts must be storable: ingest
re-serialises `metadata` with orjson and PostgreSQL refuses NUL in text and jsonb.
"""

from __future__ import annotations

import math
from datetime import UTC

import orjson
import pytest
from hypothesis import given

from receiver.core.errors import PayloadError
from receiver.inbound import payloads
from tests.fuzz import bodies, budget

pytestmark = pytest.mark.fuzz


def _no_nul(document: object) -> bool:
    """No NUL in any string of a parsed JSON document (iterative: documents nest past Python's recursion limit)."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str) and "\x00" in value:
            return False
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return True


@budget.fuzz(1200)
@given(bodies.webhook_bodies)
def test_webhook_body(body: bytes) -> None:
    try:
        parsed = payloads.parse(body)
    except PayloadError:
        return
    assert 0 < len(parsed.job_id) <= payloads.MAX_ID_LENGTH and "\x00" not in parsed.job_id
    assert 0 < len(parsed.status) <= payloads.MAX_STATUS_LENGTH and "\x00" not in parsed.status
    for text in (parsed.job_id, parsed.status, parsed.service, parsed.url):
        if text is not None:
            text.encode()  # PostgreSQL text is UTF-8: no lone surrogates
    if parsed.metadata is not None:
        # What ingest does with it before the statement: it must not raise (it did at 255 levels).
        orjson.loads(orjson.dumps(parsed.metadata))
    assert _no_nul(orjson.loads(body))  # PostgreSQL's jsonb cannot hold \u0000
    for moment in (parsed.created_at, parsed.completed_at):
        if moment is not None:
            assert moment.tzinfo is not None
            moment.astimezone(UTC)
    assert parsed.duration is None or math.isfinite(parsed.duration)
    for whole in (parsed.width, parsed.height):
        assert whole is None or -(2**31) < whole < 2**31
