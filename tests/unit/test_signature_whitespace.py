"""Only HTTP's optional whitespace (space, tab) may surround `sha256=<64 hex>` (issue #10, item 10).

The handler decodes header bytes as latin-1, so every byte 0x80-0xFF arrives as
the code point of the same number: 0xA0 is U+00A0 NO-BREAK SPACE, 0x85 is U+0085
NEXT LINE. Python's `str.strip()` trims those and 0x1C-0x1F as whitespace.
"""

from __future__ import annotations

import pytest

from receiver.core.errors import SignatureError
from receiver.inbound import signatures

SECRET = "s3cret-webhook-key"
BODY = b'{"id":"abc123xyz","status":"completed"}'
GOOD = signatures.sign(SECRET, BODY)
HEX = GOOD.removeprefix("sha256=")

ACCEPTED = {
    "bare": GOOD,
    "space before": " " + GOOD,
    "space after": GOOD + " ",
    "tabs around": "\t" + GOOD + "\t",
    "spaces and tabs around": " \t " + GOOD + " \t ",
    "uppercase hex": "sha256=" + HEX.upper(),
}

REFUSED = {
    "no-break space after (latin-1 0xA0)": GOOD + "\u00a0",
    "no-break space before": "\u00a0" + GOOD,
    "next line after (latin-1 0x85)": GOOD + "\u0085",
    "file separator after (0x1C)": GOOD + "\x1c",
    "unit separator before (0x1F)": "\x1f" + GOOD,
    "vertical tab after": GOOD + "\x0b",
    "form feed after": GOOD + "\x0c",
    "carriage return after": GOOD + "\r",
    "line feed after": GOOD + "\n",
    "NUL after": GOOD + "\x00",
    "ideographic space after (U+3000)": GOOD + "\u3000",
    "em space before (U+2003)": "\u2003" + GOOD,
    "no-break space inside, after sha256=": "sha256=\u00a0" + HEX,
    "space inside, after sha256=": "sha256= " + HEX,
    "fullwidth digit in hex (U+FF10)": "sha256=" + HEX[:-1] + "\uff10",
    "arabic-indic digit in hex (U+0660)": "sha256=" + HEX[:-1] + "\u0660",
    "UTF-8 no-break space read as latin-1": GOOD + "\u00c2\u00a0",
}


@pytest.mark.parametrize("value", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_ascii_optional_whitespace_is_trimmed(value: str) -> None:
    assert signatures.verify([value], BODY, [SECRET]) == 0


@pytest.mark.parametrize("value", REFUSED.values(), ids=REFUSED.keys())
def test_anything_else_around_the_value_is_refused(value: str) -> None:
    with pytest.raises(SignatureError, match="malformed"):
        signatures.verify([value], BODY, [SECRET])
