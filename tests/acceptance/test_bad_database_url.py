"""A DATABASE_URL the server refuses (a role or database it does not have) is bad configuration:
`run`, `serve` and `publish` stop at start-up with one line and exit 2, instead of waiting for it
forever as they wait out an outage."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support import MASTER_KEY

RECEIVER = [sys.executable, "-m", "receiver"]


def _refused(database_url: str, what: str) -> str:
    url = urlsplit(database_url)
    if what == "role":
        host = url.netloc.rpartition("@")[2]
        return urlunsplit(url._replace(netloc=f"no_such_role_for_this_test@{host}"))
    return urlunsplit(url._replace(path="/no_such_database_for_this_test"))


@pytest.mark.parametrize("what", ["role", "database"])
@pytest.mark.parametrize(
    "command",
    [
        ["run", "--port", "0"],
        ["serve", "--port", "0"],
        ["publish", "--metrics-port", "0"],
    ],
    ids=["run", "serve", "publish"],
)
async def test_a_url_the_server_refuses_stops_start_up(
    database_url: str, tmp_path: Path, command: list[str], what: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_", "DOITONG_"))}
    env.update(
        {
            "DATABASE_URL": _refused(database_url, what),
            "RECEIVER_HOME": str(tmp_path),
            "RECEIVER_MASTER_KEY": base64.urlsafe_b64encode(MASTER_KEY).decode(),
            "DOITONG_WEBHOOK_SECRET": "whsec_test_secret_value",
            # With a broker, `publish` registers it in the database first: the path that waited.
            "RECEIVER_NATS_URL": "nats://127.0.0.1:1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    done = await asyncio.to_thread(
        subprocess.run, [*RECEIVER, *command], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("receiver: config error: DATABASE_URL: the server refused it"), done.stderr
    assert "does not exist" in last, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
