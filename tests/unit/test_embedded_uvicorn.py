"""The one way the package runs uvicorn inside its own event loop: started, listening
before the URL is handed out, stopped and awaited on exit, start-up failures raised."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from receiver.core import embedded_uvicorn
from receiver.core.errors import ConfigError


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def _app(lifespan: object = None) -> Starlette:
    return Starlette(routes=[Route("/", hello)], lifespan=lifespan)  # type: ignore[arg-type]


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


async def test_serves_on_a_free_port_and_stops_on_exit() -> None:
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    async with embedded_uvicorn.serving(_app(), port=0, lifespan="off") as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        async with httpx.AsyncClient() as client:
            assert (await client.get(url + "/")).text == "hello"  # listening already: no wait, no retry
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # ours, not uvicorn's
    assert _refused(int(port))
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("uvicorn ")]


async def test_runs_the_apps_lifespan_both_ways() -> None:
    seen: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        seen.append("up")
        yield
        seen.append("down")

    async with embedded_uvicorn.serving(_app(lifespan), port=0):
        assert seen == ["up"]
    assert seen == ["up", "down"]


async def test_a_failed_start_up_is_an_exception_not_an_exit() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield  # pragma: no cover

    with pytest.raises(embedded_uvicorn.StartupFailed, match="stopped during start-up"):
        async with embedded_uvicorn.serving(_app(lifespan), port=0):
            pytest.fail("the block must not run")
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("uvicorn ")]


async def test_a_start_up_that_hangs_times_out_and_is_cancelled() -> None:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.sleep(3600)
        yield  # pragma: no cover

    with pytest.raises(embedded_uvicorn.StartupFailed, match=r"did not listen within 0\.3s"):
        async with embedded_uvicorn.serving(_app(lifespan), port=0, startup_timeout=0.3):
            pytest.fail("the block must not run")
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("uvicorn ")]


async def test_a_port_in_use_names_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^RECEIVER_X: cannot listen on 127\.0\.0\.1:{port} \("):
            async with embedded_uvicorn.serving(_app(), port=port, setting="RECEIVER_X"):
                pytest.fail("the block must not run")
