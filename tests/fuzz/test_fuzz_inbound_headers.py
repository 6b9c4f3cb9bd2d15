"""Fuzz targets: the signature header (receiver/inbound/signatures.py) and the idempotency key
headers (receiver/inbound/idempotency.py), fed what uvicorn hands the handler: header bytes
decoded as latin-1, any byte but NUL, CR and LF.

Only SignatureError (signatures) and ReceiverError subclasses (idempotency) may escape, and
what is accepted must be what the README documents.
"""

from __future__ import annotations

import contextlib
import hashlib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.core.errors import ReceiverError, SignatureError
from receiver.inbound import idempotency, signatures
from tests.fuzz import budget

pytestmark = pytest.mark.fuzz

# The documented form, with HTTP's optional whitespace (space, tab) around it and nothing else.
_DOCUMENTED = re.compile(r"[ \t]*sha256=([0-9a-fA-F]{64})[ \t]*")
_HEX = "0123456789abcdefABCDEF"
_AROUND = st.text(st.sampled_from(" \t\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u2000\u3000\ufeffx=,;"), max_size=3)


@st.composite
def _signature_values(draw: st.DrawFn) -> str:
    """Mostly near-misses of the documented form, sometimes anything."""
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        return draw(budget.header_text | budget.any_text)
    prefix = draw(st.sampled_from(["sha256=", "SHA256=", "sha256 =", "sha256:", "sha1=", "", "sha256=sha256="]))
    digits = draw(st.text(st.sampled_from(_HEX), min_size=62, max_size=66) | st.text(max_size=70))
    return draw(_AROUND) + prefix + digits + draw(_AROUND)


@budget.fuzz(4000)
@given(st.lists(_signature_values(), max_size=3), st.binary(max_size=200), st.lists(budget.any_text, max_size=3))
def test_signature_header(values: list[str], body: bytes, secrets: list[str]) -> None:
    try:
        digest = signatures.parse(values)
    except SignatureError:
        assert len(values) != 1 or _DOCUMENTED.fullmatch(values[0]) is None, f"refused {values[0]!r}"
    else:
        assert len(values) == 1
        match = _DOCUMENTED.fullmatch(values[0])
        assert match is not None, f"accepted {values[0]!r}, which is not sha256=<64 hex>"
        assert digest == bytes.fromhex(match.group(1))
    usable = [s for s in secrets if s.encode("utf-8", "surrogatepass") == s.encode("utf-8", "replace")]
    with contextlib.suppress(SignatureError):
        signatures.verify(values, body, usable)


@budget.fuzz(2000)
@given(st.binary(max_size=500), st.lists(st.text(min_size=8, max_size=40), min_size=1, max_size=3), st.data())
def test_signature_round_trip(body: bytes, secrets: list[str], data: st.DataObject) -> None:
    """What `sign` writes, `verify` accepts with the right secret, padded with HTTP whitespace or not."""
    index = data.draw(st.integers(min_value=0, max_value=len(secrets) - 1))
    header = data.draw(st.sampled_from(["", " ", "\t"])) + signatures.sign(secrets[index], body)
    assert secrets[signatures.verify([header], body, secrets)] == secrets[index]


_KEY_VALUES = (
    budget.header_text
    | budget.any_text.filter(lambda text: "\x00" not in text)
    | st.integers(min_value=0, max_value=3000).map(lambda n: "k" * n)
    | st.sampled_from(["", " ", "\t", "\xa0", " key ", "\x85key"])
)


@budget.fuzz(5000)
@given(
    st.dictionaries(
        st.sampled_from([*idempotency.HEADERS, "x-other"]) | budget.header_text,
        _KEY_VALUES,
        max_size=4,
    ),
    st.binary(max_size=100),
)
def test_idempotency_key(headers: dict[str, str], body: bytes) -> None:
    digest = idempotency.body_digest(body)
    assert digest == hashlib.sha256(body).digest()
    try:
        key = idempotency.key_for(headers, digest)
    except ReceiverError:
        return
    # The key goes into PostgreSQL text and the unique (endpoint, key) b-tree, whose entries
    # are refused above about 2,700 bytes.
    assert "\x00" not in key
    assert len(key.encode()) <= 1100, f"a key of {len(key)} characters was accepted"
    assert key.startswith((*(name + ":" for name in idempotency.HEADERS), "sha256:"))
    if key.startswith("sha256:"):
        # Only when no key header names the delivery.
        assert not any((headers.get(name) or "").strip(" \t") for name in idempotency.HEADERS), key
