"""The real commands as separate processes: serve, run (embedded PostgreSQL), the CLI, bad config."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from receiver.core import crypto
from receiver.inbound import signatures
from tests import support
from tests.support import SECRET, doitong_body, scalar

RECEIVER = [sys.executable, "-m", "receiver"]


def _env(home: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_", "DOITONG_"))}
    env.update({"RECEIVER_HOME": str(home), "PYTHONUNBUFFERED": "1"})
    env.update(values)
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RECEIVER, *args], env=env, capture_output=True, text=True, timeout=60)


def _wait_ready(url: str, process: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("not ready in time")


def _stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    return out, err


@pytest.fixture
def key_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return _env(
        tmp_path,
        DATABASE_URL=database_url,
        RECEIVER_MASTER_KEY=crypto.generate_key(),
        DOITONG_WEBHOOK_SECRET=SECRET,
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_logs_one_json_line_per_request_without_secrets(key_env: dict[str, str], workers: int) -> None:
    port = support.free_port()
    env = dict(key_env, RECEIVER_LOG_FORMAT="json")
    process = subprocess.Popen(
        [*RECEIVER, "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        body = doitong_body("job-accept-1")
        headers = {signatures.HEADER: signatures.sign(SECRET, body)}
        answer = httpx.post(url + "/webhooks/doitong", content=body, headers=headers)
        assert answer.status_code == 200 and answer.json()["status"] == "accepted"
        forged = httpx.post(url + "/webhooks/doitong", content=body, headers={signatures.HEADER: "sha256=" + "0" * 64})
        assert forged.status_code == 401
    finally:
        _out, err = _stop(process)
    lines = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("logger") == "receiver.access"]
    accepted = [r for r in requests if r.get("outcome") == "accepted"]
    assert len(accepted) == 1
    assert accepted[0]["job_id"] == "job-accept-1"
    assert accepted[0]["status"] == 200 and accepted[0]["endpoint"] == "default"
    assert accepted[0]["event_id"] == answer.json()["event_id"]
    assert [r["status"] for r in requests if r.get("outcome") == "unauthorized"] == [401]
    assert SECRET not in err
    assert env["RECEIVER_MASTER_KEY"] not in err
    assert scalar(key_env["DATABASE_URL"], "SELECT count(*) FROM jobs") == 1


def test_run_starts_embedded_postgres_and_stops_it_on_sigterm(tmp_path: Path) -> None:
    port = support.free_port()
    home = tmp_path / "home"
    process = subprocess.Popen(
        [*RECEIVER, "run", "--port", str(port)],
        env=_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, seconds=120)
        secret = (home / "webhook_secret").read_text().strip()
        body = doitong_body("job-run-1")
        answer = httpx.post(
            url + "/webhooks/doitong", content=body, headers={signatures.HEADER: signatures.sign(secret, body)}
        )
        assert answer.status_code == 200 and answer.json()["status"] == "accepted"
    finally:
        out, _err = _stop(process)
    assert f"http://127.0.0.1:{port}/webhooks/doitong" in out
    assert secret in out
    database = re.search(r"psql\s+: psql '([^']+)'", out)
    assert database is not None, out
    assert (home / "pgdata" / "PG_VERSION").exists()
    # Nothing left running: the embedded server stopped with the process.
    deadline = time.monotonic() + 10
    while (home / "pgdata" / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (home / "pgdata" / "postmaster.pid").exists()


def test_bad_config_stops_start_up_with_one_line(tmp_path: Path, database_url: str) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = str(busy.getsockname()[1])
    cases = [
        (_env(tmp_path, DATABASE_URL=database_url, RECEIVER_MASTER_KEY="not-a-key"), "RECEIVER_MASTER_KEY"),
        (_env(tmp_path), "DATABASE_URL"),
        (_env(tmp_path, DATABASE_URL="mysql://x/y"), "DATABASE_URL"),
        (_env(tmp_path, DATABASE_URL=database_url, RECEIVER_MAX_BODY_BYTES="lots"), "RECEIVER_MAX_BODY_BYTES"),
        (_env(tmp_path, DATABASE_URL=database_url, RECEIVER_HOST="no-such-host.invalid"), "RECEIVER_HOST"),
        (_env(tmp_path, DATABASE_URL=database_url, RECEIVER_HOST="192.0.2.1"), "RECEIVER_HOST"),  # not this machine's
        (_env(tmp_path, DATABASE_URL=database_url, RECEIVER_PORT=taken), "RECEIVER_PORT"),
    ]
    with busy:
        for env, setting in cases:
            port = env.get("RECEIVER_PORT") or str(support.free_port())
            result = _cli(env, "serve", "--port", port)
            assert result.returncode == 2, (setting, result.stderr)
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1, lines
            assert setting in lines[0]


def test_endpoint_commands_and_a_wrong_master_key(tmp_path: Path, database_url: str) -> None:
    env = _env(tmp_path, DATABASE_URL=database_url, RECEIVER_MASTER_KEY=crypto.generate_key())
    added = _cli(env, "endpoints", "add", "shop", "--secret", "shop-secret-123")
    assert added.returncode == 0, added.stderr
    assert _cli(env, "endpoints", "add", "shop", "--secret", "shop-secret-123").returncode == 1
    rotated = _cli(env, "endpoints", "rotate", "shop", "--secret", "shop-secret-456", "--grace", "1h30m")
    assert rotated.returncode == 0 and "1h30m" in rotated.stdout
    bad_grace = _cli(env, "endpoints", "rotate", "shop", "--secret", "shop-secret-789", "--grace", "soon")
    assert bad_grace.returncode == 2 and "--grace" in bad_grace.stderr
    listed = _cli(env, "endpoints", "list")
    assert re.search(r"^shop\s+2\s", listed.stdout, re.M), listed.stdout
    assert "shop-secret" not in listed.stdout

    wrong = dict(env, RECEIVER_MASTER_KEY=crypto.generate_key())
    refused = _cli(wrong, "serve", "--port", str(support.free_port()))
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and "RECEIVER_MASTER_KEY" in refused.stderr

    removed = _cli(env, "endpoints", "remove", "shop")
    assert removed.returncode == 0
    assert _cli(env, "endpoints", "remove", "shop").returncode == 1


def test_keygen_prints_a_usable_master_key(tmp_path: Path) -> None:
    result = _cli(_env(tmp_path), "keygen")
    key = result.stdout.strip()
    assert result.returncode == 0 and re.fullmatch(r"[A-Za-z0-9_-]{43}", key)
    assert _cli(_env(tmp_path, RECEIVER_MASTER_KEY=key), "endpoints", "list").returncode == 2  # no DATABASE_URL


def test_migrate_command(tmp_path: Path, empty_database_url: str) -> None:
    result = _cli(_env(tmp_path, DATABASE_URL=empty_database_url), "migrate")
    assert result.returncode == 0, result.stderr
    assert scalar(empty_database_url, "SELECT count(*) FROM jobs") == 0
