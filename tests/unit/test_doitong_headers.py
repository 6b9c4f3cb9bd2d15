"""Doitong's rate-limit headers come from outside: only ASCII numbers become a time to wait."""

from __future__ import annotations

import time

import pytest

from receiver.jobs import doitong


def test_reset_is_unix_seconds() -> None:
    assert doitong._reset_at({"x-ratelimit-reset": "1700000000"}) == 1700000000.0
    assert doitong._reset_at({"x-ratelimit-reset": "1700000000.5"}) == 1700000000.5
    assert abs((doitong._reset_at({"retry-after": "7"}) or 0) - (time.time() + 7)) < 1


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e9", "\u0661\u0662", "1.2.3", ""])
def test_anything_else_is_no_reset_time(value: str) -> None:
    assert doitong._reset_at({"x-ratelimit-reset": value}) is None


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "-3", "Wed, 21 Oct 2015 07:28:00 GMT x"])
def test_retry_after_other_than_ascii_seconds_is_ignored(value: str) -> None:
    assert doitong._reset_at({"retry-after": value}) is None
