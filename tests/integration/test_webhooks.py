"""The inbound contract over real HTTP against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
import uuid

import orjson

from receiver.inbound import signatures
from tests.support import SECRET, Receiver, doitong_body, metric, query, scalar


def _job() -> str:
    return "job_" + uuid.uuid4().hex[:12]


async def test_first_delivery_is_committed_everywhere_before_the_answer(receiver: Receiver) -> None:
    job = _job()
    body = doitong_body(job, "completed")
    response = await receiver.post(body)
    assert response.status_code == 200
    answer = response.json()
    assert answer["status"] == "accepted" and answer["job_id"] == job
    event_id = answer["event_id"]
    assert uuid.UUID(event_id)

    url = receiver.settings.database_url
    assert url is not None
    row = query(url, "SELECT status, url, service, duration, width, height FROM jobs WHERE id = %s", (job,))
    assert row == [("completed", f"https://cdn.doitong.com/outputs/{job}.mp4", "hedra", 12.5, 1280, 720)]
    stored_body = scalar(url, "SELECT body FROM inbound_webhooks WHERE job_id = %s", (job,))
    assert bytes(stored_body) == body
    events = query(url, "SELECT id::text, type, payload FROM outbox_events WHERE job_id = %s", (job,))
    assert [(e[0], e[1]) for e in events] == [(event_id, "job.completed")]
    envelope = events[0][2]
    assert envelope["id"] == event_id and envelope["type"] == "job.completed"
    assert envelope["data"]["id"] == job and envelope["data"]["status"] == "completed"
    assert envelope["data"]["created_at"] == "2024-01-01T00:00:00.000Z"
    assert scalar(url, "SELECT count(*) FROM job_events WHERE job_id = %s AND applied", (job,)) == 1


async def test_replay_is_a_duplicate_that_only_counts(receiver: Receiver) -> None:
    job = _job()
    body = doitong_body(job, "processing")
    assert (await receiver.post(body)).json()["status"] == "accepted"
    again = await receiver.post(body)
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "job_id": job}
    url = receiver.settings.database_url
    assert url is not None
    assert query(url, "SELECT replay_count, conflict_count FROM inbound_webhooks WHERE job_id = %s", (job,)) == [(1, 0)]
    assert scalar(url, "SELECT count(*) FROM job_events WHERE job_id = %s", (job,)) == 1
    assert scalar(url, "SELECT count(*) FROM outbox_events WHERE job_id = %s", (job,)) == 1


async def test_reused_key_with_another_body_is_counted_not_applied(receiver: Receiver) -> None:
    job = _job()
    key = {"Idempotency-Key": "delivery-" + job}
    conflicts = await metric(receiver, "receiver_webhook_replay_conflicts_total", endpoint="default")
    assert (await receiver.post(doitong_body(job, "processing"), headers=key)).status_code == 200
    other = await receiver.post(doitong_body(job, "completed"), headers=key)
    assert other.json() == {"status": "duplicate", "job_id": job}
    url = receiver.settings.database_url
    assert url is not None
    assert scalar(url, "SELECT status FROM jobs WHERE id = %s", (job,)) == "processing"
    assert scalar(url, "SELECT conflict_count FROM inbound_webhooks WHERE job_id = %s", (job,)) == 1
    after = await metric(receiver, "receiver_webhook_replay_conflicts_total", endpoint="default")
    assert after == conflicts + 1


async def test_redelivery_under_a_new_key_emits_nothing_new(receiver: Receiver) -> None:
    job = _job()
    body = doitong_body(job, "completed")
    first = await receiver.post(body, headers={"X-Doitong-Delivery": "d1"})
    second = await receiver.post(body, headers={"X-Doitong-Delivery": "d2"})
    assert first.json()["event_id"] is not None
    assert second.json() == {"status": "accepted", "job_id": job, "event_id": None}
    url = receiver.settings.database_url
    assert url is not None
    assert scalar(url, "SELECT count(*) FROM outbox_events WHERE job_id = %s", (job,)) == 1
    assert scalar(url, "SELECT count(*) FROM job_events WHERE job_id = %s", (job,)) == 2


async def test_raw_bytes_are_verified_not_reserialised_json(receiver: Receiver) -> None:
    job = _job()
    # Whitespace, key order, escapes and 1.0 all change under a JSON round trip.
    body = (
        '{ "status" : "completed",\n  "id": "' + job + '", "note": "caf\\u00e9 ☕", '
        '"metadata": {"duration": 1.0, "width": 640, "height": 480} }'
    ).encode()
    assert orjson.dumps(orjson.loads(body)) != body
    response = await receiver.post(body)
    assert response.status_code == 200, response.text
    url = receiver.settings.database_url
    assert url is not None
    assert bytes(scalar(url, "SELECT body FROM inbound_webhooks WHERE job_id = %s", (job,))) == body


BAD_SIGNATURES = {
    "missing": None,
    "empty": "",
    "prefix alone": "sha256=",
    "truncated": "TRUNCATE",
    "sha1": "sha1=" + "a" * 40,
    "non-hex": "sha256=" + "g" * 64,
    "wrong secret": "WRONG",
    "tampered": "TAMPER",
}


async def test_bad_signatures_are_401_and_store_nothing(receiver: Receiver) -> None:
    url = receiver.settings.database_url
    assert url is not None
    for name, value in BAD_SIGNATURES.items():
        job = _job()
        body = doitong_body(job)
        good = signatures.sign(SECRET, body)
        headers: dict[str, str] = {}
        if value == "TRUNCATE":
            value = good[:-1]
        elif value == "WRONG":
            value = signatures.sign("not-the-secret", body)
        elif value == "TAMPER":
            value = good
            body = body.replace(b"hedra", b"hedrb")
        if value is not None:
            headers[signatures.HEADER] = value
        response = await receiver.post(body, secret=None, headers=headers)
        assert response.status_code == 401, name
        assert response.json() == {"error": "invalid_signature"}
    assert scalar(url, "SELECT count(*) FROM inbound_webhooks") == 0
    assert scalar(url, "SELECT count(*) FROM jobs") == 0


async def test_two_signature_headers_are_401(receiver: Receiver) -> None:
    body = doitong_body(_job())
    good = signatures.sign(SECRET, body).encode()
    raw = await _raw_request(
        receiver,
        b"POST /webhooks/doitong HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"X-Doitong-Signature: %s\r\nX-Doitong-Signature: %s\r\nConnection: close\r\n\r\n%s"
        % (len(body), good, good, body),
    )
    assert raw.startswith(b"HTTP/1.1 401")


async def test_unknown_endpoint_is_404(receiver: Receiver) -> None:
    response = await receiver.post(doitong_body(_job()), path="/webhooks/doitong/nope")
    assert response.status_code == 404


async def test_bad_bodies_are_400_and_store_nothing(receiver: Receiver) -> None:
    for body in (b"not json", b"[1,2]", b'{"status":"completed"}', b'{"id":"x"}', b""):
        response = await receiver.post(body)
        assert response.status_code == 400, body
        assert response.json()["error"] == "invalid_payload"
    url = receiver.settings.database_url
    assert url is not None
    assert scalar(url, "SELECT count(*) FROM inbound_webhooks") == 0


async def test_content_type_is_not_required(receiver: Receiver) -> None:
    response = await receiver.post(doitong_body(_job()), headers={"content-type": "text/plain"})
    assert response.status_code == 200


async def test_compressed_body_is_415(receiver: Receiver) -> None:
    response = await receiver.post(doitong_body(_job()), headers={"Content-Encoding": "gzip"})
    assert response.status_code == 415
    assert response.json() == {"error": "unsupported_content_encoding"}


async def test_wrong_method_is_405(receiver: Receiver) -> None:
    response = await receiver.client.get(receiver.url + "/webhooks/doitong")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {"error": "method_not_allowed"}


async def test_every_answer_is_json_with_its_length(receiver: Receiver) -> None:
    answers = [
        await receiver.post(doitong_body(_job())),  # 200
        await receiver.post(doitong_body(_job()), secret="wrong"),  # 401
        await receiver.post(b"[]"),  # 400
        await receiver.post(doitong_body(_job()), path="/webhooks/doitong/nope"),  # 404
        await receiver.post(doitong_body(_job()), path="/webhooks/doitong/a/b"),  # 404, no such path
    ]
    assert [a.status_code for a in answers] == [200, 401, 400, 404, 404]
    for answer in answers:
        assert answer.headers["content-type"] == "application/json"
        assert int(answer.headers["content-length"]) == len(answer.content)
        assert isinstance(answer.json(), dict)


async def _raw_request(receiver: Receiver, data: bytes, *, read_limit: int = 65536) -> bytes:
    host, port = receiver.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(read_limit), 10)
    finally:
        writer.close()


async def test_oversize_body_is_413_without_reading_it_all(receiver: Receiver) -> None:
    limit = receiver.settings.max_body_bytes
    host, port = receiver.url.removeprefix("http://").split(":")
    # Declared too large: answered before a single body byte is sent.
    declared = await _raw_request(
        receiver,
        b"POST /webhooks/doitong HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (limit * 50),
    )
    assert declared.startswith(b"HTTP/1.1 413")

    # Chunked, no length: the server stops at the limit and answers while we still hold 49 MiB back.
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(10)
    try:
        sock.sendall(b"POST /webhooks/doitong HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        sent = 0
        answer = b""
        sock.setblocking(False)
        while sent < limit * 50 and not answer:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                await asyncio.sleep(0.01)
            try:
                answer = sock.recv(4096)
            except BlockingIOError:
                await asyncio.sleep(0)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        assert sent < limit * 50
    finally:
        sock.close()
    url = receiver.settings.database_url
    assert url is not None
    assert scalar(url, "SELECT count(*) FROM inbound_webhooks") == 0


async def test_stored_headers_leave_credentials_out_and_the_first_key_header_names_the_delivery(
    receiver: Receiver,
) -> None:
    job = _job()
    body = doitong_body(job)
    raw = await _raw_request(
        receiver,
        b"POST /webhooks/doitong HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nX-Doitong-Signature: %s\r\n"
        b"Authorization: Bearer hunter2\r\nCookie: session=s3cret\r\nUser-Agent: Doitong-Webhooks/1.0\r\n"
        b"Idempotency-Key: first\r\nIdempotency-Key: second\r\nConnection: close\r\n\r\n%s"
        % (len(body), signatures.sign(SECRET, body).encode(), body),
    )
    assert raw.startswith(b"HTTP/1.1 200"), raw[:200]
    url = receiver.settings.database_url
    assert url is not None
    [(key, headers)] = query(url, "SELECT idempotency_key, headers FROM inbound_webhooks WHERE job_id = %s", (job,))
    assert key == "idempotency-key:first"
    assert headers["user-agent"] == "Doitong-Webhooks/1.0"
    assert headers["x-doitong-signature"].startswith("sha256=")
    assert "authorization" not in headers and "cookie" not in headers
    assert "hunter2" not in orjson.dumps(headers).decode()


async def test_a_sender_that_hangs_up_mid_body_stores_nothing(receiver: Receiver) -> None:
    job = _job()
    body = doitong_body(job)
    gone = {"endpoint": "default", "outcome": "disconnected"}
    before = await metric(receiver, "receiver_webhooks_total", **gone)
    host, port = receiver.url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /webhooks/doitong HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nX-Doitong-Signature: %s\r\n\r\n%s"
        % (len(body), signatures.sign(SECRET, body).encode(), body[: len(body) // 2])
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await asyncio.sleep(0.2)
    url = receiver.settings.database_url
    assert url is not None
    assert scalar(url, "SELECT count(*) FROM inbound_webhooks WHERE job_id = %s", (job,)) == 0
    # The same delivery, whole, is then accepted: the half one left no trace behind.
    assert (await receiver.post(body)).json()["status"] == "accepted"
    assert await metric(receiver, "receiver_webhooks_total", **gone) == before + 1


async def test_out_of_order_completed_then_processing_keeps_completed(receiver: Receiver) -> None:
    job = _job()
    done = await receiver.post(doitong_body(job, "completed"))
    late = await receiver.post(doitong_body(job, "processing"))
    assert done.json()["event_id"] is not None
    assert late.json() == {"status": "accepted", "job_id": job, "event_id": None}
    url = receiver.settings.database_url
    assert url is not None
    assert scalar(url, "SELECT status FROM jobs WHERE id = %s", (job,)) == "completed"
    history = query(url, "SELECT status, applied FROM job_history WHERE job_id = %s ORDER BY event_seq", (job,))
    assert history == [("completed", True), ("processing", False)]


async def test_first_terminal_state_wins(receiver: Receiver) -> None:
    job = _job()
    await receiver.post(doitong_body(job, "failed"))
    later = await receiver.post(doitong_body(job, "completed"))
    assert later.json()["event_id"] is None
    url = receiver.settings.database_url
    assert url is not None
    assert scalar(url, "SELECT status FROM jobs WHERE id = %s", (job,)) == "failed"
    assert query(url, "SELECT type FROM outbox_events WHERE job_id = %s", (job,)) == [("job.failed",)]


async def test_forward_path_emits_one_event_per_state(receiver: Receiver) -> None:
    job = _job()
    for status in ("processing", "processing", "completed"):
        await receiver.post(doitong_body(job, status, note=status + uuid.uuid4().hex))
    url = receiver.settings.database_url
    assert url is not None
    types = query(url, "SELECT type FROM outbox_events WHERE job_id = %s ORDER BY seq", (job,))
    assert types == [("job.processing",), ("job.completed",)]


async def test_unknown_status_is_stored_as_received_and_emitted_while_not_terminal(receiver: Receiver) -> None:
    job = _job()
    queued = await receiver.post(doitong_body(job, "Queued Up"))
    assert queued.json()["event_id"] is not None
    url = receiver.settings.database_url
    assert url is not None
    assert scalar(url, "SELECT status FROM jobs WHERE id = %s", (job,)) == "Queued Up"
    assert scalar(url, "SELECT type FROM outbox_events WHERE job_id = %s", (job,)) == "job.queued_up"
    await receiver.post(doitong_body(job, "processing"))
    await receiver.post(doitong_body(job, "COMPLETED"))
    after = await receiver.post(doitong_body(job, "archived"))
    assert after.json()["event_id"] is None
    assert scalar(url, "SELECT status FROM jobs WHERE id = %s", (job,)) == "completed"


async def test_fifty_identical_deliveries_racing_make_one_event(receiver: Receiver) -> None:
    job = _job()
    body = doitong_body(job, "completed")
    responses = await asyncio.gather(*(receiver.post(body) for _ in range(50)))
    assert all(r.status_code == 200 for r in responses)
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses.count("accepted") == 1 and statuses.count("duplicate") == 49
    url = receiver.settings.database_url
    assert url is not None
    assert scalar(url, "SELECT count(*) FROM outbox_events WHERE job_id = %s", (job,)) == 1
    assert scalar(url, "SELECT replay_count FROM inbound_webhooks WHERE job_id = %s", (job,)) == 49


async def test_fifty_racing_redeliveries_under_distinct_keys_make_one_event(receiver: Receiver) -> None:
    job = _job()
    body = doitong_body(job, "completed")
    responses = await asyncio.gather(*(receiver.post(body, headers={"webhook-id": f"msg_{i}"}) for i in range(50)))
    assert all(r.status_code == 200 for r in responses)
    event_ids = [r.json()["event_id"] for r in responses]
    assert sum(1 for e in event_ids if e is not None) == 1
    url = receiver.settings.database_url
    assert url is not None
    assert scalar(url, "SELECT count(*) FROM outbox_events WHERE job_id = %s", (job,)) == 1
    assert scalar(url, "SELECT count(*) FROM job_events WHERE job_id = %s", (job,)) == 50
