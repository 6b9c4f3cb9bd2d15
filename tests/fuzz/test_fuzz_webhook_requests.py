"""Fuzz target: the whole webhook request (receiver/inbound/handler.py through the app's access log),
in process, with random paths, methods, header lists, bodies split into random chunks and
senders that hang up.

The database is a stand-in that checks what would reach PostgreSQL the way PostgreSQL would
(no NUL in text or jsonb, valid UTF-8, jsonb that parses, integers that fit) and answers
`accepted`, or is down. Every answer must be a 2xx, a 4xx or a 503; an exception escaping the
app is a 500 under uvicorn and fails the target.
"""

from __future__ import annotations

import asyncio
import math
import types
import uuid
from collections.abc import MutableMapping
from datetime import datetime
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette

from receiver.app import ReceiverApp
from receiver.core.config import Settings
from receiver.inbound import endpoints, signatures
from tests.fuzz import bodies, budget

pytestmark = pytest.mark.fuzz

SECRET = "whsec_fuzzing_secret_0123456789"
MAX_BODY = 4096  # small, so bodies over the limit are cheap to make
# Parameters of receiver_ingest() by kind (receiver/inbound/ingest.py's _INGEST).
_TEXT, _JSONB, _BYTEA = (0, 1, 5, 6, 7, 8, 15, 16), (3, 9), (2, 4)
_TIMESTAMPTZ, _FLOAT8, _INTEGER = (10, 11), (12,), (13, 14)


def _assert_no_nul(document: object) -> None:
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            assert "\x00" not in value, "jsonb cannot hold \\u0000"
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


class _Cursor:
    """What PostgreSQL would refuse with an error (a 500 in the handler) fails here instead."""

    def __init__(self) -> None:
        self.row: tuple[object, ...] | None = None

    async def execute(self, query: str, params: tuple[Any, ...]) -> None:
        for i in _TEXT:
            assert isinstance(params[i], str | None), (i, params[i])
            if params[i] is not None:
                assert "\x00" not in params[i], f"text parameter {i} holds NUL: {params[i]!r}"
                params[i].encode()  # UTF-8, no lone surrogates
        for i in _JSONB:
            if params[i] is not None:
                assert "\x00" not in params[i]
                _assert_no_nul(orjson.loads(params[i]))
        for i in _BYTEA:
            assert isinstance(params[i], bytes)
        for i in _TIMESTAMPTZ:
            assert params[i] is None or (isinstance(params[i], datetime) and params[i].tzinfo is not None)
        for i in _FLOAT8:
            assert params[i] is None or math.isfinite(params[i])
        for i in _INTEGER:
            assert params[i] is None or -(2**31) <= params[i] < 2**31
        # The key is in the unique (endpoint, idempotency_key) b-tree, whose entries PostgreSQL
        # refuses above about 2,700 bytes.
        assert len(params[0].encode()) + len(params[1].encode()) <= 2600, f"idempotency key of {len(params[1])}"
        # receiver_ingest() answers (outcome, job id, event id, registered, the job's status after).
        self.row = ("accepted", params[5], uuid.uuid4(), True, params[6])

    async def fetchone(self) -> tuple[object, ...] | None:
        return self.row


class _Connection:
    def cursor(self) -> _Cursor:
        return _Cursor()


class _Pool:
    def __init__(self) -> None:
        self.down = False

    async def getconn(self) -> _Connection:
        if self.down:
            raise psycopg.OperationalError("connection refused (the fuzz target's database is down)")
        return _Connection()

    async def putconn(self, conn: _Connection) -> None:
        pass


def _app() -> tuple[ReceiverApp, _Pool]:
    secrets = endpoints.SecretCache((SECRET,))
    secrets.replace({})
    pool = _Pool()
    state = types.SimpleNamespace(
        settings=Settings(webhook_secrets=(SECRET,), max_body_bytes=MAX_BODY),
        secrets=secrets,
        pool=pool,
        notifier=types.SimpleNamespace(poke=lambda: None),
    )
    app = ReceiverApp(Starlette(routes=[]))
    app.state.receiver = state
    return app, pool


