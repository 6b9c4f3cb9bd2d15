"""Every process rides out PostgreSQL away at start-up and later: it stays up, says so once in
its log and on /readyz, and recovers by itself (`receiver publish` with a broker configured
used to exit 1; `receiver run` exited 1 when its start-up migration found no database)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import nats.js.errors
import pytest

from tests import support
from tests.acceptance.test_publish_processes import RECEIVER, _env
from tests.brokers import require_broker
from tests.integration.test_brokers import NATS_URL
from tests.outages import DatabaseProxy
from tests.support import eventually, scalar


@pytest.fixture
async def nats_stream() -> AsyncIterator[tuple[str, str]]:
    require_broker("NATS", NATS_URL, 4222, "RECEIVER_NATS_URL")
    suffix = uuid.uuid4().hex[:8]
    stream, prefix = f"RECEIVER_OUTAGE_{suffix}", f"receiveroutage{suffix}"
    yield stream, prefix
    nc = await nats.connect(NATS_URL, allow_reconnect=False)
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nc.jsm().delete_stream(stream)
    await nc.close()


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[str]]:
    with log.open("w") as out:
        process = subprocess.Popen([*RECEIVER, *args], env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _status(url: str) -> int | None:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return (await client.get(url)).status_code
    except httpx.TransportError:
        return None


async def _answers(url: str, status: int, seconds: float = 20.0) -> bool:
    async def check() -> bool:
        return await _status(url) == status

    return await eventually(check, seconds)


def _down_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "database unavailable" in line]


async def _sigterm(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(process.wait, 30)


async def test_publish_with_a_broker_waits_for_the_database_and_recovers(
    database_url: str, tmp_path: Path, nats_stream: tuple[str, str]
) -> None:
    stream, prefix = nats_stream
    port = support.free_port()
    log = tmp_path / "publish.log"
    async with DatabaseProxy(database_url) as proxy:
        await proxy.stop()  # PostgreSQL is away when the publisher starts
        env = _env(
            proxy.url,
            tmp_path,
            RECEIVER_NATS_URL=NATS_URL,
            RECEIVER_NATS_STREAM=stream,
            RECEIVER_NATS_SUBJECT_PREFIX=prefix,
            RECEIVER_DB_TIMEOUT="1s",
        )
        with _process(["publish", "--metrics-port", str(port)], env, log) as process:
            readyz = f"http://127.0.0.1:{port}/readyz"
            assert await _answers(f"http://127.0.0.1:{port}/healthz", 200), log.read_text()
            assert await _answers(readyz, 503), log.read_text()
            await asyncio.sleep(3)
            assert process.poll() is None, log.read_text()
            async with httpx.AsyncClient() as client:
                assert "database" in (await client.get(readyz)).json()["reason"]
            assert len(_down_lines(log)) == 1, log.read_text()

            await proxy.start()
            assert await _answers(readyz, 200), log.read_text()
            assert scalar(database_url, "SELECT count(*) FROM subscriptions WHERE id = 'nats'") == 1
            assert "database is back" in log.read_text()
            assert await _sigterm(process) == 0
    text = log.read_text()
    assert "Unclosed" not in text and "Traceback" not in text and "psycopg.pool" not in text, text


async def test_run_waits_for_the_database_at_start_up_and_then_serves(database_url: str, tmp_path: Path) -> None:
    port = support.free_port()
    log = tmp_path / "run.log"
    async with DatabaseProxy(database_url) as proxy:
        await proxy.stop()
        env = _env(proxy.url, tmp_path, RECEIVER_PORT=str(port), RECEIVER_HOST="127.0.0.1")
        with _process(["run"], env, log) as process:
            await asyncio.sleep(4)
            assert process.poll() is None, log.read_text()
            assert len(_down_lines(log)) == 1, log.read_text()

            await proxy.start()
            assert await _answers(f"http://127.0.0.1:{port}/readyz", 200, seconds=30), log.read_text()
            assert "database is back" in log.read_text()

            await proxy.stop()  # later on, too: 503 on /readyz, and back
            assert await _answers(f"http://127.0.0.1:{port}/readyz", 503), log.read_text()
            await asyncio.sleep(2)
            assert process.poll() is None, log.read_text()
            await proxy.start()
            assert await _answers(f"http://127.0.0.1:{port}/readyz", 200, seconds=30), log.read_text()
            assert await _sigterm(process) == 0
    assert "Traceback" not in log.read_text()


async def test_serve_starts_with_the_database_away_and_becomes_ready(database_url: str, tmp_path: Path) -> None:
    port = support.free_port()
    log = tmp_path / "serve.log"
    async with DatabaseProxy(database_url) as proxy:
        await proxy.stop()
        env = _env(proxy.url, tmp_path, RECEIVER_PORT=str(port), RECEIVER_HOST="127.0.0.1")
        with _process(["serve"], env, log) as process:
            assert await _answers(f"http://127.0.0.1:{port}/readyz", 503), log.read_text()
            await asyncio.sleep(3)  # several endpoint refreshes (every 2 s) and pool attempts
            assert len(_down_lines(log)) == 1, log.read_text()
            await proxy.start()
            assert await _answers(f"http://127.0.0.1:{port}/readyz", 200, seconds=30), log.read_text()
            assert await eventually(lambda: _logged(log, "database is back")), log.read_text()
            assert await _sigterm(process) == 0
    text = log.read_text()
    assert "Traceback" not in text and "psycopg.pool" not in text, text


async def _logged(log: Path, text: str) -> bool:
    return text in log.read_text()
