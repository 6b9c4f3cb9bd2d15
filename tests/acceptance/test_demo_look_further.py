"""The end of `receiver demo`: the lines it prints to "look further" work when pasted.

Its embedded PostgreSQL stops with the demo. In a terminal the demo keeps it up until Enter;
elsewhere it prints the command that brings it back. Both paths are run here as a user would:
the printed lines go through a shell, untouched."""

from __future__ import annotations

import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from receiver.cli import demo
from tests import support

DEMO = [sys.executable, "-m", "receiver", "demo", "--jobs", "3", "--no-live", "--timeout", "90s"]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_", "DOITONG_"))}
    env.update({"RECEIVER_HOME": str(home), "PYTHONUNBUFFERED": "1"})
    return env


def _printed(output: str, prefix: str) -> str:
    """The one printed line that starts with `prefix` (after its indent), as printed."""
    found = [line.strip() for line in output.splitlines() if line.strip().startswith(prefix)]
    assert len(found) == 1, output
    return found[0]


def _paste_queries(psql_line: str, env: dict[str, str]) -> str:
    """The printed psql line, with each printed query, through a shell; psql's output."""
    queries = " ".join(f"-c {shlex.quote(query)}" for query in demo.QUERIES)
    result = subprocess.run(
        f"{psql_line} -v ON_ERROR_STOP=1 {queries}", shell=True, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_without_a_terminal_it_prints_the_command_that_brings_the_database_back(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(home)
    result = subprocess.run(DEMO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (home / "pgdata" / "postmaster.pid").exists()  # the demo stopped its database
    restart = _printed(result.stdout, "RECEIVER_HOME=")
    psql_line = _printed(result.stdout, "psql ")

    # Pasted in the same shell (which may set RECEIVER_PORT, as this one does to stay off 8080).
    port = support.free_port()
    shell_env = dict(env, RECEIVER_PORT=str(port))
    del shell_env["RECEIVER_HOME"]  # the printed line must name it itself
    receiver = subprocess.Popen(
        restart,
        shell=True,
        env=shell_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert receiver.poll() is None, receiver.stderr.read() if receiver.stderr else ""
            assert time.monotonic() < deadline, "the printed command did not bring the receiver up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        shown = _paste_queries(psql_line, env)
        assert "completed" in shown or "failed" in shown, shown  # the demo's jobs, in its database
    finally:
        os.killpg(receiver.pid, signal.SIGTERM)
        receiver.communicate(timeout=30)
    assert not (home / "pgdata" / "postmaster.pid").exists()


def test_in_a_terminal_it_keeps_the_database_up_until_enter(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = _env(home)
    controller, terminal = pty.openpty()  # the demo's stdin and stdout, as in a terminal
    process = subprocess.Popen(DEMO, env=env, stdin=terminal, stdout=terminal, stderr=subprocess.DEVNULL)
    os.close(terminal)
    try:
        output = b""
        deadline = time.monotonic() + 150
        while b"press Enter" not in output:
            assert time.monotonic() < deadline and process.poll() is None, output.decode()
            if select.select([controller], [], [], 1)[0]:
                output += os.read(controller, 65536)
        text = output.decode().replace("\r\n", "\n")
        assert "PASSED" in text, text
        assert "RECEIVER_HOME=" not in text  # nothing to restart: it is still up
        assert (home / "pgdata" / "postmaster.pid").exists()
        shown = _paste_queries(_printed(text, "psql "), env)
        assert "completed" in shown or "failed" in shown, shown

        os.write(controller, b"\n")
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)
    assert not (home / "pgdata" / "postmaster.pid").exists()


def test_psql_is_the_bundled_one_when_none_is_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no psql anywhere
    command = demo._psql()
    assert command != "psql"
    result = subprocess.run([*shlex.split(command), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "psql (PostgreSQL)" in result.stdout
