"""`receiver publish` and `receiver run` as real processes: a background task it cannot do without fails, and the
process says so and exits non-zero instead of staying up doing nothing."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import MASTER_KEY

# The fan-out raises what no database error looks like: a bug.
BROKEN_FAN_OUT = """
import sys
from receiver.outbound import outbox

async def broken(*args, **kwargs):
    raise RuntimeError("injected fan-out bug")

outbox.fan_out = broken
from receiver.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "command",
    [
        ["publish", "--metrics-port", "0"],
        # The publisher inside `receiver run`: the server must not stay up accepting webhooks
        # that nobody delivers.
        ["run", "--port", "0"],
    ],
    ids=["publish", "run"],
)
async def test_the_process_exits_1_when_the_fan_out_fails(
    database_url: str, tmp_path: Path, command: list[str]
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_", "DOITONG_"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "RECEIVER_HOME": str(tmp_path),
            "RECEIVER_MASTER_KEY": base64.urlsafe_b64encode(MASTER_KEY).decode(),
            "RECEIVER_POLL_INTERVAL": "200ms",
            "PYTHONUNBUFFERED": "1",
        }
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", BROKEN_FAN_OUT, *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    # The failure is logged once, with its traceback, and the last line says why the process ended.
    assert sum("background task outbox-fan-out failed; stopping" in line for line in lines) == 1, done.stderr
    assert sum(line.startswith("RuntimeError: injected fan-out bug") for line in lines) == 1, done.stderr
    assert lines[-1] == (
        "receiver: background task outbox-fan-out failed (RuntimeError: injected fan-out bug); stopped"
    ), done.stderr
