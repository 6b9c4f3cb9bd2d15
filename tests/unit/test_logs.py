from __future__ import annotations

import logging

import orjson
import pytest
import stamina

from receiver.core import logs
from receiver.core.config import Settings
from receiver.core.logs import JsonFormatter, TextFormatter


def _record(fields: dict[str, object]) -> logging.LogRecord:
    record = logging.LogRecord("receiver.access", logging.INFO, __file__, 1, "request", None, None)
    record.fields = fields
    return record


def test_text_lines_quote_values_that_could_forge_fields() -> None:
    line = TextFormatter().format(_record({"endpoint": "x\nINFO forged=1", "status": 200, "path": "/webhooks/doitong"}))
    assert "\n" not in line
    assert 'endpoint="x\\nINFO forged=1"' in line
    assert "status=200" in line and "path=/webhooks/doitong" in line


def test_json_lines_carry_the_fields() -> None:
    line = JsonFormatter().format(_record({"outcome": "accepted", "job_id": "abc"}))
    parsed = orjson.loads(line)
    assert parsed["outcome"] == "accepted" and parsed["job_id"] == "abc" and parsed["msg"] == "request"


async def test_a_scheduled_retry_is_one_line_saying_why_and_when(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.setup(Settings())
    try:
        attempts = 0
        async for attempt in stamina.retry_context(on=RuntimeError, attempts=2, wait_initial=0.01, wait_jitter=0):
            with attempt:
                attempts += 1
                if attempts == 1:
                    raise RuntimeError("Doitong answered 503")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        stamina.instrumentation.set_on_retry_hooks(None)
    lines = [line for line in capsys.readouterr().err.splitlines() if "receiver.retries" in line]
    assert len(lines) == 1, lines
    assert "retry 1 in 0.01s after RuntimeError: Doitong answered 503" in lines[0]
