"""The console's pages made by a process of their own (RECEIVER_CONSOLE_PROCESS=own, the default).

A page costs the process that makes it 5-20 ms of CPU here (the rows of its queries, the
template). Made by the process that answers webhooks, each page holds that process's event loop
so long, and every webhook arriving meanwhile waits: bench/console.py measured ingest's p99 at
1.3x with the console in use and 1.7x busy, against 0.8x and 1.1x with the pages made elsewhere.
So each server process (`receiver serve`, `run`, each of their workers) starts one child at a
lower CPU priority (nice +10: when the cores are short, webhooks go first) and relays /console/
to it over a Unix socket: relaying a page costs the server a fraction of a millisecond.

- The server binds the socket, in a directory only its user can enter, and keeps it; the child
  gets the listening descriptor. A request that comes while the child starts, or starts again
  after a crash (BackgroundTasks' back-off), waits in the socket's backlog rather than failing.
- The child reads its settings from its stdin and exits when stdin closes: a server killed with
  SIGKILL leaves no console behind.
- The client's address and scheme (the login rate limit, the audit log, the Secure cookie) go to
  the child in two headers the server sets after removing any a client sent; the child believes
  them (`trusted`) because only the server can reach its socket.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import threading

import aiohttp
import yarl
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.core.config import Settings
from receiver.core.errors import ReceiverError

log = logging.getLogger("receiver.console.process")

NICE = 10
FD_VARIABLE = "RECEIVER_CONSOLE_FD"
DIRECTORY_VARIABLE = "RECEIVER_CONSOLE_DIRECTORY"
CLIENT_HEADER = b"x-receiver-console-client"
SCHEME_HEADER = b"x-receiver-console-scheme"
MAX_BODY = 1024 * 1024  # the console's forms are a few KiB; a replay selection of 1,000 ids ~40 KiB
ANSWER_TIMEOUT = 120.0  # the slowest page or action, start to end
STOP_GRACE = 5.0
# Headers about one connection, not the request: not relayed either way (RFC 9110, 7.6.1).
_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"transfer-encoding",
    b"te",
    b"trailer",
    b"upgrade",
    b"proxy-authenticate",
    b"proxy-authorization",
}
_OURS = {CLIENT_HEADER, SCHEME_HEADER}


class ConsoleExited(ReceiverError):
    """The console process ended while the server was running (it is started again)."""


class ConsoleProcess:
    """The server's side: the socket, the child, and the relay (an ASGI app for /console/...)."""

    def __init__(self, settings: Settings, command: list[str]) -> None:
        self._settings = settings
        self._command = command
        self._directory = ""
        self.path = ""
        self._socket: socket.socket | None = None  # bound by the first `run`, kept across restarts
        self._session: aiohttp.ClientSession | None = None

    def _listen(self) -> socket.socket:
        if self._socket is None:
            self._directory = tempfile.mkdtemp(prefix="receiver-console-")  # mode 0700
            self.path = os.path.join(self._directory, "console.sock")
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._socket.bind(self.path)
            self._socket.listen(128)
        return self._socket

    async def run(self) -> None:
        """Start the child and wait for it; cancelled, stop it. The child exiting by itself
        raises ConsoleExited, for BackgroundTasks to log and start it again."""
        descriptor = self._listen().fileno()
        child = await asyncio.create_subprocess_exec(
            *self._command,
            stdin=asyncio.subprocess.PIPE,
            pass_fds=(descriptor,),
            env={**os.environ, FD_VARIABLE: str(descriptor), DIRECTORY_VARIABLE: self._directory},
        )
        assert child.stdin is not None
        try:
            child.stdin.write(base64.b64encode(pickle.dumps(self._settings)) + b"\n")
            await child.stdin.drain()
            code = await child.wait()
        except BaseException:  # cancelled (the server stops) or anything else: the child goes too
            await _stop(child)
            raise
        raise ConsoleExited(f"the console process exited with status {code}")

    async def close(self) -> None:
        """After `run` has ended: the relay's connections, the socket and its directory."""
        if self._session is not None:
            await self._session.close()
        if self._socket is not None:
            self._socket.close()
            shutil.rmtree(self._directory, ignore_errors=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _body(receive)
        if body is _GONE:
            return  # the client left before its body was whole: nothing for the console to do
        if body is None:
            await _plain(send, 413, b"Request body too large for the console")
            return
        # content-length too: aiohttp sets it from the body relayed, whatever the client said.
        headers = [
            (name, value)
            for name, value in scope["headers"]
            if name not in _HOP_BY_HOP and name not in _OURS and name != b"content-length"
        ]
        client = scope.get("client")
        headers.append((CLIENT_HEADER, (client[0] if client else "unknown").encode("latin-1")))
        headers.append((SCHEME_HEADER, str(scope.get("scheme", "http")).encode("latin-1")))
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        target = yarl.URL("http://console" + (path + (b"?" + query if query else b"")).decode("latin-1"), encoded=True)
        started = False
        try:
            async with self._client().request(
                scope["method"],
                target,
                headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers],
                data=body,
                allow_redirects=False,
            ) as answer:
                relayed = [(name.lower(), value) for name, value in answer.raw_headers]
                await send(
                    {
                        "type": "http.response.start",
                        "status": answer.status,
                        "headers": [(name, value) for name, value in relayed if name not in _HOP_BY_HOP],
                    }
                )
                started = True
                async for chunk in answer.content.iter_chunked(64 * 1024):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            if started:
                raise  # mid-answer: the server resets the connection, as for any failed response
            log.warning("console process took over %ds to answer %s %s", ANSWER_TIMEOUT, scope["method"], scope["path"])
            await _plain(send, 504, b"The console took too long to answer.")
        except aiohttp.ClientError as exc:
            if started:
                raise
            log.warning("console process did not answer %s %s: %s", scope["method"], scope["path"], exc)
            await _plain(send, 503, b"The console is starting again; try in a few seconds.", retry_after=b"2")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # Idle connections closed before the child's uvicorn closes them (5 s): a POST sent
                # on one it has just closed would fail, and aiohttp retries only safe methods.
                connector=aiohttp.UnixConnector(path=self.path, limit=16, keepalive_timeout=3.0),
                timeout=aiohttp.ClientTimeout(total=ANSWER_TIMEOUT),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                # Never a jar: it would keep one person's session cookie and send it with the
                # next person's requests. Cookies go through as the browser sent them.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session


