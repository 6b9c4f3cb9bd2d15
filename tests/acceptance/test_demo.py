"""`receiver demo --no-live` as a user runs it on a fresh machine: embedded PostgreSQL, every
fault knob on, and a self-check that decides the exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_checks_itself_and_passes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_", "DOITONG_"))}
    env["RECEIVER_HOME"] = str(tmp_path / "home")
    result = subprocess.run(
        [sys.executable, "-m", "receiver", "demo", "--jobs", "6", "--no-live", "--timeout", "90s"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout
    for check in ("final state (6/6)", "reached the subscriber", "no duplicate side effect", "every forged webhook"):
        line = next(line for line in result.stdout.splitlines() if check in line)
        assert line.strip().startswith("[ok]"), line
    assert not (tmp_path / "home" / "pgdata" / "postmaster.pid").exists()  # nothing left running


def test_demo_rejects_bad_arguments(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_", "DOITONG_"))}
    env["RECEIVER_HOME"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "receiver", "demo", "--jobs", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "--jobs" in result.stderr
