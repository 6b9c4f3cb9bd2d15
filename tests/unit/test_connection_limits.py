"""The public server's connection limits (receiver.core.http_limits), over real sockets.

A small app stands in for the receiver: what is tested is the protocol, which answers
before the app is ever called (431, 408 on a head, 503) or while it reads (408 on a body)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from receiver.core import embedded_uvicorn, http_limits, metrics
from receiver.core.config import ConnectionLimits

LIMITS = ConnectionLimits(
    max_header_bytes=4096,
    header_timeout=0.5,
    body_timeout=0.5,
    body_min_rate=1000,
    keepalive_timeout=0.5,
    max_connections=4,
)
seen: dict[str, Any] = {}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the whole body and answers with its length; remembers a disconnect. /early answers
    without reading the body; /stream sends a chunk every 0.1 s for 2 s."""
    if scope["path"] == "/early":
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(20):
            await send({"type": "http.response.body", "body": b"chunk%d" % i, "more_body": True})
            await asyncio.sleep(0.1)
        await send({"type": "http.response.body", "body": b""})
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            seen["disconnected"] = True
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(autouse=True)
def limits() -> Iterator[None]:
    seen.clear()
    http_limits.configure(LIMITS)
    yield
    http_limits.configure(ConnectionLimits())


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, int]]:
    async with embedded_uvicorn.serving(
        app,
        lifespan="off",
        http=http_limits.LimitedHttpToolsProtocol,
        timeout_keep_alive=LIMITS.keepalive_timeout,
    ) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


def refused(reason: str) -> float:
    return metrics.CONNECTIONS_REFUSED.labels(reason)._value.get()  # type: ignore[no-any-return]


async def read_all(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    chunks = []
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), timeout):
            chunks.append(chunk)
    except ConnectionError:  # reset, or a write of ours after the server closed
        pass
    return b"".join(chunks)


async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pieces: list[bytes]) -> bytes:
    """Send `pieces` 0.1 s apart while reading; stop sending once the server has closed.
    Returns what the server sent."""
    answer = asyncio.create_task(read_all(reader))
    for piece in pieces:
        if answer.done():
            break
        writer.write(piece)
        await asyncio.wait([answer], timeout=0.1)
    return await answer