async def _stop(child: asyncio.subprocess.Process) -> None:
    """Close its stdin (it ends gracefully on EOF), then SIGKILL after STOP_GRACE."""
    if child.returncode is not None:
        return
    if child.stdin is not None:
        child.stdin.close()
    try:
        await asyncio.wait_for(child.wait(), STOP_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()


_GONE = b"<the client left>"


async def _body(receive: Receive) -> bytes | None:
    """The request's body; None when it is over MAX_BODY, _GONE when the client left first."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return _GONE
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _plain(send: Send, status: int, text: bytes, *, retry_after: bytes | None = None) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text, "more_body": False})


# The child's side ---------------------------------------------------------------------------------


def trusted(app: ASGIApp) -> ASGIApp:
    """The child's app: the client's address and scheme as the server relayed them."""

    async def relayed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            client = headers.get(CLIENT_HEADER, b"unknown").decode("latin-1")
            scheme = headers.get(SCHEME_HEADER, b"http").decode("latin-1")
            scope = {**scope, "client": (client, 0), "scheme": "https" if scheme == "https" else "http"}
        await app(scope, receive, send)

    return relayed


class Paced:
    """The child's requests one at a time, and the console busy at most SHARE of the time: after a
    request that took t seconds, the next one starts no sooner than t * (1 / SHARE - 1) later.

    Its own CPU yields to webhooks (nice +10), but its queries' PostgreSQL backends do not: a
    script reading pages back to back kept a core of PostgreSQL busy and tripled ingest's p99.
    Paced, it gets a page about every 4 page-times; a person clicking every few seconds never
    waits (a 20 ms page holds the next request back 60 ms at most)."""

    SHARE = 0.25
    # The longest pause: a slow search or a big replay must not keep everyone waiting (the relay
    # gives up after ANSWER_TIMEOUT, and the request would still run after it gave up).
    MAX_PAUSE = 1.0

    def __init__(self, app: ASGIApp, share: float = SHARE, skip: str = "") -> None:
        self.app = app
        self._gap = 1 / share - 1
        self._skip = skip  # a path prefix served without pacing (the static files)
        self._lock = asyncio.Lock()
        self._free_at = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self._skip and scope["path"].startswith(self._skip)):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        async with self._lock:
            wait = self._free_at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            started = loop.time()
            try:
                await self.app(scope, receive, send)
            finally:
                ended = loop.time()
                self._free_at = ended + min((ended - started) * self._gap, self.MAX_PAUSE)


def child_settings() -> Settings:
    """What the server wrote to the child's stdin."""
    settings = pickle.loads(base64.b64decode(sys.stdin.buffer.readline()))
    assert isinstance(settings, Settings)
    return settings


def child_socket() -> socket.socket:
    """The listening socket the server passed; and from now on, the child ends when its stdin
    closes (the server stopped it, or died)."""
    descriptor = int(os.environ.pop(FD_VARIABLE))
    directory = os.environ.pop(DIRECTORY_VARIABLE, None)
    with contextlib.suppress(OSError):
        os.nice(NICE)
    threading.Thread(target=_end_with_stdin, args=(directory,), name="console-stdin", daemon=True).start()
    return socket.socket(fileno=descriptor)


def _end_with_stdin(directory: str | None) -> None:
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):
            pass
    # The server is stopping us, or died; if it died, nobody else removes its socket's directory.
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
    os.kill(os.getpid(), signal.SIGTERM)