_NAMES = st.sampled_from(
    [
        b"x-doitong-signature",
        b"idempotency-key",
        b"x-doitong-delivery",
        b"webhook-id",
        b"content-encoding",
        b"content-length",
        b"content-type",
        b"authorization",
        b"cookie",
        b"host",
        b"transfer-encoding",
    ]
) | st.binary(min_size=1, max_size=40).map(lambda raw: raw.translate(None, b"\x00\r\n: ").lower() or b"x")
_VALUES = (
    budget.header_byte_values
    | st.sampled_from([b"", b" ", b"identity", b"gzip", b"0", b"-1", b"99999999999999999999", b"\xb2", b"\xa0"])
    | st.integers(min_value=-10, max_value=2 * MAX_BODY).map(lambda n: str(n).encode())
    | st.binary(min_size=256, max_size=5000).map(lambda raw: raw.translate(None, b"\x00\r\n"))
)
_PADDING = st.sampled_from([b"", b" ", b"\t", b"\xa0", b"\x85", b"\x1c", b"\x0b", b"  \t"])


@st.composite
def _requests(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(
        st.one_of(
            bodies.webhook_documents(),
            bodies.webhook_documents(),
            bodies.webhook_documents(),
            bodies.webhook_bodies,
            st.binary(min_size=MAX_BODY - 2, max_size=MAX_BODY + 2),
        )
    )
    headers = draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=8))
    signature = signatures.sign(SECRET, body).encode()
    choice = draw(st.integers(min_value=0, max_value=9))
    if choice < 6:  # mostly signed, so the body gets parsed and stored
        header = draw(_PADDING) + signature + draw(_PADDING)
        headers.insert(draw(st.integers(min_value=0, max_value=len(headers))), (b"x-doitong-signature", header))
    elif choice < 8:
        header = draw(st.sampled_from([signature.upper(), signature[:-1], signature + b"0", b"sha1=" + signature[7:]]))
        headers.append((b"x-doitong-signature", header))
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(body)), max_size=4)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    # Mostly a well-formed request to the endpoint, so that the body gets as far as the database.
    odd = draw(st.integers(min_value=0, max_value=9)) == 0
    path = "/webhooks/doitong"
    method = "POST"
    if odd:
        path = draw(
            st.sampled_from(["/webhooks/doitong/", "/webhooks/doitong/default", "/webhooks/doitongx"])
            | st.text(budget.any_character, max_size=30).map(lambda rest: "/webhooks/doitong/" + rest)
        )
        method = draw(st.sampled_from(["POST", "GET", "PUT", "OPTIONS", "post"]))
    return {
        "path": path,
        "method": method,
        "headers": headers,
        "chunks": chunks,
        "hang_up": draw(st.integers(min_value=0, max_value=19)) == 0,
        "database_down": draw(st.integers(min_value=0, max_value=19)) == 0,
    }


async def _call(app: ReceiverApp, pool: _Pool, request: dict[str, Any]) -> int:
    pool.down = request["database_down"]
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(request["chunks"]) - 1}
        for i, chunk in enumerate(request["chunks"])
    ]
    if request["hang_up"]:
        messages[-1]["more_body"] = True
        messages.append({"type": "http.disconnect"})
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request["method"],
        "scheme": "http",
        "path": request["path"],
        "raw_path": request["path"].encode("utf-8", "surrogatepass"),
        "query_string": b"",
        "root_path": "",
        "headers": request["headers"],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    await app(scope, receive, send)
    assert sent and sent[0]["type"] == "http.response.start", sent
    return int(sent[0]["status"])


def test_webhook_requests() -> None:
    app, pool = _app()
    with asyncio.Runner() as runner:

        @budget.fuzz(1000)
        @given(_requests())
        def run(request: dict[str, Any]) -> None:
            status = runner.run(_call(app, pool, request))
            assert 200 <= status < 300 or 400 <= status < 500 or status == 503, status

        run()
