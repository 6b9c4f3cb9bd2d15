"""The public server's connection limits: what uvicorn leaves unbounded.

uvicorn with httptools has no limit on the size of a request's header block (and
httptools joins a header that arrives in many pieces by concatenation: 64 MB of one
header blocked the event loop for seconds), no deadline for a head or a body that
trickles in, no deadline for a new connection that says nothing, and no cap on open
connections. `LimitedHttpToolsProtocol` adds them, per connection, without a task or a
timer on the common path: a request whose head and body arrive in one read, as a
provider's webhook does, arms nothing.

- a head (request line and headers) over `max_header_bytes` → 431 and close, after
  reading at most that plus one socket read;
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
import gc
import logging
import resource
from collections.abc import Callable
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from receiver.core import metrics
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
            self.peak = count
            # A moment later, so that what the closed connections left in reference cycles is
            # collected first (a full collection: the app froze its start-up objects, so it is short).
            loop.call_later(1.0, self._release)

    def _release(self) -> None:
        gc.collect()
        if self.trim is not None:
            self.trim(0)


_memory = _MemoryAfterFloods()


def fit_open_files(limits: ConnectionLimits) -> ConnectionLimits:
    """Raise this process's open-file limit (its workers inherit it) so `max_connections`
    fit; where the hard limit is lower, lower the cap to it and say so in one line (beyond
    the open-file limit, accept() fails and every client waits, not only the extra ones)."""
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
    """uvicorn's httptools protocol with the limits above; pass it as `uvicorn.Config(http=…)`."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    # Per-connection state, beside uvicorn's (set in connection_made).
    _refused: bool
    _in_head: bool
    _head_started: float
    _head_bytes: int  # bytes read while this head was incomplete (bounds the work per head)
    _head_size: int  # the head's own size, as parsed (for a head that arrives in one read)
    _body_started: float
    _body_bytes: int
    _timer: asyncio.TimerHandle | None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._refused = False
        self._in_head = True
        self._head_started = self.loop.time()
        self._head_bytes = 0
        self._head_size = 0
        self._body_started = 0.0
        self._body_bytes = 0
        self._timer = None
        _memory.opened(len(self.connections))
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "connection_limit", b"retry-after: 1\r\n")
        else:
            self._arm(self._head_started + self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        _memory.closed(len(self.connections), self.loop)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped until the peer goes or the close timer fires
        if self._in_head and len(data) > self.limits.max_header_bytes - self._head_bytes:
            # A read that cannot hold the end of a head within the limit: refused without
            # parsing it (a flood of huge heads costs a read and a search, not a parse).
            room = self.limits.max_header_bytes - self._head_bytes
            if data.find(b"\r\n\r\n", 0, max(room, 0) + 4) < 0:
                self._refuse(431, "headers_too_large")
                return
        super().data_received(data)
        if self._refused or self.transport.is_closing():
            return
        if self._in_head:
            # The whole read counts, although it may also hold the end of the previous
            # request: at worst a pipelining client is refused a little early.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(431, "headers_too_large")
            elif self._timer is None:
                self._arm(self._head_started + self.limits.header_timeout)
        elif self.cycle is not None and self.cycle.more_body and self._timer is None:
            self._arm(self._body_deadline())

    # Parser callbacks: mark where a head begins and ends, and count body bytes.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_started = self.loop.time()
        self._head_bytes = 0
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        if self._head_size > self.limits.max_header_bytes:
            self._refuse(431, "headers_too_large")  # the app is not called
            return
        self._body_started = self.loop.time()
        self._body_bytes = 0
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
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Waiting for the next request is uvicorn's keep-alive timeout, not a head deadline.
        self._in_head = False
        self._head_bytes = 0

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
            if self._head_bytes == 0:
                self._close_quietly("idle_timeout")  # opened, and never said a word
            elif now >= self._head_started + self.limits.header_timeout:
                self._refuse(408, "header_timeout")
            else:
                self._arm(self._head_started + self.limits.header_timeout)
            return
        if self.cycle is None or not self.cycle.more_body:
            return
        if self.flow.read_paused:
            # The app is not reading: the client is not the slow one. Measure again from here.
            self._body_started, self._body_bytes = now, 0
            self._arm(self._body_deadline())
        elif now >= self._body_deadline():
            self._refuse(408, "body_timeout")
        else:
            self._arm(self._body_deadline())

    def _refuse(self, status: int, reason: str, extra: bytes = b"") -> None:
        """Answer `status` with Connection: close when no response has started, then close."""
        metrics.CONNECTIONS_REFUSED.labels(reason).inc()
        self._refused = True
        self._disarm()
        self.connections.discard(self)  # a refused connection no longer counts against the cap
        response_started = self.cycle is not None and self.cycle.response_started
        if not response_started:
            self.transport.write(STATUS_LINE[status] + b"content-length: 0\r\n" + extra + b"connection: close\r\n\r\n")
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's receive() sees http.disconnect
            self.cycle.message_event.set()
        self.transport.close()

    def _close_quietly(self, reason: str) -> None:
        metrics.CONNECTIONS_REFUSED.labels(reason).inc()
        self._refused = True
        self.transport.close()
