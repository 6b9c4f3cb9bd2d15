"""uvicorn inside an event loop we already run (the publisher's /metrics, the simulator,
the demo's receiver, the tests): the process's signals stay ours, and nobody is told
the URL before the server listens.

    async with embedded_uvicorn.serving(app, host="127.0.0.1", port=0) as url:
        ...  # `url` has the port the OS chose; the server is stopped and awaited on exit
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import uvicorn

from receiver.core.errors import ConfigError, ReceiverError


class StartupFailed(ReceiverError):
    """uvicorn stopped before it listened, or did not listen in time; its log says why
    (most often the app's lifespan start-up raised)."""


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its caller and says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        # Before uvicorn 0.53 a failed lifespan start-up returned here (should_exit set,
        # `started` not) instead of raising SystemExit: only a started server listens.
        if self.started:
            self.listening.set()


@contextlib.asynccontextmanager
async def serving(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    lifespan: Literal["on", "off", "auto"] = "on",
    setting: str = "host/port",
    startup_timeout: float = 30.0,
    **options: Any,
) -> AsyncIterator[str]:
    """Serve `app` with uvicorn in this event loop until the block ends; yield its base URL.

    `port=0` picks a free port and the URL has the real one. A port that cannot be bound
    is a ConfigError naming `setting`; a start-up that fails (the app's lifespan raised)
    or takes longer than `startup_timeout` seconds is StartupFailed. On exit the server
    stops gracefully and is awaited. `options` go to `uvicorn.Config` (e.g. `http`,
    `server_header`, `timeout_graceful_shutdown`); uvicorn's logging setup and access
    log stay off, since the process has its own.
    """
    sock = _listen(host, port, setting)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}"
    server = EmbeddedServer(uvicorn.Config(app, log_config=None, access_log=False, lifespan=lifespan, **options))
    serve = asyncio.create_task(_serve(server, sock), name=f"uvicorn {url}")
    try:
        await _until_listening(server, serve, startup_timeout)
    except BaseException:
        serve.cancel()
        await asyncio.gather(serve, return_exceptions=True)
        sock.close()
        raise
    try:
        yield url
    finally:
        server.should_exit = True
        try:
            await serve
        finally:
            sock.close()


def check_listen(host: str, port: int, *, setting: str) -> None:
    """Fail now, with a ConfigError naming `setting`, when `serving()` could not bind
    host:port: for a process that would otherwise find out after it started its work."""
    _listen(host, port, setting).close()


def _listen(host: str, port: int, setting: str) -> socket.socket:
    # Bound here rather than by uvicorn so port 0 works and the real port is known.
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets
    # whose proto says TCP, and without it every keep-alive request waits ~40 ms
    # for a delayed ACK.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"{setting}: cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return sock


async def _serve(server: EmbeddedServer, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit:
        # uvicorn ends the process when start-up fails (after logging why); here the
        # process is not uvicorn's to end, and a SystemExit would stop the event loop.
        raise StartupFailed("the server stopped during start-up; see the log lines above") from None


async def _until_listening(server: EmbeddedServer, serve: asyncio.Task[None], timeout: float) -> None:
    """Return once `server` listens; raise what stopped it otherwise (whichever comes first)."""
    listening = asyncio.ensure_future(server.listening.wait())
    try:
        await asyncio.wait({serve, listening}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        listening.cancel()
    if server.listening.is_set():
        return
    if serve.done():
        serve.result()  # raises StartupFailed, or whatever else ended it
        raise StartupFailed("the server stopped before it listened")
    raise StartupFailed(f"the server did not listen within {timeout:g}s")
