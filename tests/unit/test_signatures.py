from __future__ import annotations

import hashlib
import hmac

import pytest

from receiver.core.errors import SignatureError
from receiver.inbound import signatures

# GitHub's published test vector for X-Hub-Signature-256, the same algorithm as
# X-Doitong-Signature: https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_PAYLOAD = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

SECRET = "s3cret-webhook-key"
BODY = b'{"id":"abc123xyz","status":"completed"}'


def test_github_published_vector_signs_and_verifies() -> None:
    assert signatures.sign(GITHUB_SECRET, GITHUB_PAYLOAD) == GITHUB_SIGNATURE
    assert signatures.verify([GITHUB_SIGNATURE], GITHUB_PAYLOAD, [GITHUB_SECRET]) == 0


def test_uppercase_hex_is_the_same_digest() -> None:
    upper = "sha256=" + GITHUB_SIGNATURE.removeprefix("sha256=").upper()
    assert signatures.verify([upper], GITHUB_PAYLOAD, [GITHUB_SECRET]) == 0


def _good() -> str:
    return signatures.sign(SECRET, BODY)


def _tampered_byte() -> str:
    good = _good()
    last = good[-1]
    return good[:-1] + ("0" if last != "0" else "1")


BAD = {
    "missing": [],
    "empty": [""],
    "prefix alone": ["sha256="],
    "truncated hex": [_good()[:-2]],
    "too long hex": [_good() + "00"],
    "sha1 scheme": ["sha1=" + hmac.new(SECRET.encode(), BODY, hashlib.sha1).hexdigest()],
    "non-hex": ["sha256=" + "z" * 64],
    "two headers": [_good(), _good()],
    "tampered digest": [_tampered_byte()],
    "wrong secret": [signatures.sign("another-secret", BODY)],
    "no scheme": [_good().removeprefix("sha256=")],
    "uppercase scheme": ["SHA256=" + _good().removeprefix("sha256=")],
    "trailing garbage": [_good() + ",v1"],
}


@pytest.mark.parametrize("values", BAD.values(), ids=BAD.keys())
def test_bad_signatures_raise(values: list[str]) -> None:
    with pytest.raises(SignatureError):
        signatures.verify(values, BODY, [SECRET])


def test_tampered_body_fails() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        signatures.verify([_good()], BODY.replace(b"completed", b"failed   "), [SECRET])


def test_each_active_secret_is_tried_and_the_match_is_reported() -> None:
    old = signatures.sign("old-secret-123", BODY)
    assert signatures.verify([old], BODY, ["new-secret-456", "old-secret-123"]) == 1
    assert signatures.verify([_good()], BODY, [SECRET, "old-secret-123"]) == 0


def test_no_active_secret_fails() -> None:
    with pytest.raises(SignatureError):
        signatures.verify([_good()], BODY, [])


def test_error_messages_never_carry_the_expected_digest() -> None:
    expected = _good().removeprefix("sha256=")
    with pytest.raises(SignatureError) as caught:
        signatures.verify([signatures.sign("wrong-secret", BODY)], BODY, [SECRET])
    assert expected not in str(caught.value)
    assert SECRET not in str(caught.value)
