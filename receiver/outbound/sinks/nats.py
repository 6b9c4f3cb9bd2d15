"""NATS JetStream sink: one outbox event becomes one message on `doitong.<event_type>`.

Every message carries `Nats-Msg-Id: <event id>`, so a retry that races a lost
ack is dropped by the stream's de-duplication window and answered with a
duplicate ack, which counts as delivered.

That holds only inside the stream's duplicate window (JetStream's default is
2 minutes), and the publisher's retries go on for days. A stream this sink
creates gets `duplicate_window` (the publisher passes one that covers its whole
retry schedule); an existing stream keeps its own, with a warning at connect
when it is shorter, since a retry later than it lands as a second message.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from urllib.parse import urlsplit

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from receiver.core.errors import ConfigError
from receiver.outbound.sinks.base import Message, Result
from receiver.outbound.sinks.broker import BrokerSink, Unavailable, describe

log = logging.getLogger("receiver.outbound.sinks.nats")

MSG_ID_HEADER = "Nats-Msg-Id"

_SCHEMES = ("nats", "tls", "ws", "wss")
# JetStream stream names end up in API subjects and file names.
_BAD_STREAM_NAME = re.compile(r"[\s.*>/\\]")
# A subject token may not be empty, a wildcard or contain whitespace.
_BAD_TOKEN = re.compile(r"(^$|^[*>]$|\s)")


class NatsSink(BrokerSink):
    """Publishes outbox events to a JetStream stream and waits for the stream's ack.

    `url` is a NATS server URL (several may be comma-separated) and may carry
    credentials; only `display_url` is ever logged. `connect()` is optional:
    `send` connects on demand, and nats-py reconnects on its own after a drop,
    so deliveries resume when the server returns without restarting anything.
    """

    broker = "NATS"

    def __init__(
        self,
        url: str,
        stream: str = "DOITONG",
        subject_prefix: str = "doitong",
        *,
        connect_timeout: float = 2.0,
        publish_timeout: float = 5.0,
        reconnect_wait: float = 1.0,
        duplicate_window: float = 0.0,
    ) -> None:
        self._servers = _parse_servers(url)
        self.display_url = ",".join(_redact(server) for server in self._servers)
        if not stream or _BAD_STREAM_NAME.search(stream):
            raise ConfigError(f"NATS stream name {stream!r} is not valid; use letters, digits, - and _ (e.g. DOITONG)")
        if any(_BAD_TOKEN.search(token) for token in subject_prefix.split(".")):
            raise ConfigError(f"NATS subject prefix {subject_prefix!r} is not valid; use plain tokens (e.g. doitong)")
        for name, value in (("connect_timeout", connect_timeout), ("publish_timeout", publish_timeout)):
            if value <= 0:
                raise ConfigError(f"NATS {name} must be positive, not {value}")
        if duplicate_window < 0:
            raise ConfigError(f"NATS duplicate_window must be 0 (the server's default) or more, not {duplicate_window}")
        # Seconds; 0 leaves the server's default (2 minutes).
        self.duplicate_window = duplicate_window
        self._window_checked = False  # warn about a short window once, not on every reconnect
        self.stream = stream
        self.subject_prefix = subject_prefix
        self._connect_timeout = connect_timeout
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._stream_ready = False
        super().__init__(publish_timeout=publish_timeout, retry_interval=reconnect_wait)

    @property
    def subjects(self) -> str:
        """The subject filter of the stream, e.g. `doitong.>`."""
        return f"{self.subject_prefix}.>"

    def subject_for(self, event_type: str) -> str:
        """The subject an event type is published on, e.g. `doitong.job.completed`."""
        return f"{self.subject_prefix}.{event_type}"

    @property
    def connected(self) -> bool:
        nc = self._nc
        return nc is not None and nc.is_connected and self._stream_ready

    async def _send(self, message: Message) -> Result:
        if any(_BAD_TOKEN.search(token) for token in message.event_type.split(".")):
            return Result(ok=False, error=f"event type {message.event_type!r} is not a valid NATS subject")
        try:
            js = await self._ready()
            ack = await js.publish(
                self.subject_for(message.event_type),
                message.body,
                timeout=self._publish_timeout,
                stream=self.stream,
                headers={**(message.headers or {}), MSG_ID_HEADER: message.event_id},
            )
        except Unavailable as exc:
            return Result(ok=False, error=str(exc))
        except nats.js.errors.NoStreamResponseError:
            # The stream may have been deleted (or the server replaced): check it again next time.
            self._stream_ready = False
            return Result(ok=False, error=f"no JetStream stream answers on {self.subject_for(message.event_type)}")
        except nats.errors.TimeoutError:
            return Result(ok=False, error=f"no JetStream ack within {self._publish_timeout:g}s")
        except nats.js.errors.APIError as exc:
            return Result(ok=False, error=f"JetStream error {exc.err_code}: {exc.description}")
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
            return Result(ok=False, error="NATS connection closed")
        except nats.errors.OutboundBufferLimitError:
            return Result(ok=False, error="NATS connection is down and the outbound buffer is full")
        except nats.errors.MaxPayloadError:
            return Result(ok=False, error="message is larger than the NATS server's max_payload")
        except Exception as exc:  # a sink reports failures, it never raises them
            return Result(ok=False, error=describe(exc))
        if ack.duplicate:
            log.debug("duplicate ack for event %s (already in stream %s)", message.event_id, ack.stream)
        return Result(ok=True)

    async def close(self) -> None:
        """Let sends in flight get their acks, then drain and close; the sink cannot be used afterwards."""
        await self._stop_sending()
        async with self._lock:
            nc, self._nc, self._js = self._nc, None, None
        if nc is None or nc.is_closed:
            return
        if nc.is_connected:
            try:
                await asyncio.wait_for(nc.drain(), self._publish_timeout + 1)
            except Exception as exc:
                log.debug("NATS drain failed: %s", describe(exc))
        if not nc.is_closed:
            await nc.close()

    async def _ready(self) -> JetStreamContext:
        nc, js = self._nc, self._js
        if nc is not None and js is not None and nc.is_connected and self._stream_ready:
            return js
        if nc is not None and (nc.is_reconnecting or nc.is_connecting) and not nc.is_closed:
            # nats-py is already reconnecting in the background; waiting for it here
            # would only hold the publisher's slots until the ack timeout.
            raise Unavailable("not connected to NATS (reconnecting)")
        return await self._establish()

    async def _establish(self, *, eager: bool = False) -> JetStreamContext:
        """Connect and check the stream, one attempt at a time, bounded by the connect timeout."""
        attempt = self._attempts
        async with self._lock:
            self._check_open()
            nc, js = self._nc, self._js
            if nc is not None and js is not None and nc.is_connected and self._stream_ready:
                return js
            self._begin_attempt(attempt, eager=eager)
            try:
                if nc is None or js is None or nc.is_closed:
                    nc = await self._open()
                    js = nc.jetstream(timeout=self._publish_timeout)
                    self._nc, self._js = nc, js
                elif not nc.is_connected:
                    raise Unavailable("not connected to NATS (reconnecting)")
                await asyncio.wait_for(self._ensure_stream(nc), self._connect_timeout + self._publish_timeout)
            except Unavailable as exc:
                self._last_error = str(exc)
                raise
            except TimeoutError:
                self._last_error = f"JetStream did not answer within {self._connect_timeout + self._publish_timeout:g}s"
            except nats.js.errors.APIError as exc:
                self._last_error = f"cannot create stream {self.stream}: {exc.description} (JetStream {exc.err_code})"
            except Exception as exc:
                self._last_error = f"cannot set up stream {self.stream}: {describe(exc)}"
            else:
                self._stream_ready = True
                self._retry_at = 0.0
                return js
            raise Unavailable(self._last_error)

    async def _open(self) -> Client:
        nc = Client()
        try:
            await asyncio.wait_for(
                nc.connect(
                    self._servers,
                    name="doitong-receiver",
                    allow_reconnect=True,
                    # After the first success, keep reconnecting for as long as the process lives.
                    max_reconnect_attempts=-1,
                    # nats-py wants whole seconds here; our own wait_for keeps the fractional bound.
                    connect_timeout=max(1, math.ceil(self._connect_timeout)),
                    reconnect_time_wait=max(1, math.ceil(self._retry_interval)),
                    # A half-open TCP connection is noticed after 3 missed pings of 20 s.
                    ping_interval=20,
                    max_outstanding_pings=3,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                ),
                self._connect_timeout,
            )
        except BaseException as exc:
            # connect() retries inside until cancelled: the last attempt's error says why.
            last = nc.last_error
            await _close_quietly(nc)
            if isinstance(exc, TimeoutError):
                why = f" ({describe(last)})" if last is not None else ""
                raise Unavailable(f"cannot connect to NATS within {self._connect_timeout:g}s{why}") from None
            if isinstance(exc, Exception):
                raise Unavailable(f"cannot connect to NATS: {describe(exc)}") from None
            raise
        log.info("connected to NATS at %s", self.display_url)
        return nc

    async def _ensure_stream(self, nc: Client) -> None:
        jsm = nc.jsm(timeout=self._publish_timeout)
        try:
            info = await jsm.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            pass
        else:
            self._check_window(info.config)
            return
        config = StreamConfig(
            name=self.stream,
            subjects=[self.subjects],
            storage=StorageType.FILE,
            # The server keeps each message id for this long (memory per message, see README).
            duplicate_window=self.duplicate_window,
        )
        try:
            await jsm.add_stream(config)
        except nats.js.errors.APIError as exc:
            # Another process may have created it between our two calls; that one stands.
            try:
                info = await jsm.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                raise exc from None
            self._check_window(info.config)
            return
        self._window_checked = True
        log.info(
            "created JetStream stream %s for %s (duplicate window %s)",
            self.stream,
            self.subjects,
            _span(self.duplicate_window) if self.duplicate_window else "the server's default",
        )

    def _check_window(self, config: StreamConfig) -> None:
        """Warn (once per sink) when an existing stream forgets message ids sooner than the
        publisher may retry: a retry after its window is stored, and consumed, twice."""
        if self._window_checked or not self.duplicate_window:
            return
        self._window_checked = True
        window = config.duplicate_window or 0.0
        if window + 1 < self.duplicate_window:  # the server rounds to nanoseconds
            log.warning(
                "JetStream stream %s keeps message ids for %s, but deliveries are retried for up to %s: "
                "a publish whose ack was lost and that is retried after %s is stored twice "
                "(raise it with `nats stream edit %s --dupe-window %ds`)",
                self.stream,
                _span(window) if window else "the server's default (2m)",
                _span(self.duplicate_window),
                _span(window) if window else "2m",
                self.stream,
                math.ceil(self.duplicate_window),
            )

    async def _on_error(self, exc: Exception) -> None:
        nc = self._nc
        if nc is not None and nc.is_connected and not isinstance(exc, (nats.errors.StaleConnectionError, OSError)):
            # E.g. a permissions violation: the server keeps the connection, publishes just go nowhere.
            log.warning("NATS %s: %s", self.display_url, describe(exc))
        else:
            # Every failed (re)connect attempt lands here; the drop itself is logged once, in _on_disconnected.
            log.debug("NATS %s: %s", self.display_url, describe(exc))

    async def _on_disconnected(self) -> None:
        # Also called when a failed first attempt or close() shuts a client down; only a drop is news.
        nc = self._nc
        if not self._closed and nc is not None and nc.is_reconnecting:
            log.warning("disconnected from NATS at %s; reconnecting", self.display_url)

    async def _on_reconnected(self) -> None:
        # The server may be a fresh one without our stream: check it before the next publish.
        self._stream_ready = False
        log.info("reconnected to NATS at %s", self.display_url)


def _span(seconds: float) -> str:
    """Seconds as people read a window: `2m`, `56h 4m`."""
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if not hours:
        return f"{minutes}m" if minutes else f"{int(seconds)}s"
    return f"{hours}h {minutes}m" if minutes else f"{hours}h"


def _parse_servers(url: str) -> list[str]:
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ConfigError("NATS URL is empty; use nats://host:4222")
    for server in servers:
        try:
            parts = urlsplit(server)
            parts.port  # noqa: B018 -- parsing the port is the validation
        except ValueError:
            raise ConfigError(f"NATS URL {_redact(server)!r} is malformed; use nats://host:4222") from None
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ConfigError(
                f"NATS URL {_redact(server)!r} is not supported; use nats://[user:password@]host:4222 "
                "(or tls://, ws://, wss://)"
            )
    return servers


def _redact(url: str) -> str:
    """`url` without its password; a lone user part is a token in NATS, so it is masked too."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<malformed URL>" if "@" in url else url
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at:
        return url
    user, colon, _password = userinfo.partition(":")
    shown = user if colon and user else "***"
    return f"{scheme}://{shown}@{hostport}{slash}{path}"


async def _close_quietly(nc: Client) -> None:
    try:
        await nc.close()
    except Exception as exc:
        log.debug("closing a failed NATS connection: %s", describe(exc))
