"""POST /v1/jobs and GET /v1/jobs against hostile input: bounded bodies, bounded fields, cursors
checked like parameters, a caller that hangs up; every answer a 4xx and no traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from receiver.core import base64url, json_depth
from receiver.jobs import api as jobs_api
from tests.support import Receiver, running, scalar, settings_for

TOKEN = "test-api-token-0123456789"
LIMIT = 32768  # room for 50 tags at their longest


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Receiver]:
    settings = settings_for(database_url, tmp_path, api_token=TOKEN, max_body_bytes=LIMIT)
    async with running(settings) as server:
        server.client.headers["authorization"] = f"Bearer {TOKEN}"
        yield server


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def _count(api: Receiver, job_id: str) -> int:
    url = api.settings.database_url
    assert url is not None
    return int(scalar(url, "SELECT count(*) FROM jobs WHERE id = %s", (job_id,)))


async def _raw(api: Receiver, request: bytes, *, hang_up: bool = False) -> bytes:
    host, port = api.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        if hang_up:
            await asyncio.sleep(0.2)
            return b""
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def test_input_nested_too_deep_is_400(api: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    for levels in (json_depth.MAX_DEPTH, 300):  # `input` is level 2
        body = b'{"id":"job-deep","input":{"a":' + b"[" * levels + b"]" * levels + b"}}"
        response = await api.client.post(api.url + "/v1/jobs", content=body)
        assert response.status_code == 400, response.text
        assert f"deeper than {json_depth.MAX_DEPTH} levels" in response.json()["detail"]
    assert _count(api, "job-deep") == 0
    inner = json_depth.MAX_DEPTH - 2
    body = b'{"id":"job-deep","input":{"a":' + b"[" * inner + b"]" * inner + b"}}"
    assert (await api.client.post(api.url + "/v1/jobs", content=body)).status_code == 201
    _no_tracebacks(caplog)


async def test_numbers_beyond_64_bits_in_input_are_stored(api: Receiver) -> None:
    body = b'{"id":"job-big","input":{"n":18446744073709551616,"m":1' + b"0" * 30 + b"}}"
    assert (await api.client.post(api.url + "/v1/jobs", content=body)).status_code == 201


async def test_a_body_over_the_limit_is_413_without_reading_it_all(
    api: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    big = orjson.dumps({"id": "job-big-body", "input": {"text": "x" * LIMIT}})
    response = await api.client.post(api.url + "/v1/jobs", content=big)
    assert response.status_code == 413
    assert response.json() == {"error": "body_too_large", "limit_bytes": LIMIT}
    # Declared 30 MB: answered before a byte of it is sent.
    declared = await _raw(
        api,
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 30000000\r\n\r\n"
        % TOKEN.encode(),
    )
    assert declared.startswith(b"HTTP/1.1 413"), declared[:200]
    # Chunked, no length: the server stops at the limit.
    chunk = b"x" * 4096

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(LIMIT // len(chunk) + 2):
            yield chunk

    streamed = await api.client.post(api.url + "/v1/jobs", content=chunks())
    assert streamed.status_code == 413
    assert _count(api, "job-big-body") == 0
    at_limit = orjson.dumps({"id": "job-big-body", "input": {"text": "x" * (LIMIT - 100)}})
    assert len(at_limit) <= LIMIT
    assert (await api.client.post(api.url + "/v1/jobs", content=at_limit)).status_code == 201
    _no_tracebacks(caplog)


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"tags": {f"k{i}": "v" for i in range(jobs_api.MAX_TAGS + 1)}}, "at most 50"),
        ({"tags": {"k" * (jobs_api.MAX_TAG_KEY_LENGTH + 1): "v"}}, "keys must be at most 64"),
        ({"tags": {"k": "v" * (jobs_api.MAX_TAG_VALUE_LENGTH + 1)}}, "values must be at most 255"),
        ({"tags": {"k": 1}}, "values must be strings"),
        ({"client_reference": "c" * 256}, "`client_reference` must be 1 to 255"),
        ({"id": "i" * 256}, "`id` must be 1 to 255"),
    ],
    ids=["tag-count", "tag-key", "tag-value", "tag-type", "client-reference", "id"],
)
async def test_fields_over_their_limits_are_400(api: Receiver, fields: dict[str, object], detail: str) -> None:
    response = await api.client.post(api.url + "/v1/jobs", json={"id": "job-limits", **fields})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert detail in response.json()["detail"]


async def test_fields_at_their_limits_are_accepted(api: Receiver) -> None:
    tags = {f"{i:0{jobs_api.MAX_TAG_KEY_LENGTH}d}": "v" * jobs_api.MAX_TAG_VALUE_LENGTH for i in range(50)}
    body = {"id": "i" * 255, "client_reference": "c" * 255, "tags": tags}
    assert (await api.client.post(api.url + "/v1/jobs", json=body)).status_code == 201


async def test_the_document_states_the_limits(api: Receiver) -> None:
    document = (await api.client.get(api.url + "/openapi.json")).json()
    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    tags = body["properties"]["tags"]
    assert tags["maxProperties"] == 50
    assert tags["propertyNames"]["maxLength"] == 64
    assert tags["additionalProperties"]["maxLength"] == 255
    assert body["properties"]["client_reference"]["maxLength"] == 255
    assert body["properties"]["id"]["maxLength"] == 255
    assert "413" in document["paths"]["/v1/jobs"]["post"]["responses"]


async def test_null_is_absent_as_the_document_says(api: Receiver) -> None:
    document = (await api.client.get(api.url + "/openapi.json")).json()
    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    for name in ("service", "type", "client_reference", "tags", "credit_cost", "input"):
        assert "null" in body["properties"][name]["type"], name
    assert "null" not in body["properties"]["id"]["type"]
    first = {"id": "job-null", "credit_cost": 80, "input": {"a": 1}}
    assert (await api.client.post(api.url + "/v1/jobs", json=first)).status_code == 201
    again = await api.client.post(api.url + "/v1/jobs", json={"id": "job-null", "credit_cost": None, "input": None})
    assert again.status_code == 200
    assert again.json()["credit_cost"] == 80 and again.json()["input"] == {"a": 1}  # left as stored
    assert (await api.client.post(api.url + "/v1/jobs", json={"id": None})).status_code == 400


def _cursor(seen_at: str, job_id: object) -> str:
    return base64url.encode(orjson.dumps([seen_at, job_id]))


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor("2024-01-01T00:00:00+00:00", "job\x00x"),
        _cursor("2024-01-01T00:00:00+00:00", "j" * 256),
        _cursor("2024-01-01T00:00:00+00:00", ""),
        _cursor("2024-01-01T00:00:00", "job"),  # no offset: never one we issued
        _cursor("0001-01-01T00:00:00+01:00", "job"),  # before year 1 in UTC
        "A" * (jobs_api.MAX_CURSOR_LENGTH + 1),
    ],
    ids=["nul", "long-id", "empty-id", "naive", "year-0", "long-cursor"],
)
async def test_cursors_of_the_right_shape_with_values_sql_cannot_take_are_400(
    api: Receiver, cursor: str, caplog: pytest.LogCaptureFixture
) -> None:
    response = await api.client.get(api.url + "/v1/jobs", params={"cursor": cursor})
    assert response.status_code == 400, response.text
    assert response.json()["detail"] == "`cursor` is not one this API returned"
    _no_tracebacks(caplog)


async def test_a_cursor_with_another_offset_still_pages(api: Receiver) -> None:
    for i in range(3):
        await api.client.post(api.url + "/v1/jobs", json={"id": f"job-page-{i}"})
    cursor = _cursor("2999-01-01T00:00:00+20:00", "zzz")
    page = (await api.client.get(api.url + "/v1/jobs", params={"cursor": cursor})).json()
    assert len(page["jobs"]) == 3


@pytest.mark.parametrize(
    "since",
    [
        "0001-01-01T00:00+01:00",  # before year 1 in UTC
        "2024-01-01T00:00+23:59",
        "9999-12-31T23:59-01:00",  # after year 9999 in UTC
        "99999999999999999999d",  # longer than durations go: every job
        "2024-02-29",
    ],
)
async def test_every_since_the_pattern_admits_is_answered(
    api: Receiver, since: str, caplog: pytest.LogCaptureFixture
) -> None:
    response = await api.client.get(api.url + "/v1/jobs", params={"since": since})
    assert response.status_code == 200, response.text
    _no_tracebacks(caplog)


@pytest.mark.parametrize("since", ["0000-00-00", "2023-02-29", "2024-02-30", "2024-01-01T24:00", "1H", "24h\n"])
async def test_since_the_pattern_refuses_is_400(api: Receiver, since: str) -> None:
    response = await api.client.get(api.url + "/v1/jobs", params={"since": since})
    assert response.status_code == 400, response.text


def test_the_since_pattern_is_the_one_documented() -> None:
    from receiver.jobs import openapi

    parameters = openapi.document()["paths"]["/v1/jobs"]["get"]["parameters"]
    [since] = [p for p in parameters if p["name"] == "since"]
    assert since["schema"]["pattern"] == jobs_api.SINCE_PATTERN


async def test_options_and_other_methods_list_get_and_post(api: Receiver) -> None:
    for method in ("OPTIONS", "PUT", "DELETE", "PATCH"):
        response = await api.client.request(method, api.url + "/v1/jobs")
        assert response.status_code == 405, method
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert {"GET", "POST"} <= allowed <= {"GET", "HEAD", "POST"}, (method, allowed)


async def test_a_caller_that_hangs_up_mid_body_is_a_quiet_400(api: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await _raw(
        api,
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 500\r\n\r\n"
        b'{"id":"job-gone"' % TOKEN.encode(),
        hang_up=True,
    )
    await asyncio.sleep(0.3)
    assert _count(api, "job-gone") == 0
    _no_tracebacks(caplog)
    # The server is fine and the same call, whole, is registered.
    assert (await api.client.post(api.url + "/v1/jobs", json={"id": "job-gone"})).status_code == 201


async def test_the_token_is_checked_before_the_body_is_read(api: Receiver) -> None:
    client = httpx.AsyncClient()
    try:
        response = await client.post(api.url + "/v1/jobs", content=b"x" * (LIMIT * 2))
    finally:
        await client.aclose()
    assert response.status_code == 401
