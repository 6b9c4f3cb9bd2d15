from __future__ import annotations

from datetime import UTC, datetime

import pytest

from receiver.core.errors import PayloadError
from receiver.inbound import idempotency, payloads

DOC_BODY = (
    b'{"id":"abc123xyz","status":"completed","url":"https://cdn.doitong.com/outputs/abc123xyz.mp3",'
    b'"service":"hedra","createdAt":"2024-01-01T00:00:00Z","completedAt":"2024-01-01T00:01:00Z",'
    b'"metadata":{"duration":null,"width":null,"height":null}}'
)


def test_documented_payload_parses() -> None:
    parsed = payloads.parse(DOC_BODY)
    assert parsed.job_id == "abc123xyz"
    assert parsed.status == "completed"
    assert parsed.service == "hedra"
    assert parsed.created_at == datetime(2024, 1, 1, tzinfo=UTC)
    assert parsed.completed_at == datetime(2024, 1, 1, 0, 1, tzinfo=UTC)
    assert parsed.duration is None and parsed.width is None
    assert parsed.metadata == {"duration": None, "width": None, "height": None}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'"string"',
        b"{}",
        b'{"id":"x"}',
        b'{"status":"completed"}',
        b'{"id":5,"status":"completed"}',
        b'{"id":"x","status":null}',
        b'{"id":"","status":"completed"}',
        b'{"id":"x","status":"  "}',
        b'{"id":"x","status":"completed","n":"\\u0000"}',
        b'\xff\xfe{"id":"x"}',
        b'{"id":"' + b"a" * 300 + b'","status":"completed"}',
    ],
)
def test_bad_bodies(body: bytes) -> None:
    with pytest.raises(PayloadError):
        payloads.parse(body)


def test_known_statuses_fold_case_and_unknown_ones_are_kept_as_received() -> None:
    assert payloads.parse(b'{"id":"x","status":"COMPLETED"}').status == "completed"
    assert payloads.parse(b'{"id":"x","status":"Queued-Up"}').status == "Queued-Up"


def test_odd_field_types_become_none_not_errors() -> None:
    parsed = payloads.parse(
        b'{"id":"x","status":"processing","createdAt":"yesterday","url":7,'
        b'"metadata":{"duration":"long","width":true,"height":1e30}}'
    )
    assert parsed.created_at is None
    assert parsed.url is None
    assert (parsed.duration, parsed.width, parsed.height) == (None, None, None)


def test_naive_timestamps_are_taken_as_utc() -> None:
    parsed = payloads.parse(b'{"id":"x","status":"processing","createdAt":"2024-01-01T00:00:00"}')
    assert parsed.created_at == datetime(2024, 1, 1, tzinfo=UTC)


def test_idempotency_header_precedence() -> None:
    digest = idempotency.body_digest(b"{}")
    both = {"idempotency-key": "a", "x-doitong-delivery": "b", "webhook-id": "c"}
    assert idempotency.key_for(both, digest) == "idempotency-key:a"
    assert idempotency.key_for({"x-doitong-delivery": "b", "webhook-id": "c"}, digest) == "x-doitong-delivery:b"
    assert idempotency.key_for({"webhook-id": "c"}, digest) == "webhook-id:c"
    assert idempotency.key_for({}, digest) == "sha256:" + digest.hex()
    assert idempotency.key_for({"idempotency-key": "  "}, digest) == "sha256:" + digest.hex()


@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
def test_times_outside_the_representable_range_become_none(stamp: str) -> None:
    body = b'{"id":"x","status":"completed","createdAt":"' + stamp.encode() + b'"}'
    assert payloads.parse(body).created_at is None


def test_an_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    parsed = payloads.parse(b'{"id":"x","status":"completed","note":"C:\\\\u0000dir"}')
    assert parsed.job_id == "x"
