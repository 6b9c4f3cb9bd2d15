"""Subscriber URLs: one check wherever a URL enters, one line per refusal (#10 item 9)."""

from __future__ import annotations

import pytest

from receiver.core.errors import ConfigError
from receiver.outbound.subscriptions import MAX_URL_LENGTH, check_url

ACCEPTED = [
    "http://127.0.0.1:8080/hook",
    "https://orders.example.com/hooks/doitong?team=a#frag",
    "http://[::1]:8080/x",
    "http://[64:ff9b::a9fe:a9fe]/",  # accepted here; the deny list refuses it at delivery time
    "http://0.0.0.0:9000/",  # likewise
    "HTTP://Example.COM./Path",
    "http://bücher.example/",  # an IDN host, sent as xn--bcher-kva.example
    "http://svc_a.internal:65535/",
    "http://example.com/a%20b",
]

# url, words the one-line message must contain
REFUSED = [
    ("http://[::1", "no closing ]"),
    ("http://[::1]x/", "not :PORT"),
    ("http://[nope]/", "not an IPv6 address"),
    ("http://[fe80::1%25eth0]/", "zone"),
    ("http://host]/", "IPv6 address only"),
    ("http://example.com:99999/", "port 99999"),
    ("http://example.com:0/", "port 0"),
    ("http://example.com:/", "not :PORT"),
    ("http://example.com:+80/", "not :PORT"),
    ("http://example.com:\u00b2/", "not :PORT"),  # '²'.isdigit() is true
    ("http://example.com:80:80/", "not :PORT"),
    ("http://exa mple.com/", "space"),
    ("http://example.com/a b", "space"),
    (" http://example.com/", "space"),
    ("http://example.com/\r\nX-Injected: 1", "control character U+000D"),
    ("http://example.com/\n", "control character U+000A"),
    ("http://exa\tmple.com/", "control character U+0009"),
    ("http://example.com/\x00", "control character U+0000"),
    ("http://example.com/\x7f", "control character U+007F"),
    ("http://example.com/\u0085", "control character U+0085"),
    ("http://exa\u200bmple.com/", "invisible character U+200B"),
    ("http://example.com/\u00a0", "invisible character U+00A0"),
    ("http://example.com/\u2028", "invisible character U+2028"),
    ("ftp://example.com/", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("example.com/hook", "http:// or https://"),
    ("http:/example.com/", "http:// or https://"),
    ("", "http:// or https://"),
    ("http://user:secret@example.com/", "user:password@"),
    ("http://token@example.com/", "user:password@"),
    ("http://example.com\\@evil.example/", "user:password@"),
    ("http://", "no host"),
    ("http:///path", "no host"),
    ("http://:8080/", "no host"),
    ("http://127.1/", "dotted-quad"),
    ("http://2130706433/", "dotted-quad"),
    ("http://0177.0.0.1/", "dotted-quad"),
    ("http://-bad.example/", "not a host name"),
    ("http://a..b/", "not a host name"),
    ("http://exa%6dple.com/", "not a host name"),
    ("http://exa<mple.com/", "not a host name"),
    ("http://" + "a" * 64 + ".example/", "not a host name"),
    ("http://example.com/" + "a" * MAX_URL_LENGTH, f"longer than {MAX_URL_LENGTH}"),
]


@pytest.mark.parametrize("url", ACCEPTED)
def test_accepted_urls_come_back_unchanged(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(("url", "words"), REFUSED)
def test_refused_urls_get_one_line_naming_the_problem(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_url(url)
    message = str(caught.value)
    assert message.startswith("subscriber URL ")
    assert words in message, message
    assert message.isprintable() and len(message) < 300, message  # one short line, controls escaped
