"""The console in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium).

One receiver (server, console and publisher) with a real HTTP subscriber runs for the whole
module in a thread of its own, on a database of its own; the tests drive one browser against
it. Without Chromium or Playwright the tests are skipped, except under CI=true, where they fail:
`make test` installs Chromium when it can.

Screenshots of every page, at 1280x800 and at a phone's 390x844, go to tests/artifacts/console/
(git-ignored), or to $CONSOLE_SCREENSHOTS.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import uuid
from collections.abc import Awaitable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from receiver.outbound import subscriptions
from tests.conftest import create_database, drop_database
from tests.subscriber import Subscriber
from tests.support import MASTER_KEY, Receiver, admin, publishing, running, settings_for

T = TypeVar("T")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "console-browser-token-0123456789"
API_TOKEN = "api-browser-token-0123456789"
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts" / "console"
SCREENSHOTS = Path(os.environ.get("CONSOLE_SCREENSHOTS") or ARTIFACTS)
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true requires it (make test installs Chromium when it can)", pytrace=False)
    pytest.skip(reason)


@dataclass
class Stack:
    """The running receiver, its subscriber, and a way to run coroutines on their event loop."""

    receiver: Receiver
    subscriber: Subscriber
    subscription_id: str
    database_url: str
    loop: asyncio.AbstractEventLoop

    @property
    def url(self) -> str:
        return self.receiver.url

    def run(self, work: Awaitable[T], timeout: float = 30.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(_awaited(work), self.loop)
        return future.result(timeout)


async def _awaited(work: Awaitable[T]) -> T:
    return await work


@pytest.fixture(scope="module")
def stack(pg_admin_url: str, template_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    name = f"receiver_browser_{uuid.uuid4().hex[:10]}"
    url = create_database(pg_admin_url, name, template=template_database)
    settings = settings_for(
        url,
        tmp_path_factory.mktemp("browser-home"),
        console_token=TOKEN,
        api_token=API_TOKEN,
        retry_schedule=(timedelta(milliseconds=200),),
        poll_interval=timedelta(milliseconds=100),
        http_timeout=timedelta(seconds=5),
        lease_timeout=timedelta(seconds=10),
        deny_networks=(),
    )
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        subscriber = await Subscriber().start()
        added = await admin(url, lambda c: subscriptions.add(c, MASTER_KEY, subscriber.url("/orders")))
        try:
            async with running(settings) as receiver, publishing(settings):
                holder["stack"] = Stack(receiver, subscriber, added.id, url, asyncio.get_running_loop())
                holder["stop"] = stop = asyncio.Event()
                ready.set()
                await stop.wait()
        finally:
            await subscriber.stop()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(60), "the receiver did not start"
    try:
        yield holder["stack"]
    finally:
        holder["stack"].loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(30)
        drop_database(pg_admin_url, name)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        _unavailable(f"{CHROMIUM} is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
