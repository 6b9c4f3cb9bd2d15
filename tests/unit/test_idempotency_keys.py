"""Idempotency keys are 1-255 printable ASCII characters (issue #10, item 11).

Before, a longer key was hashed and accepted, and any character was.
"""

from __future__ import annotations

import pytest

from receiver.core import config
from receiver.core.errors import ConfigError, IdempotencyKeyError
from receiver.inbound import idempotency

DIGEST = idempotency.body_digest(b"{}")

ACCEPTED = {
    "uuid": ("550e8400-e29b-41d4-a716-446655440000", "550e8400-e29b-41d4-a716-446655440000"),
    "standard webhooks id": ("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"),
    "exactly the limit": ("k" * 255, "k" * 255),
    "spaces and tabs around are trimmed": (" \tkey-1\t ", "key-1"),
    "a space inside is printable": ("a b", "a b"),
    "every printable ASCII character": ("".join(map(chr, range(0x21, 0x7F))),) * 2,
}

REFUSED = {
    "one over the limit": "k" * 256,
    "a megabyte": "k" * (1024 * 1024),
    "a megabyte of no-break spaces": "\u00a0" * (1024 * 1024),
    "no-break space after (latin-1 0xA0)": "key-1\u00a0",
    "latin-1 letter": "cl\u00e9",
    "UTF-8 read as latin-1": "cl\u00c3\u00a9",
    "NUL": "key\x00",
    "line feed inside": "a\nb",
    "carriage return inside": "a\rb",
    "tab inside": "a\tb",
    "DEL": "key\x7f",
    "escape": "\x1b[31mred",
    "next line (latin-1 0x85)": "key\u0085",
    "outside latin-1": "key\u2028",
}


@pytest.mark.parametrize(("sent", "key"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_printable_ascii_keys_up_to_the_limit_are_used(sent: str, key: str) -> None:
    assert idempotency.key_for({"idempotency-key": sent}, DIGEST) == f"idempotency-key:{key}"


@pytest.mark.parametrize("sent", REFUSED.values(), ids=REFUSED.keys())
@pytest.mark.parametrize("header", idempotency.HEADERS)
def test_other_keys_are_refused_whichever_header_carries_them(header: str, sent: str) -> None:
    with pytest.raises(IdempotencyKeyError, match=header):
        idempotency.key_for({header: sent}, DIGEST)


def test_the_error_names_the_length_not_the_key() -> None:
    with pytest.raises(IdempotencyKeyError) as caught:
        idempotency.key_for({"webhook-id": "k" * 10_000}, DIGEST)
    assert str(caught.value) == "webhook-id is 10000 bytes, longer than 255"


def test_the_limit_is_the_setting() -> None:
    assert idempotency.key_for({"idempotency-key": "k" * 20}, DIGEST, max_bytes=20) == "idempotency-key:" + "k" * 20
    with pytest.raises(IdempotencyKeyError):
        idempotency.key_for({"idempotency-key": "k" * 21}, DIGEST, max_bytes=20)


def test_only_the_header_that_names_the_delivery_is_checked() -> None:
    # A lower-priority header is not the key; its size is bounded by the stored-header limit.
    headers = {"idempotency-key": "key-1", "webhook-id": "k" * 10_000}
    assert idempotency.key_for(headers, DIGEST) == "idempotency-key:key-1"


def test_whitespace_only_counts_as_absent_but_only_ascii_whitespace() -> None:
    assert idempotency.key_for({"idempotency-key": " \t ", "webhook-id": "w"}, DIGEST) == "webhook-id:w"
    with pytest.raises(IdempotencyKeyError):
        idempotency.key_for({"idempotency-key": "\u00a0", "webhook-id": "w"}, DIGEST)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("RECEIVER_MAX_IDEMPOTENCY_KEY_BYTES", "100", ("max_idempotency_key_bytes", 100)),
        ("RECEIVER_MAX_STORED_HEADER_BYTES", "65536", ("max_stored_header_bytes", 65536)),
    ],
)
def test_settings_are_read(variable: str, value: str, expected: tuple[str, int]) -> None:
    settings = config.Settings.from_env({variable: value})
    assert getattr(settings, expected[0]) == expected[1]


def test_settings_defaults() -> None:
    settings = config.Settings.from_env({})
    assert settings.max_idempotency_key_bytes == idempotency.MAX_KEY_BYTES == 255
    assert settings.max_stored_header_bytes == 8192


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RECEIVER_MAX_IDEMPOTENCY_KEY_BYTES", "2000"),  # near PostgreSQL's b-tree entry limit
        ("RECEIVER_MAX_IDEMPOTENCY_KEY_BYTES", "8"),
        ("RECEIVER_MAX_IDEMPOTENCY_KEY_BYTES", "lots"),
        ("RECEIVER_MAX_STORED_HEADER_BYTES", "100"),
        ("RECEIVER_MAX_STORED_HEADER_BYTES", "8k"),
    ],
)
def test_bad_settings_fail_fast_naming_the_setting(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{variable}: "):
        config.Settings.from_env({variable: value})


def test_the_key_setting_stops_at_the_idempotency_ceiling() -> None:
    assert config.Settings.from_env({"RECEIVER_MAX_IDEMPOTENCY_KEY_BYTES": "1024"}).max_idempotency_key_bytes == (
        idempotency.LONGEST_MAX_KEY_BYTES
    )
