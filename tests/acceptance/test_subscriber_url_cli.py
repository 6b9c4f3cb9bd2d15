"""`receiver subscribers add` with a broken URL, as a real process: one line, exit 2, nothing stored.

The other refusals are in tests/unit/test_subscriber_urls.py; these two are the traceback and
the CRLF that must not split the line."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import MASTER_KEY, scalar

RECEIVER = [sys.executable, "-m", "receiver"]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://[::1", "no closing ]"),
        ("http://example.com/hook\r\nX-Injected: 1", "U+000D"),
    ],
)
def test_a_broken_url_is_one_line_and_exit_2(database_url: str, tmp_path: Path, url: str, words: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_", "DOITONG_"))}
    env |= {
        "DATABASE_URL": database_url,
        "RECEIVER_HOME": str(tmp_path),
        "RECEIVER_MASTER_KEY": base64.urlsafe_b64encode(MASTER_KEY).decode(),
    }
    done = subprocess.run(
        [*RECEIVER, "subscribers", "add", url], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("receiver: config error: subscriber URL ") and words in lines[0], lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert scalar(database_url, "SELECT count(*) FROM subscriptions") == 0
