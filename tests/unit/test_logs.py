from __future__ import annotations

import logging

import orjson

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
