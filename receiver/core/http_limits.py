"""The public server's connection limits: what uvicorn leaves unbounded.

uvicorn with httptools has no limit on the size of a request's header block (and
httptools joins a header that arrives in many pieces by concatenation: 64 MB of one
header blocked the event loop for seconds), no deadline for a head or a body that
trickles in, no deadline for a new connection that says nothing, and no cap on open
connections. `LimitedHttpToolsProtocol` adds them, per connection, without a task: a new
connection arms one timer (its deadline to say something), cancelled when its first head
is in; a request whose head and body arrive in one read, as a provider's webhook does,
arms nothing more.

- a head (request line and headers) over `max_header_bytes` → 431 and close, after
  reading at most that plus one socket read; chunked trailers (header fields after the
  body) likewise;
- a head not complete `header_timeout` after its first byte (or after the connection
  opened, for the first request) → 408 and close (a connection that never sent a byte
  is closed without an answer);
- a body slower than `body_timeout` plus one second per `body_min_rate` bytes received
  (Apache's mod_reqtimeout rule: a slow but steady upload goes on, a trickle does not)
  → 408 and close; time the app spends not reading does not count;
- a connection beyond `max_connections` open in this process → 503 with Retry-After
  and close, before reading anything;
- an idle keep-alive connection is closed by uvicorn after `timeout_keep_alive`.

Refusals are counted in `receiver_connections_refused{reason}`; they are not logged
one by one, since an attacker would choose how many lines we write.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import logging
from collections.abc import Callable
from typing import ClassVar

from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from receiver.core import metrics

try:
    import resource
except ImportError:  # Windows: no open-file limit to raise
    resource = None  # type: ignore[assignment]
from receiver.core.config import ConnectionLimits

log = logging.getLogger("receiver.server")

# Files a server process holds besides its clients' connections: the database pool, the
# listening sockets, logs, the embedded PostgreSQL's pipes.
FILES_BESIDE_CONNECTIONS = 256


def configure(limits: ConnectionLimits) -> None:
    """Set the limits every connection of this process gets from now on (each server worker
    builds its app, and so calls this, in its own process)."""
    LimitedHttpToolsProtocol.limits = limits


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim  # glibc; elsewhere nothing to call
        return trim
    except (OSError, AttributeError):
        return None


class _MemoryAfterFloods:
    """Gives memory back to the OS once a crowd of connections has gone.

    A thousand connections cost this process about 15 MB (uvicorn's protocol, parser and
    buffers for each); freed, glibc keeps most of it in its heap for later, so after an
    attack the process would stay that much bigger for good. When the open connections
    fall to a quarter of a peak of at least PEAK, malloc_trim(0) returns the free pages:
    once per wave of connections, never on a steady load."""

    PEAK = 256

    def __init__(self) -> None:
        self.peak = 0
        self.trim = _malloc_trim()

    def opened(self, count: int) -> None:
        self.peak = max(self.peak, count)

    def closed(self, count: int, loop: asyncio.AbstractEventLoop) -> None:
        if self.peak >= self.PEAK and count <= self.peak // 4:
            self.peak = 0  # the next wave starts from nothing: one trim per wave
            # A moment later, once the rest of the wave has closed too.
            loop.call_later(1.0, self._release)

    def _release(self) -> None:
        if self.trim is not None:
            self.trim(0)


_memory = _MemoryAfterFloods()


def fit_open_files(limits: ConnectionLimits) -> ConnectionLimits:
    """Raise this process's open-file limit (its workers inherit it) so `max_connections`
    fit; where the hard limit is lower, lower the cap to it and say so in one line (beyond
    the open-file limit, accept() fails and every client waits, not only the extra ones)."""
    if resource is None:
        return limits
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = limits.max_connections + FILES_BESIDE_CONNECTIONS
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < needed:
        cap = max(1, soft - FILES_BESIDE_CONNECTIONS)
        log.warning(
            "RECEIVER_MAX_CONNECTIONS: %d connections do not fit in this process's open-file limit "
            "(ulimit -n %d); serving at most %d",
            limits.max_connections,
            soft,
            cap,
        )
        return dataclasses.replace(limits, max_connections=cap)
    return limits


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above; pass it as `uvicorn.Config(http=…)`.

    A connection is always either receiving a head (from the connect, or from the end of the
    previous message, until the head is complete) or a message's body; each has its deadline
    and its byte budget, checked after every read, so the work any read can cause is bounded."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    # Per-connection state, beside uvicorn's (set in connection_made).
    _refused: bool
    _in_head: bool  # receiving a head: from the connect, or the previous message's end, to on_headers_complete
    _head_started: float | None  # when its first byte came (the connect, for the first request)
    _head_bytes: int  # bytes of reads this head spanned (bounds the work per head)
    _head_began_mid_read: bool  # the previous message ended inside the read being parsed
    _body_began_mid_read: bool  # this message's head ended inside the read being parsed
    _tail: bytes  # the last bytes of the previous read, for a head's end split across reads
    _head_size: int  # the head's own size, as parsed (for a head that arrives in one read)
    _message_done: bool  # the parser has seen the whole current message
    _body_started: float
    _body_bytes: int  # body bytes of the current message
    _body_read: int  # bytes read since its head completed: body, chunk framing, trailers
    _timer: asyncio.TimerHandle | None
    _running: RequestResponseCycle | None  # the cycle whose app runs (self.cycle may be a later one)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._refused = False
        self._in_head = True
        self._head_started = self.loop.time()
        self._head_bytes = 0
        self._head_began_mid_read = False
        self._body_began_mid_read = False
        self._tail = b""
        self._head_size = 0
        self._message_done = True
        self._body_started = 0.0
        self._body_bytes = 0
        self._body_read = 0
        self._timer = None
        self._running = None
        _memory.opened(len(self.connections))
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "connection_limit", b"retry-after: 1\r\n")
        else:
            # A connection that never says a word is closed at the head deadline too.
            self._arm(self._head_started + self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        _memory.closed(len(self.connections), self.loop)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # dropped until the close completes
        limits = self.limits
        if self._in_head:
            if self._head_started is None:
                self._head_started = self.loop.time()  # the first byte after the previous message
            room = limits.max_header_bytes - self._head_bytes
            if len(data) > room and (self._tail + data).find(b"\r\n\r\n", 0, len(self._tail) + max(room, 0) + 4) < 0:
                # This read cannot hold the head's end within the limit: refused without
                # parsing it (a flood of huge heads costs a search, not a parse).
                self._refuse(431, "headers_too_large")
                return
        self._head_began_mid_read = self._body_began_mid_read = False
        super().data_received(data)
        if self._refused or self.transport.is_closing():
            return
        if self._in_head:
            if self._head_began_mid_read:
                self._head_bytes, self._tail = 0, b""  # the read also held the previous message
            else:
                self._head_bytes += len(data)
                self._tail = data[-3:]
            if self._head_bytes > limits.max_header_bytes:
                self._refuse(431, "headers_too_large")
            elif self._head_started is not None:
                if self._timer is None:
                    self._arm(self._head_started + limits.header_timeout)
            elif self.cycle is not None and self.cycle.response_complete and self.timeout_keep_alive_task is None:
                # Between messages with the answer sent (the rest of a body the app did not
                # read came in): idle keep-alive again, and uvicorn stopped its timer on this read.
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )
        elif not self._message_done:
            if not self._body_began_mid_read:  # else the read also held the head (and perhaps more)
                self._body_read += len(data)
            # Chunk framing and trailers are not body bytes and do not buy time; past the
            # head limit plus an eighth of the body (chunks of 64 bytes and more), they are
            # a header flood by another name (httptools joins trailers as it joins headers).
            if self._body_read - self._body_bytes > limits.max_header_bytes + self._body_bytes // 8:
                self._refuse(431, "headers_too_large")
            elif self._timer is None:
                self._arm(self._body_deadline())

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    # Parser callbacks: where a head begins and ends, and what a body brings.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_done = False
        self._head_size = 0
        if self._head_started is None:  # it began in the read that ended the previous message
            self._head_started = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        self._disarm()
        if self._head_size > self.limits.max_header_bytes:
            self._refuse(431, "headers_too_large")  # the app is not called
            return
        self._body_started = self.loop.time()
        self._body_bytes = 0
        self._body_read = 0
        self._body_began_mid_read = True
        super().on_headers_complete()

    # The parser goes on with the rest of a read after a refusal: nothing more reaches the app.

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._message_done = True
        self._disarm()
        # Whatever comes next begins the next head (a keep-alive request, or a stray CRLF that
        # would otherwise hold the connection open for good).
        self._in_head = True
        self._head_started = None
        self._head_bytes = 0
        self._tail = b""
        self._head_began_mid_read = True
        super().on_message_complete()

    # Deadlines: one timer at a time, re-armed when it fires early.

    def _arm(self, deadline: float) -> None:
        self._timer = self.loop.call_at(deadline, self._check_deadline)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _body_deadline(self) -> float:
        limits = self.limits
        return self._body_started + limits.body_timeout + self._body_bytes / limits.body_min_rate

    def _check_deadline(self) -> None:
        self._timer = None
        if self._refused or self.transport.is_closing():
            return
        now = self.loop.time()
        if self._in_head:
            if self._head_started is None:
                return  # between messages, nothing received: uvicorn's keep-alive timeout watches
            deadline = self._head_started + self.limits.header_timeout
            if now < deadline:
                self._arm(deadline)
            elif self._head_bytes == 0 and self.cycle is None:
                self._close_quietly("idle_timeout")  # opened, and never said a word
            else:
                self._refuse(408, "header_timeout")
            return
        if self._message_done:
            return
        if self.flow.read_paused:
            # The app is not reading: the client is not the slow one. Measure again from here.
            self._body_started, self._body_bytes, self._body_read = now, 0, 0
            self._arm(self._body_deadline())
        elif now >= self._body_deadline():
            self._refuse(408, "body_timeout")
        else:
            self._arm(self._body_deadline())

    def _outstanding(self) -> list[RequestResponseCycle]:
        cycles = [self._running, *(cycle for cycle, _ in self.pipeline), self.cycle]
        return [cycle for cycle in dict.fromkeys(cycles) if cycle is not None and not cycle.response_complete]

    def _refuse(self, status: int, reason: str, extra: bytes = b"") -> None:
        """Answer `status` with Connection: close when no response is under way and none is
        owed to an earlier request, then close; every app still running sees http.disconnect."""
        metrics.CONNECTIONS_REFUSED.labels(reason).inc()
        self._refused = True
        self._disarm()
        outstanding = self._outstanding()
        if any(cycle.response_started for cycle in outstanding) or len(outstanding) > 1:
            self.transport.abort()  # mid-response, or answers owed in order: only a reset is honest
        else:
            self.transport.write(STATUS_LINE[status] + b"content-length: 0\r\n" + extra + b"connection: close\r\n\r\n")
            self.transport.close()
        for cycle in outstanding:
            cycle.disconnected = True
            cycle.message_event.set()

    def _close_quietly(self, reason: str) -> None:
        metrics.CONNECTIONS_REFUSED.labels(reason).inc()
        self._refused = True
        self.transport.close()
