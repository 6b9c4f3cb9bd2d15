"""Header values from the sender are checked or bounded before they reach the database
or a log line (issue #10, items 10 and 11), over real HTTP against a real PostgreSQL.

Sizes stay under 16 KiB so that a header-block limit in the HTTP layer (item 4) does
not answer these requests before the handler sees them.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from receiver.core import logs
from receiver.inbound import handler, signatures
from tests.support import SECRET, Receiver, doitong_body, running, scalar, settings_for


def _job() -> str:
    return "job_" + uuid.uuid4().hex[:12]


async def _post(receiver: Receiver, body: bytes, headers: list[tuple[bytes, bytes]], path: str = "") -> httpx.Response:
    """A POST whose header bytes are sent as given (Receiver.post takes str values only)."""
    sent = [(b"content-type", b"application/json"), *headers]
    return await receiver.client.post(receiver.url + (path or handler.PATH), content=body, headers=sent)


async def _raw_post(receiver: Receiver, body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[int, object]:
    """The same over a bare socket, for bytes httpx refuses to send (OWS around a value, DEL)."""
    host, port = receiver.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        lines = [b"POST " + handler.PATH.encode() + b" HTTP/1.1", b"host: x", b"connection: close"]
        lines += [b"content-type: application/json", b"content-length: %d" % len(body)]
        lines += [name + b":" + value for name, value in headers]
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, content = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(content)


def _signed(body: bytes) -> bytes:
    return signatures.sign(SECRET, body).encode()


def _stored(receiver: Receiver, job: str, what: str = "count(*)") -> object:
    url = receiver.settings.database_url
    assert url is not None
    return scalar(url, f"SELECT {what} FROM inbound_webhooks WHERE job_id = %s", (job,))


def _jobs(receiver: Receiver, job: str) -> object:
    url = receiver.settings.database_url
    assert url is not None
    return scalar(url, "SELECT count(*) FROM jobs WHERE id = %s", (job,))


# Item 10: one byte the latin-1 decoding turns into Unicode whitespace, next to a valid signature.
# (Control bytes such as 0x1F never get this far: the HTTP parser answers 400 itself.)
@pytest.mark.parametrize(
    ("before", "after"),
    [(b"", b"\xa0"), (b"\xa0", b""), (b"", b"\x85"), (b"\x85", b""), (b"", b"\xe3\x80\x80")],
    ids=["no-break space after", "no-break space before", "next line after", "next line before", "U+3000 in UTF-8"],
)
async def test_a_valid_signature_next_to_non_ascii_whitespace_is_refused(
    receiver: Receiver, before: bytes, after: bytes
) -> None:
    job = _job()
    body = doitong_body(job)
    response = await _post(receiver, body, [(signatures.HEADER.encode(), before + _signed(body) + after)])
    assert (response.status_code, response.json()) == (401, {"error": "invalid_signature"})
    assert _stored(receiver, job) == 0 and _jobs(receiver, job) == 0


async def test_spaces_and_tabs_around_a_valid_signature_are_fine(receiver: Receiver) -> None:
    job = _job()
    body = doitong_body(job)
    status, answer = await _raw_post(receiver, body, [(signatures.HEADER.encode(), b" \t" + _signed(body) + b"\t ")])
    assert status == 200 and isinstance(answer, dict) and answer["status"] == "accepted"


# Item 11: the header that names the delivery. (Control bytes and DEL never get this far: the
# HTTP parser answers 400 itself; tests/unit/test_idempotency_keys.py covers them.)
@pytest.mark.parametrize("name", ["Idempotency-Key", "X-Doitong-Delivery", "webhook-id"])
@pytest.mark.parametrize(
    "key",
    [b"k" * 256, b"k" * 12_000, b"key-\xe9", b"key\xa0", b"\xffkey"],
    ids=["256 bytes", "12,000 bytes", "latin-1 letter", "no-break space", "0xFF byte"],
)
async def test_a_bad_idempotency_key_is_400_before_anything_is_stored(
    receiver: Receiver, name: str, key: bytes
) -> None:
    job = _job()
    body = doitong_body(job)
    status, answer = await _raw_post(
        receiver, body, [(signatures.HEADER.encode(), _signed(body)), (name.encode(), key)]
    )
    assert status == 400 and isinstance(answer, dict)
    assert answer["error"] == "invalid_idempotency_key" and name.lower() in answer["detail"]
    assert _stored(receiver, job) == 0 and _jobs(receiver, job) == 0


async def test_a_key_of_exactly_the_limit_is_used_as_sent(receiver: Receiver) -> None:
    job = _job()
    body = doitong_body(job)
    key = "k" * 250 + job[-5:]
    headers = [(signatures.HEADER.encode(), _signed(body)), (b"Idempotency-Key", f" {key}\t".encode())]
    status, answer = await _raw_post(receiver, body, headers)
    assert status == 200 and isinstance(answer, dict) and answer["status"] == "accepted"
    assert _stored(receiver, job, "idempotency_key") == f"idempotency-key:{key}"


async def test_a_forged_request_with_a_bad_key_is_still_401(receiver: Receiver) -> None:
    """Forgeries are counted as such, whatever else is wrong with them."""
    job = _job()
    response = await receiver.post(doitong_body(job), secret="not-the-secret", headers={"Idempotency-Key": "k" * 300})
    assert response.status_code == 401


# Item 11: what inbound_webhooks.headers keeps.
async def test_stored_headers_stop_at_the_limit_and_say_what_was_left_out(receiver: Receiver) -> None:
    job = _job()
    body = doitong_body(job)
    padding = [(f"x-pad-{i}".encode(), b"p" * 3000) for i in range(3)]
    headers = [(signatures.HEADER.encode(), _signed(body)), *padding, (b"x-huge", b"h" * 9000), (b"x-small", b"s")]
    response = await _post(receiver, body, headers)
    assert response.status_code == 200 and response.json()["status"] == "accepted"

    stored = _stored(receiver, job, "headers")
    assert isinstance(stored, dict)
    marker = stored.pop(handler.LEFT_OUT)
    assert marker == "2 header(s), 12013 bytes, over RECEIVER_MAX_STORED_HEADER_BYTES"
    assert "x-pad-0" in stored and "x-pad-1" in stored and "x-pad-2" not in stored and "x-huge" not in stored
    assert stored["x-small"] == "s"  # a smaller header after one that did not fit still does
    assert stored[signatures.HEADER] == _signed(body).decode()
    assert sum(len(name) + len(value) for name, value in stored.items()) <= receiver.settings.max_stored_header_bytes


async def test_the_stored_header_limit_is_the_setting(database_url: str, tmp_path: Path) -> None:
    async with running(settings_for(database_url, tmp_path, max_stored_header_bytes=1024)) as receiver:
        job = _job()
        response = await receiver.post(doitong_body(job), headers={"x-pad": "p" * 1100})
        assert response.status_code == 200
        stored = _stored(receiver, job, "headers")
        assert isinstance(stored, dict) and "x-pad" not in stored and handler.LEFT_OUT in stored


async def test_headers_under_the_limit_are_stored_whole_and_unmarked(receiver: Receiver) -> None:
    job = _job()
    response = await receiver.post(doitong_body(job), headers={"x-pad": "p" * 7000})
    assert response.status_code == 200
    stored = _stored(receiver, job, "headers")
    assert isinstance(stored, dict) and stored["x-pad"] == "p" * 7000 and handler.LEFT_OUT not in stored


# The same class elsewhere: values from the request line and headers that reach a log line.
def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    records = [r for r in caplog.records if r.name == logs.access.name]
    assert records
    return [f.format(r) for r in records for f in (logs.TextFormatter(), logs.JsonFormatter())]


async def test_a_long_endpoint_name_is_404_and_the_log_line_stays_short(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    name = "a" * 12_000
    with caplog.at_level(logging.INFO, logger=logs.access.name):
        response = await receiver.post(doitong_body(_job()), path=f"{handler.PATH}/{name}")
    assert (response.status_code, response.json()) == (404, {"error": "unknown_endpoint"})
    assert all(len(line) < 1024 for line in _access_lines(caplog))


async def test_a_long_content_encoding_is_415_and_the_log_line_stays_short(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=logs.access.name):
        response = await receiver.post(doitong_body(_job()), headers={"Content-Encoding": "x" * 12_000})
    assert response.status_code == 415
    assert all(len(line) < 1024 for line in _access_lines(caplog))