async def ok_request(host: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello")
    answer = await read_all(reader)
    writer.close()
    return answer


async def test_a_request_in_one_read_is_answered(server: tuple[str, int]) -> None:
    assert (await ok_request(*server)).startswith(b"HTTP/1.1 200 ")


async def test_a_head_over_the_limit_is_431_before_the_rest_is_read(server: tuple[str, int]) -> None:
    before = refused("headers_too_large")
    _reader, writer = await asyncio.open_connection(*server)
    writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nx-big: ")
    sent = 0
    with pytest.raises(ConnectionError):
        for _ in range(64 * 1024):  # up to 64 MB of one header value, 1 KiB at a time
            writer.write(b"a" * 1024)
            sent += 1024
            await writer.drain()
    # Closed long before 64 MB: what the server read is bounded by the limit and the
    # socket buffers, not by what the client chooses to send.
    assert sent < 8 * 1024 * 1024
    assert refused("headers_too_large") == before + 1
    writer.close()


async def test_a_header_sent_in_one_piece_over_the_limit_is_431(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 5000 + b"\r\n\r\n")
    answer = await read_all(reader)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b"connection: close" in answer
    writer.close()


async def test_a_head_just_under_the_limit_is_served(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    head = b"POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\nx-big: "
    padding = LIMITS.max_header_bytes - len(head) - 4
    for piece in (head, b"a" * (padding // 2), b"a" * (padding - padding // 2), b"\r\n\r\n"):
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.01)
    assert (await read_all(reader)).startswith(b"HTTP/1.1 200 ")
    writer.close()


async def test_a_slow_head_is_408_after_the_header_timeout(server: tuple[str, int]) -> None:
    before = refused("header_timeout")
    reader, writer = await asyncio.open_connection(*server)
    started = time.monotonic()
    # One header line every 0.1 s: never done within 0.5 s.
    answer = await trickle(reader, writer, [b"GET / HTTP/1.1\r\n", *[b"x-a: b\r\n"] * 20])
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert LIMITS.header_timeout <= time.monotonic() - started < 1.9
    assert refused("header_timeout") == before + 1
    writer.close()


async def test_a_connection_that_says_nothing_is_closed_without_an_answer(server: tuple[str, int]) -> None:
    before = refused("idle_timeout")
    reader, writer = await asyncio.open_connection(*server)
    started = time.monotonic()
    assert await read_all(reader) == b""
    assert time.monotonic() - started >= LIMITS.header_timeout
    assert refused("idle_timeout") == before + 1
    writer.close()


async def test_a_trickling_body_is_408_and_the_app_sees_a_disconnect(server: tuple[str, int]) -> None:
    before = refused("body_timeout")
    reader, writer = await asyncio.open_connection(*server)
    head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n"
    # 10 bytes every 0.1 s: 100 bytes/s against a minimum of 1,000.
    answer = await trickle(reader, writer, [head, *[b"x" * 10] * 30])
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert refused("body_timeout") == before + 1
    await asyncio.sleep(0.05)
    assert seen.get("disconnected") is True
    writer.close()


async def test_a_slow_but_steady_body_is_not_cut_off(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    head = b"POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 3000\r\n\r\n"
    # 3,000 bytes over about 1 s, longer than the body timeout, at 3,000 bytes/s.
    answer = await trickle(reader, writer, [head, *[b"x" * 300] * 10])
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"3000")
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
    await writer.drain()
    first = await asyncio.wait_for(reader.read(65536), 5)
    assert first.startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    assert await read_all(reader) == b""  # then closed, having been idle
    assert time.monotonic() - started < LIMITS.keepalive_timeout + 1
    writer.close()


async def test_connections_beyond_the_cap_get_503(server: tuple[str, int]) -> None:
    before = refused("connection_limit")
    held = [await asyncio.open_connection(*server) for _ in range(LIMITS.max_connections)]
    await asyncio.sleep(0.05)
    reader, writer = await asyncio.open_connection(*server)
    answer = await read_all(reader)
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert b"retry-after: 1" in answer
    assert refused("connection_limit") == before + 1
    writer.close()
    for _, held_writer in held:
        held_writer.close()
    await asyncio.sleep(0.05)
    # Once they are gone, a new connection is served again.
    assert (await ok_request(*server)).startswith(b"HTTP/1.1 200 ")


async def test_a_huge_header_does_not_hold_up_other_requests(server: tuple[str, int]) -> None:
    """While one client streams a huge header, another's request is answered: the event
    loop is never busy for long (before the limit, joining the pieces took seconds)."""
    _reader, writer = await asyncio.open_connection(*server)
    writer.write(b"GET / HTTP/1.1\r\nhost: x\r\nx-big: ")

    async def flood() -> None:
        try:
            for _ in range(16 * 1024):
                writer.write(b"a" * 4096)
                await writer.drain()
        except ConnectionError:
            pass

    began = time.monotonic()
    flooding = asyncio.create_task(flood())
    slowest = 0.0
    for _ in range(5):
        started = time.monotonic()
        assert (await ok_request(*server)).startswith(b"HTTP/1.1 200 ")
        slowest = max(slowest, time.monotonic() - started)
        await asyncio.sleep(0.05)
    await flooding
    # Generous bounds for a shared CI machine: without the limit, the server read all
    # 64 MB and joining the pieces kept it busy for about 15 s.
    assert time.monotonic() - began < 3.0
    assert slowest < 1.0
    writer.close()


def test_memory_is_given_back_once_a_crowd_of_connections_has_gone() -> None:
    """After a wave of at least 256 connections falls to a quarter, the process collects and
    trims once (a moment later); a steady load below the peak never does."""
    trims: list[int] = []
    later: list[Any] = []

    class Loop:
        def call_later(self, delay: float, callback: Any) -> None:
            later.append(callback)

    memory = http_limits._MemoryAfterFloods()
    memory.trim = lambda pad: trims.append(pad) or 0
    loop: Any = Loop()
    for count in range(1, 33):  # a steady load: 32 open at most
        memory.opened(count)
    for count in range(31, -1, -1):
        memory.closed(count, loop)
    assert later == []
    for count in range(1, 1001):  # an attack: 1,000 open
        memory.opened(count)
    for count in range(999, 199, -1):
        memory.closed(count, loop)
    assert len(later) == 1  # at 250: once, not at every close below it
    later[0]()
    assert trims == [0]


async def test_a_keep_alive_connection_sending_only_line_breaks_is_closed(server: tuple[str, int]) -> None:
    """A bare CRLF after a response starts no request in the parser, yet it stopped uvicorn's
    keep-alive timer: such a connection stayed open for good, and enough of them filled the cap."""
    reader, writer = await asyncio.open_connection(*server)
    writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
    assert (await asyncio.wait_for(reader.read(65536), 5)).startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    writer.write(b"\r\n")
    await read_all(reader)
    assert time.monotonic() - started < LIMITS.header_timeout + 1.5
    writer.close()


async def test_a_pipelined_head_that_trickles_gets_the_head_deadline(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    started = time.monotonic()
    first = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhiGET / HTTP/1.1\r\nhost: x\r\nx-a: "
    answer = await trickle(reader, writer, [first, *[b"b"] * 40])
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"HTTP/1.1 408 " in answer
    assert time.monotonic() - started < LIMITS.header_timeout + 1.5
    writer.close()


async def test_a_pipelined_head_over_the_limit_is_refused(server: tuple[str, int]) -> None:
    _reader, writer = await asyncio.open_connection(*server)
    writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhiGET / HTTP/1.1\r\nhost: x\r\nx-big: ")
    sent = 0
    with pytest.raises(ConnectionError):
        for _ in range(32 * 1024):  # up to 32 MB of one header value
            writer.write(b"a" * 1024)
            sent += 1024
            await writer.drain()
    assert sent < 8 * 1024 * 1024
    writer.close()


async def test_chunked_trailers_are_bounded_like_headers(server: tuple[str, int]) -> None:
    """Trailers are header fields after a chunked body; httptools joins them as it joins headers."""
    reader, writer = await asyncio.open_connection(*server)
    writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-trailer: ")
    answer = asyncio.create_task(read_all(reader))
    sent = 0
    with contextlib.suppress(ConnectionError):
        for _ in range(32 * 1024):
            writer.write(b"a" * 1024)
            sent += 1024
            await writer.drain()
    assert sent < 8 * 1024 * 1024
    assert (await answer).startswith(b"HTTP/1.1 431 ")
    writer.close()


async def test_a_body_then_the_start_of_the_next_request_in_one_read_is_served(server: tuple[str, int]) -> None:
    """The read holding a 20 KB body and the next head's first bytes is not counted as head."""
    reader, writer = await asyncio.open_connection(*server)
    body = b"x" * 20_000
    writer.write(b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 20000\r\n\r\n" + body + b"GET /b HTTP/1.1\r\nho")
    first = await asyncio.wait_for(reader.read(65536), 5)
    assert first.startswith(b"HTTP/1.1 200 ") and first.endswith(b"20000")
    writer.write(b"st: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
    assert (await read_all(reader)).startswith(b"HTTP/1.1 200 ")
    writer.close()


async def test_a_head_whose_end_is_split_across_reads_is_served(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    head = b"POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 1048576\r\nx-pad: " + b"p" * 3000
    writer.write(head + b"\r\n")  # the head's last CRLF comes with the body, in the next read
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(b"\r\n" + b"x" * 1048576)
    answer = await read_all(reader)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"1048576")
    writer.close()


async def test_an_answer_before_the_body_leaves_no_body_deadline(server: tuple[str, int]) -> None:
    """The app answered without reading the body (as the receiver does for a 404 or 413): the
    connection is then idle keep-alive, closed by that timeout and not counted as a slow body."""
    before = refused("body_timeout")
    reader, writer = await asyncio.open_connection(*server)
    writer.write(b"POST /early HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n" + b"x" * 50)
    assert (await asyncio.wait_for(reader.read(65536), 5)).startswith(b"HTTP/1.1 404 ")
    writer.write(b"x" * 50)
    started = time.monotonic()
    await read_all(reader)
    assert time.monotonic() - started < LIMITS.body_timeout + 1.0
    assert refused("body_timeout") == before
    writer.close()


async def test_a_refusal_during_a_streamed_answer_does_not_add_a_second_answer(server: tuple[str, int]) -> None:
    reader, writer = await asyncio.open_connection(*server)
    pipelined = b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\nGET /two HTTP/1.1\r\nhost: x\r\n\r\nGET /three HTTP/1.1\r\nho"
    answer = await trickle(reader, writer, [pipelined, *[b"s"] * 40])
    assert answer.count(b"HTTP/1.1 ") == 1, answer[:300]  # the stream's own, cut by a reset
    writer.close()
