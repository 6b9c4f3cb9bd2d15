"""Fuzz targets: what operators type (subscriber URLs and secrets, durations, every setting in
receiver/core/config.py's ENVIRONMENT) and the unpadded base64 that master keys and cursors use.

Only ConfigError may escape (ValueError from base64url.decode, as documented), and what is
accepted must be usable: a subscriber URL the publisher can connect to, settings whose text
encodes as UTF-8.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import string
from datetime import UTC, timedelta
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.core import base64url, durations
from receiver.core.config import ENVIRONMENT, Settings
from receiver.core.errors import ConfigError
from receiver.outbound import subscriptions
from tests.fuzz import budget

pytestmark = pytest.mark.fuzz

_DURATIONS = (
    budget.any_text
    | st.builds(
        lambda parts: "".join(parts),
        st.lists(
            st.builds(
                lambda number, unit: f"{number}{unit}",
                st.integers(min_value=0, max_value=10**400).map(str) | st.floats(min_value=0).map(str),
                st.sampled_from(["ms", "s", "m", "h", "d", "", "M", "S", "y", "µs"]),
            ),
            max_size=4,
        ),
    )
    | st.sampled_from(["\u0661h", "\xb2s", "1h ", " 1h", "1 h", "-1s", "1e3s", "inf s", "nans", "1.s", ".5s"])
    | st.sampled_from(["1__0s", "0", "1h1h", "9" * 400 + "d"])
)


@budget.fuzz(3000)
@given(_DURATIONS)
def test_duration(text: str) -> None:
    try:
        value = durations.parse(text, setting="FUZZ")
    except ConfigError as exc:
        assert "FUZZ" in str(exc)  # the message names the setting
        return
    assert timedelta(0) <= value <= timedelta(seconds=durations.MAX_SECONDS)
    assert all(c in string.ascii_letters + string.digits + "." + string.whitespace for c in text), text
    # What format writes, parse reads back (to the millisecond format keeps).
    assert abs(durations.parse(durations.format(value)) - value) <= timedelta(milliseconds=1)


@budget.fuzz(2000)
@given(_DURATIONS | st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()))
def test_since(text: str) -> None:
    try:
        moment = durations.since(text, setting="since")
    except ConfigError:
        return
    assert moment.tzinfo is not None
    moment.astimezone(UTC)


_HOSTS = (
    st.sampled_from(
        ["example.com", "127.0.0.1", "[::1]", "[::1", "::1]", "[v1.x]", "exa mple.com", "a\x00b", "", "0.0.0.0"]
    )
    | st.sampled_from(["[::]", "ex%41mple", "127.1", "[fe80::1%25eth0]"])
    | st.text(budget.any_character, max_size=20)
)
_PORTS = st.sampled_from(
    ["", ":", ":0", ":80", ":65535", ":65536", ":99999", ":-1", ":\uff18\uff10", ":1\n", ":a"]
) | st.integers(min_value=-1, max_value=10**6).map(lambda n: f":{n}")
_URLS = budget.any_text | st.builds(
    lambda scheme, userinfo, host, port, path: f"{scheme}://{userinfo}{host}{port}{path}",
    st.sampled_from(["http", "https", "HTTP", "ftp", "javascript", "", "http:"]),
    st.sampled_from(["", "user@", "u:p@", "@", "a@b@"]),
    _HOSTS,
    _PORTS,
    st.sampled_from(["", "/", "/hook", "/a b", "/\r\nX-Evil: 1", "?q=1", "#f", "/\x7f", "/\u2028"]) | budget.any_text,
)


@budget.fuzz(4000)
@given(_URLS)
def test_subscriber_url(url: str) -> None:
    try:
        accepted = subscriptions.check_url(url)
    except ConfigError:
        return
    parts = urlsplit(accepted)
    assert parts.scheme in ("http", "https") and parts.hostname, accepted
    port = parts.port  # raises ValueError on a port out of range or not a number
    assert port is None or 1 <= port <= 65535, accepted
    # Control characters (CR LF among them) and spaces would be retried for two days, or split a request.
    assert not any(c.isspace() or not c.isprintable() for c in accepted), f"accepted {accepted!r}"


@budget.fuzz(1500)
@given(
    budget.any_text
    | st.builds(
        lambda tail: "whsec_" + tail,
        budget.any_text | st.binary(max_size=40).map(lambda raw: base64.b64encode(raw).decode()),
    )
)
def test_subscriber_secret(text: str) -> None:
    try:
        key = subscriptions.secret_key(text)
    except ConfigError:
        return
    assert len(key) >= subscriptions.MIN_SECRET_KEY_BYTES


@budget.fuzz(1500)
@given(st.lists(budget.any_text | st.sampled_from(["job.completed", "job.x_1", "job.", "Job.completed"]), max_size=4))
def test_event_types(types: list[str]) -> None:
    with contextlib.suppress(ConfigError):
        subscriptions.check_event_types(types)


@budget.fuzz(2000)
@given(budget.any_text | st.binary(max_size=64).map(base64url.encode))
def test_base64url(text: str) -> None:
    try:
        raw = base64url.decode(text)
    except ValueError:
        return
    assert isinstance(raw, bytes)


@budget.fuzz(500)
@given(st.binary(max_size=100))
def test_base64url_round_trip(raw: bytes) -> None:
    assert base64url.decode(base64url.encode(raw)) == raw


_NAMES = [name for name, _, _ in ENVIRONMENT]
_PLAUSIBLE = st.sampled_from(
    [
        "",
        " ",
        "0",
        "1",
        "-1",
        "65536",
        "99999999999999999999999",
        "\u0661",
        "1_000",
        "5s",
        "0s",
        "1h30m",
        "100000d",
        "5s,30s",
        "5s,,30s",
        "0s,1s",
        "json",
        "JSON",
        "debug",
        "verbose",
        "10.0.0.0/8,fe80::/10",
        "10.0.0.0/33",
        "postgresql://u@h:5432/db",
        "mysql://x",
        "nats://127.0.0.1:4222",
        "amqp://guest:guest@127.0.0.1:5672/",
        "https://hooks.example.com",
        "https://hooks.example.com/\x00",
        "whsec_0123456789",
        "short",
        "s" * 16,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "\udcff\udcfe",
        "token\udcff0123456789abcdef",
    ]
)


@budget.fuzz(2000)
@given(st.dictionaries(st.sampled_from(_NAMES), _PLAUSIBLE | budget.any_text | _DURATIONS, max_size=len(_NAMES)))
def test_settings_from_env(environ: dict[str, str]) -> None:
    try:
        settings = Settings.from_env(environ)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message.strip(), message  # one line
        return
    # os.environ carries bytes that are not UTF-8 as lone surrogates: a setting that keeps one fails
    # later, at its first use (an HMAC key, a URL, a bearer token comparison), not at start-up.
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        for text in value if isinstance(value, tuple) else (value,):
            if isinstance(text, str):
                text.encode()
