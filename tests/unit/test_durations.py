from __future__ import annotations

from datetime import timedelta

import pytest

from receiver.core import durations
from receiver.core.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("500ms", timedelta(milliseconds=500)),
        ("1.5s", timedelta(seconds=1.5)),
        (" 2M ", timedelta(minutes=2)),
        ("0s", timedelta(0)),
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    assert durations.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    # "\u0661h" is an Arabic-Indic one: \d and float() take it, a duration should not.
    ["", "10", "m", "1x", "1h 30m", "-5s", "1h30", "h1", "30 s", "99999999999999d", "\u0661h", "1\u00b2s"],
)
def test_parse_rejects_and_names_the_setting(text: str) -> None:
    with pytest.raises(ConfigError, match="RECEIVER_X"):
        durations.parse(text, setting="RECEIVER_X")


@pytest.mark.parametrize(
    ("text", "formatted"),
    [("30s", "30s"), ("90m", "1h30m"), ("24h", "1d"), ("1d2h3m4s", "1d2h3m4s"), ("1500ms", "1s500ms"), ("0s", "0s")],
)
def test_format_is_canonical_and_parses_back(text: str, formatted: str) -> None:
    value = durations.parse(text)
    assert durations.format(value) == formatted
    assert durations.parse(formatted) == value
