"""Fuzz targets: the /v1/jobs parameters, bodies and cursors (receiver/jobs/api.py).

The parsing helpers are called directly (only the API's BadRequest may escape), and
`GET /v1/jobs` is driven in process with random query strings against a stand-in database that
compiles each statement for PostgreSQL and checks its bound values as PostgreSQL would (no NUL,
valid UTF-8, times with a zone). Every answer must be a 2xx, a 4xx or a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
import urllib.parse
from collections.abc import AsyncIterator, MutableMapping
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql
from starlette.applications import Starlette
from starlette.routing import Route

from receiver.core import base64url
from receiver.core.config import Settings
from receiver.jobs import api, registration, search
from tests.fuzz import bodies, budget

pytestmark = pytest.mark.fuzz

TOKEN = "fuzz-token-0123456789abcdef"


def _cursor_texts() -> st.SearchStrategy[str]:
    """Cursors: anything, base64url of anything, and base64url of JSON shaped like a real cursor
    with odd times and ids (NUL, lone surrogates, 10,000 characters)."""
    times = st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()) | budget.any_text
    ids = budget.any_text | st.sampled_from(["a\x00b", "\x00", "", "x" * 10_000]) | budget.json_values(3)
    shaped = st.builds(lambda t, i, a: bodies.encoded([t, i], a), times, ids, st.booleans())
    return st.one_of(
        shaped.map(base64url.encode),
        shaped.map(base64url.encode),
        budget.any_text,
        st.binary(max_size=100).map(base64url.encode),
        st.builds(bodies.encoded, budget.json_values(5), st.booleans()).map(base64url.encode),
    )


_LIMITS = (
    budget.any_text
    | st.integers(min_value=-5, max_value=10**30).map(str)
    | st.sampled_from(["\xb2", "\u0661", "\u0665\u0660", "+5", " 5", "5 ", "1_0", "0x10", "05"])
)
_SINCE = (
    budget.any_text
    | st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
    | st.sampled_from(["0000-00-00", "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "24h", "100y"])
    | st.sampled_from(["\u0661h", "2024-02-30", "2024-01-01T24:00:00Z"])
    | st.builds(
        lambda n, u: f"{n}{u}", st.integers(min_value=0, max_value=10**20), st.sampled_from(["ms", "s", "m", "h", "d"])
    )
)


@budget.fuzz(1500)
@given(_LIMITS)
def test_limit(text: str) -> None:
    try:
        limit = api._limit(text)
    except api.BadRequest:
        return
    assert 1 <= limit <= api.MAX_LIMIT
    assert text.isascii() and text.isdigit(), f"limit {text!r} was accepted"


@budget.fuzz(2000)
@given(_SINCE)
def test_since(text: str) -> None:
    try:
        moment = api._since(text)
    except api.BadRequest:
        return
    # A time with a zone. It need not fit Python's UTC range: psycopg sends 9999-12-31T01:00-23:00
    # to PostgreSQL, whose range goes far beyond.
    assert moment.tzinfo is not None


@budget.fuzz(3000)
@given(_cursor_texts())
def test_cursor(text: str) -> None:
    try:
        seen_at, job_id = api._decode_cursor(text)
    except api.BadRequest:
        return
    # Both go into SQL: a NUL in the id was a DataError, a 500.
    assert isinstance(job_id, str) and "\x00" not in job_id, f"cursor id {job_id!r} accepted"
    job_id.encode()
    assert seen_at.tzinfo is not None


_OFFSETS = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))


@budget.fuzz(1000)
@given(st.datetimes(timezones=_OFFSETS), st.text(min_size=1, max_size=255).filter(lambda t: "\x00" not in t))
def test_cursor_round_trip(seen_at: datetime, job_id: str) -> None:
    assert api._decode_cursor(search.encode_cursor(seen_at, job_id)) == (seen_at, job_id)


@st.composite
def _registration_bodies(draw: st.DrawFn) -> bytes:
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        return draw(bodies.any_bytes | bodies.any_json | bodies.nested_json)
    fields = {
        "id": st.text(min_size=1, max_size=300) | budget.any_text,
        "service": st.just("hedra") | budget.any_text,
        "type": st.just("lipsync") | budget.any_text,
        "client_reference": budget.any_text,
        "tags": st.dictionaries(budget.any_text, budget.any_text | budget.json_values(2), max_size=60),
        "credit_cost": st.integers(min_value=-10, max_value=10**20) | st.floats() | st.booleans(),
        "input": budget.json_values(),
    }
    document: dict[str, object] = {}
    for name, strategy in fields.items():
        choice = draw(st.integers(min_value=0, max_value=9))
        if choice < 6:
            document[name] = draw(strategy)
        elif choice < 8:
            document[name] = draw(budget.json_values(3))
    if draw(st.booleans()):
        document[draw(budget.any_text)] = draw(budget.json_values(3))
    body = bodies.encoded(document, draw(st.booleans()))
    depth = draw(st.sampled_from([0, 0, 0, 100, 254, 255, 300, 1024, 5000]))
    if depth and body != b"{}":
        deep = bodies.deeply_nested(depth, draw(st.sampled_from(["list", "dict"])))
        body = body[:-1] + b',"input":{"a":' + deep + b"}}"
    return body


@budget.fuzz(600)
@given(_registration_bodies())
def test_registration_body(body: bytes) -> None:
    try:
        job = api._registration(body)
    except api.BadRequest:
        return
    for text_field in (job["id"], job["service"], job["type"], job["client_reference"]):
        if text_field is not None:
            assert "\x00" not in text_field
            text_field.encode()
    # What registration.register sends to PostgreSQL's jsonb: it must serialise without NUL.
    for document in (job["tags"], job["input"]):
        text = registration._json_or_none(document)
        assert text is None or "\\u0000" not in text.replace("\\\\", ""), text


class _Result:
    def __iter__(self) -> Any:
        return iter(())

    def first(self) -> None:
        return None


class _Connection:
    async def execute(self, statement: Any, parameters: Any = None) -> _Result:
        compiled = statement.compile(dialect=postgresql.psycopg.dialect())  # type: ignore[no-untyped-call]
        for name, value in compiled.params.items():
            if isinstance(value, str):
                assert "\x00" not in value, f"{name}={value!r} would reach PostgreSQL"
                value.encode()
            if isinstance(value, datetime):
                assert value.tzinfo is not None, f"{name}={value!r} has no zone"
        return _Result()


class _Engine:
    def __init__(self) -> None:
        self.down = False

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[_Connection]:
        if self.down:
            raise psycopg.OperationalError("connection refused (the fuzz target's database is down)")
        yield _Connection()


@st.composite
def _queries(draw: st.DrawFn) -> bytes:
    """A query string: each known parameter present or not, with values for it or anything,
    repeated names, unknown names, or raw bytes."""
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        return draw(st.binary(max_size=300))
    known = {
        "limit": _LIMITS,
        "cursor": _cursor_texts(),
        "since": _SINCE,
        "status": budget.any_text,
        "service": budget.any_text,
        "client_reference": budget.any_text,
    }
    pairs = [(name, draw(values)) for name, values in known.items() if draw(st.booleans())]
    pairs += draw(st.lists(st.tuples(st.sampled_from(list(known)) | budget.any_text, budget.any_text), max_size=2))
    return urllib.parse.urlencode(draw(st.permutations(pairs)), errors="surrogatepass").encode()


async def _list(app: Starlette, query: bytes, authorization: bytes) -> int:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/jobs",
        "raw_path": b"/v1/jobs",
        "query_string": query,
        "root_path": "",
        "headers": [(b"authorization", authorization)],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "app": app,
    }
    await app(scope, receive, send)
    return int(sent[0]["status"])


def test_list_jobs_query() -> None:
    engine = _Engine()
    app = Starlette(routes=[Route("/v1/jobs", api.list_jobs, methods=["GET"])])
    app.state.receiver = types.SimpleNamespace(settings=Settings(api_token=TOKEN), engine=engine)
    with asyncio.Runner() as runner:

        @budget.fuzz(1000)
        @given(
            _queries(),
            st.sampled_from([b"Bearer " + TOKEN.encode()] * 8 + [b"bearer  " + TOKEN.encode() + b" ", b"Bearer x", b""])
            | budget.header_byte_values,
            st.integers(min_value=0, max_value=19),
        )
        def run(query: bytes, authorization: bytes, down: int) -> None:
            engine.down = down == 0
            status = runner.run(_list(app, query, authorization))
            assert 200 <= status < 300 or 400 <= status < 500 or status == 503, status

        run()
