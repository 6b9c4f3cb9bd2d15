"""Signed webhooks whose JSON we could parse but not store: a clear 400, nothing stored, no 500
(which the provider would retry forever)."""

from __future__ import annotations

import logging
import uuid

import orjson
import pytest

from receiver.core import json_depth
from tests.support import Receiver, doitong_body, scalar


def _job() -> str:
    return "job_" + uuid.uuid4().hex[:12]


def _stored(receiver: Receiver, job: str) -> int:
    url = receiver.settings.database_url
    assert url is not None
    return int(scalar(url, "SELECT count(*) FROM inbound_webhooks WHERE job_id = %s", (job,)))


@pytest.mark.parametrize("levels", [json_depth.WEBHOOK_MAX_DEPTH, 300, 1022])  # 1,024 in all: orjson's most
async def test_metadata_nested_too_deep_is_400_and_nothing_is_stored(
    receiver: Receiver, levels: int, caplog: pytest.LogCaptureFixture
) -> None:
    job = _job()
    nested = b"[" * levels + b"]" * levels  # metadata at level 2: 1 + levels in all
    body = doitong_body(job)[:-1] + b',"metadata":{"deep":' + nested + b"}}"
    response = await receiver.post(body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_payload"
    assert f"deeper than {json_depth.WEBHOOK_MAX_DEPTH} levels" in response.json()["detail"]
    assert _stored(receiver, job) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_metadata_at_the_limit_is_stored_whole(receiver: Receiver) -> None:
    job = _job()
    inner = json_depth.WEBHOOK_MAX_DEPTH - 2  # the body, then metadata, then these
    body = doitong_body(job)[:-1] + b',"metadata":{"deep":' + b"[" * inner + b"]" * inner + b"}}"
    response = await receiver.post(body)
    assert response.status_code == 200, response.text
    assert _stored(receiver, job) == 1


async def test_numbers_beyond_64_bits_are_stored(receiver: Receiver) -> None:
    job = _job()
    big = b"1" + b"0" * 30
    body = doitong_body(job)[:-1] + b',"metadata":{"big":' + big + b',"width":18446744073709551616}}'
    response = await receiver.post(body)
    assert response.status_code == 200, response.text
    url = receiver.settings.database_url
    assert url is not None
    metadata = scalar(url, "SELECT metadata FROM jobs WHERE id = %s", (job,))
    assert float(metadata["big"]) == 1e30
    assert scalar(url, "SELECT width FROM jobs WHERE id = %s", (job,)) is None


@pytest.mark.parametrize(
    "value",
    [b'"\\u0000"', b'{"\\u0000":1}', b"1" + b"0" * 400, b'"\\udc00"'],
    ids=["nul-value", "nul-key", "integer-past-double", "lone-surrogate"],
)
async def test_values_postgresql_or_orjson_refuse_are_400(receiver: Receiver, value: bytes) -> None:
    job = _job()
    body = doitong_body(job)[:-1] + b',"metadata":{"x":' + value + b"}}"
    response = await receiver.post(body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_payload"
    assert _stored(receiver, job) == 0


def test_doitong_body_helper_still_ends_in_a_brace() -> None:
    assert orjson.loads(doitong_body("x")[:-1] + b',"metadata":{}}')["metadata"] == {}
