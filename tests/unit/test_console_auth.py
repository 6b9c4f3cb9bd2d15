"""The console's credentials without a server: sessions, CSRF tokens, the token check, the
login rate limit, where a login may send the browser, and what the pages may turn into links."""

from __future__ import annotations

import pytest

from receiver.console import auth, render
from receiver.console.pages import login
from receiver.core.config import Settings
from receiver.core.errors import ConfigError

TOKEN = "console-token-for-tests-0123"


def test_a_session_cookie_holds_only_while_signed_and_unexpired() -> None:
    keys = auth.Keys(TOKEN)
    cookie, session_id, expires = keys.new_session(now=1000.0)
    assert expires == 1000 + auth.SESSION_SECONDS
    assert keys.session(cookie, now=1001.0) == session_id
    assert keys.session(cookie, now=expires) is None  # expired
    payload, _, signature = cookie.partition(".")
    assert keys.session(payload + "." + signature[:-2] + "AA", now=1001.0) is None  # signature altered
    forged_payload = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
    assert keys.session(forged_payload + "." + signature, now=1001.0) is None  # payload altered
    assert keys.session("", now=1001.0) is None
    assert keys.session("no-dot", now=1001.0) is None
    assert keys.session("x" * 600, now=1001.0) is None
    # Another token (rotated) ends every session it signed.
    assert auth.Keys(TOKEN + "-rotated").session(cookie, now=1001.0) is None


def test_csrf_tokens_belong_to_one_session() -> None:
    keys = auth.Keys(TOKEN)
    _, mine, _ = keys.new_session()
    _, theirs, _ = keys.new_session()
    assert keys.csrf_matches(mine, keys.csrf(mine))
    assert not keys.csrf_matches(mine, keys.csrf(theirs))
    assert not keys.csrf_matches(mine, None)
    assert not keys.csrf_matches(mine, "")
    assert keys.csrf(mine) != auth.Keys(TOKEN + "x").csrf(mine)


def test_only_the_token_itself_matches() -> None:
    keys = auth.Keys(TOKEN)
    assert keys.token_matches(TOKEN)
    for wrong in ("", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "\udcff", "x" * 10_000):
        assert not keys.token_matches(wrong)


def test_bearer_header_parsing() -> None:
    assert auth.bearer("Bearer abc") == "abc"
    assert auth.bearer("bearer  abc ") == "abc"
    assert auth.bearer("Basic abc") is None
    assert auth.bearer("Bearer ") is None
    assert auth.bearer(None) is None


def test_wrong_tokens_lock_an_address_out_for_the_window() -> None:
    limit = auth.FailureLimit(max_failures=3, window=60.0)
    for second in range(3):
        assert limit.retry_after("10.0.0.1", now=100.0 + second) == 0.0
        limit.failed("10.0.0.1", now=100.0 + second)
    assert limit.retry_after("10.0.0.1", now=103.0) == pytest.approx(57.0)
    assert limit.retry_after("10.0.0.2", now=103.0) == 0.0  # another address is not affected
    assert limit.retry_after("10.0.0.1", now=160.5) == 0.0  # the oldest failure left the window
    limit.failed("10.0.0.2", now=1.0)
    limit.succeeded("10.0.0.2")
    assert limit.retry_after("10.0.0.2", now=2.0) == 0.0


def test_the_rate_limit_tracks_a_bounded_number_of_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "MAX_TRACKED", 100)
    limit = auth.FailureLimit(max_failures=1, window=60.0)
    for n in range(500):
        limit.failed(f"10.0.{n // 256}.{n % 256}", now=1.0)
    assert len(limit._failures) == 100
    assert limit.retry_after("10.0.1.243", now=2.0) > 0  # the most recent are kept


@pytest.mark.parametrize(
    ("asked", "sent_to"),
    [
        ("/console/jobs?status=failed", "/console/jobs?status=failed"),
        (None, "/console/"),
        ("https://evil.example/", "/console/"),
        ("//evil.example/console", "/console/"),
        ("/console//evil.example", "/console/"),
        ("/console/\\evil", "/console/"),
        ("/console/login", "/console/"),
        ("/consolex", "/console/"),
        ("/console/\r\nSet-Cookie: x=1", "/console/"),
    ],
)
def test_after_login_only_console_pages(asked: str | None, sent_to: str) -> None:
    assert login._next(asked) == sent_to


def test_only_http_urls_become_links() -> None:
    assert render.safe_url("https://cdn.doitong.com/a.mp4") == "https://cdn.doitong.com/a.mp4"
    assert render.safe_url("javascript:alert(1)") is None
    assert render.safe_url("JAVASCRIPT:alert(1)") is None
    assert render.safe_url("data:text/html,<script>") is None
    assert render.safe_url(None) is None


def test_bodies_are_shown_indented_when_json_and_as_text_otherwise() -> None:
    assert render.pretty_body(b'{"a":{"b":1}}') == '{\n  "a": {\n    "b": 1\n  }\n}'
    assert render.pretty_body(b"not json \xff") == "not json \ufffd"
    assert "pruned" in render.pretty_body(None)


def test_a_short_console_token_stops_start_up_with_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^RECEIVER_CONSOLE_TOKEN: use at least 16 random characters"):
        Settings.from_env({"RECEIVER_CONSOLE_TOKEN": "short"})
    assert Settings.from_env({"RECEIVER_CONSOLE_TOKEN": " " + TOKEN + " "}).console_token == TOKEN
    assert Settings.from_env({}).console_token is None
