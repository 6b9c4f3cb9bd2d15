"""How deep untrusted JSON may nest (receiver.core.json_depth) and the webhook parser's use of it."""

from __future__ import annotations

import orjson
import pytest

from receiver.core import json_depth
from receiver.core.errors import PayloadError
from receiver.inbound import payloads


def _nested(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


@pytest.mark.parametrize("raw", [True, False])
def test_the_limit_counts_objects_and_arrays(raw: bool) -> None:
    limit = json_depth.MAX_DEPTH
    for levels, deeper in ((0, False), (1, False), (limit, False), (limit + 1, True), (1024, True)):
        body = b'{"a":' + _nested(levels - 1) + b"}" if levels > 1 else b"{}" if levels else b'"text"'
        document = orjson.loads(body)
        assert json_depth.deeper_than(document, raw=body if raw else None) is deeper, levels


def test_brackets_inside_strings_only_cost_a_walk() -> None:
    body = orjson.dumps({"text": "[" * 100})
    assert json_depth.deeper_than(orjson.loads(body), raw=body) is False


def test_wide_documents_are_not_deep() -> None:
    document = {"a": [[{}] for _ in range(1000)]}
    assert json_depth.deeper_than(document, 4) is False
    assert json_depth.deeper_than(document, 3) is True


def test_a_webhook_body_too_deep_to_serialise_again_is_a_payload_error() -> None:
    # orjson parses 1,024 levels and writes 254: these bodies were 500s (and a RecursionError
    # in the NUL check for the deepest).
    for levels in (json_depth.WEBHOOK_MAX_DEPTH + 1, 300, 1024):
        body = b'{"id":"j","status":"completed","metadata":{"a":' + _nested(levels - 2) + b',"b":"\\u0000"}}'
        with pytest.raises(PayloadError, match="nests deeper than"):
            payloads.parse(body)


def test_a_webhook_body_at_the_limit_parses() -> None:
    body = b'{"id":"j","status":"completed","metadata":{"a":' + _nested(json_depth.WEBHOOK_MAX_DEPTH - 2) + b"}}"
    parsed = payloads.parse(body)
    assert parsed.metadata is not None
    orjson.dumps(parsed.metadata)  # what ingest does next


@pytest.mark.parametrize(
    "value",
    [b"18446744073709551616", b"-9223372036854775809", b"1" + b"0" * 30, b"1e308", b"-0.0", b"5e-324"],
)
def test_numbers_beyond_64_bits_are_parsed_and_serialised_again(value: bytes) -> None:
    # orjson reads integers past 64 bits as floats, so they can always be written back.
    parsed = payloads.parse(b'{"id":"j","status":"completed","metadata":{"n":' + value + b',"width":' + value + b"}}")
    assert parsed.metadata is not None
    assert parsed.width is None  # not a 32-bit integer: the typed column stays empty
    orjson.dumps(parsed.metadata)


@pytest.mark.parametrize("value", [b"1e400", b"-1" + b"0" * 400, b'"\\ud800"', b'"\\u0000"', b"NaN"])
def test_values_that_cannot_be_stored_are_payload_errors(value: bytes) -> None:
    with pytest.raises(PayloadError):
        payloads.parse(b'{"id":"j","status":"completed","metadata":{"n":' + value + b"}}")
