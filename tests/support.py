"""Helpers shared by the integration and acceptance tiers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import psycopg
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.app import create_app
from receiver.core import base64url, crypto, db, embedded_uvicorn
from receiver.core.config import Settings
from receiver.inbound import signatures
from receiver.outbound.publisher import Publisher

SECRET = "test-webhook-secret-1"
T = TypeVar("T")
MASTER_KEY = base64url.decode(crypto.generate_key())


def doitong_body(job_id: str, status: str = "completed", **fields: Any) -> bytes:
    """A body shaped like Doitong's documented webhook payload."""
    document: dict[str, Any] = {
        "id": job_id,
        "status": status,
        "url": f"https://cdn.doitong.com/outputs/{job_id}.mp4" if status == "completed" else None,
        "service": "hedra",
        "createdAt": "2024-01-01T00:00:00Z",
        "completedAt": "2024-01-01T00:01:00Z" if status in ("completed", "failed") else None,
        "metadata": {"duration": 12.5, "width": 1280, "height": 720},
    }
    document.update(fields)
    return orjson.dumps(document)


def settings_for(database_url: str, home: Path, **overrides: Any) -> Settings:
    base = Settings(
        database_url=database_url,
        webhook_secrets=(SECRET,),
        master_key=MASTER_KEY,
        home=home,
        db_pool_size=4,
        db_timeout=timedelta(seconds=2),
        endpoint_refresh=timedelta(milliseconds=200),
    )
    return base.replace(**overrides) if overrides else base


@dataclass
class Receiver:
    url: str
    settings: Settings
    client: httpx.AsyncClient

    async def post(
        self,
        body: bytes,
        *,
        secret: str | None = SECRET,
        path: str = "/webhooks/doitong",
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        sent = {"content-type": "application/json"}
        if secret is not None:
            sent[signatures.HEADER] = signatures.sign(secret, body)
        sent.update(headers or {})
        return await self.client.post(self.url + path, content=body, headers=sent)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Receiver]:
    """The real app behind a real uvicorn on an ephemeral port, in this event loop."""
    async with (
        embedded_uvicorn.serving(create_app(settings), port=0, http="httptools") as url,
        httpx.AsyncClient(timeout=30) as client,
    ):
        yield Receiver(url, settings, client)


def query(database_url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]


def scalar(database_url: str, statement: str, params: tuple[Any, ...] = ()) -> Any:
    rows = query(database_url, statement, params)
    return rows[0][0] if rows else None


async def metric(receiver: Receiver, name: str, **labels: str) -> float:
    """One sample from /metrics (0 when absent). Counters are process-wide, so
    tests compare before and after rather than expect absolute values."""
    from prometheus_client.parser import text_string_to_metric_families

    text = (await receiver.client.get(receiver.url + "/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def admin(database_url: str, action: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run `action` in one transaction (what `receiver …` commands do), from async tests."""
    engine = db.create_engine(database_url, pool_size=1)
    try:
        async with db.begin(engine) as conn:
            return await action(conn)
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def publishing(settings: Settings, *, concurrency: int = 16) -> AsyncIterator[Publisher]:
    """A publisher running in this event loop until the block ends (then drained like on SIGTERM)."""
    stop = asyncio.Event()
    publisher = Publisher(settings, MASTER_KEY, concurrency=concurrency)
    task = asyncio.create_task(publisher.run(stop))
    try:
        yield publisher
    finally:
        stop.set()
        await task


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        if await check():
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)


def execute(database_url: str, statement: str, params: tuple[Any, ...] = ()) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(statement, params)  # type: ignore[arg-type]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, for a process the test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running_in_a_thread(settings: Settings) -> Iterator[str]:
    """The app behind uvicorn in a thread of its own, for callers that are synchronous
    (schemathesis); yields its URL, stops and joins the thread on exit."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            async with running(settings) as server:
                holder["url"] = server.url
                holder["stop"] = stop = asyncio.Event()
                holder["loop"] = asyncio.get_running_loop()
                ready.set()
                await stop.wait()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        yield str(holder["url"])
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(30)
