"""The connection limits reach `receiver serve` from the environment, in one process and in
each worker of `--workers 2` (which build their app from the environment themselves), and a
body cut off for being slow leaves no traceback in the log."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from receiver.core import crypto
from tests import support
from tests.acceptance.test_processes import RECEIVER, _env, _stop, _wait_ready
from tests.support import SECRET
from tests.unit.test_connection_limits import read_all, trickle


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_applies_the_connection_limits_it_is_given(tmp_path: Path, database_url: str, workers: int) -> None:
    port = support.free_port()
    env = _env(
        tmp_path,
        DATABASE_URL=database_url,
        RECEIVER_MASTER_KEY=crypto.generate_key(),
        DOITONG_WEBHOOK_SECRET=SECRET,
        RECEIVER_MAX_HEADER_BYTES="2048",
        RECEIVER_BODY_TIMEOUT="1s",
        RECEIVER_BODY_MIN_RATE="1000",
    )
    process = subprocess.Popen(
        [*RECEIVER, "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_ready(f"http://127.0.0.1:{port}", process)

        async def attempts() -> tuple[bytes, bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 3000 + b"\r\n\r\n")
            too_large = await read_all(reader)
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            head = b"POST /webhooks/doitong HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n{"
            slow = await trickle(reader, writer, [head, *[b" "] * 40])  # 10 bytes/s
            writer.close()
            return too_large, slow

        too_large, slow = asyncio.run(attempts())
        assert too_large.startswith(b"HTTP/1.1 431 ")
        assert slow.startswith(b"HTTP/1.1 408 ")
    finally:
        _out, err = _stop(process)
    assert "Traceback" not in err
