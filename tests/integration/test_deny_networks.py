"""RECEIVER_DENY_NETWORKS at delivery time, against a real listener on this host (#10 item 8).

aiohttp does not call the resolver for an IP-literal URL, so these tests go through URLs that are
IP literals: the check that stops them is the one on the address actually connected to.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from receiver.core.config import DEFAULT_DENY_NETWORKS, Settings
from receiver.outbound import subscriptions
from receiver.outbound.sinks.http import DeniedAddress, HttpPool
from tests.subscriber import Subscriber
from tests.support import MASTER_KEY, admin, doitong_body, eventually, publishing, query, running, settings_for

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
FAST = (timedelta(milliseconds=200),) * 20


@pytest.fixture
async def listener() -> AsyncIterator[Subscriber]:
    """A subscriber on 127.0.0.1 and ::1, same port: what 0.0.0.0 and :: reach."""
    server = await Subscriber().start()
    assert server._runner is not None
    await web.TCPSite(server._runner, "::1", server.port).start()
    yield server
    await server.stop()


def _settings(
    database_url: str, home: Path, deny: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> Settings:
    return settings_for(
        database_url,
        home,
        retry_schedule=FAST,
        poll_interval=timedelta(milliseconds=100),
        http_timeout=timedelta(seconds=2),
        lease_timeout=timedelta(seconds=10),
        deny_networks=deny,
    )


async def _subscribe(database_url: str, url: str) -> None:
    await admin(database_url, lambda conn: subscriptions.add(conn, MASTER_KEY, url))


async def _post_event(settings: Settings) -> None:
    async with running(settings) as receiver:
        answer = await receiver.post(doitong_body("job_" + uuid.uuid4().hex[:10], "completed"))
        assert answer.status_code == 200


async def _errors(database_url: str) -> dict[str, str | None]:
    rows = query(
        database_url,
        "SELECT s.url, d.last_error FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id"
        " WHERE d.state <> 'delivered'",
    )
    return {row[0]: row[1] for row in rows}


async def test_unspecified_addresses_do_not_reach_this_host_when_loopback_is_denied(
    database_url: str, tmp_path: Path, listener: Subscriber
) -> None:
    urls = [f"http://0.0.0.0:{listener.port}/v4-any", f"http://[::]:{listener.port}/v6-any"]
    for url in urls:
        await _subscribe(database_url, url)
    # Control: with nothing denied, both URLs do reach the listener on this host.
    open_settings = _settings(database_url, tmp_path, ())
    await _post_event(open_settings)
    async with publishing(open_settings):
        await listener.wait_for(2)
    assert sorted(r.path for r in listener.received) == ["/v4-any", "/v6-any"]

    denying = _settings(database_url, tmp_path, LOOPBACK)
    await _post_event(denying)
    async with publishing(denying):
        assert await eventually(
            lambda: _all_failed(database_url, len(urls)),
        ), await _errors(database_url)
    assert len(listener.received) == 2  # the control's two, nothing since
    errors = await _errors(database_url)
    assert set(errors) == set(urls)
    assert all(error is not None and "denied" in error for error in errors.values()), errors


async def test_ipv6_forms_of_loopback_and_metadata_addresses_are_refused(
    database_url: str, tmp_path: Path, listener: Subscriber
) -> None:
    port = listener.port
    urls = [
        f"http://[::ffff:127.0.0.1]:{port}/mapped",
        f"http://[::127.0.0.1]:{port}/compatible",
        f"http://[64:ff9b::7f00:1]:{port}/nat64-loopback",
        "http://[64:ff9b::a9fe:a9fe]/nat64-metadata",
        "http://[2002:a9fe:a9fe::1]/6to4-metadata",
    ]
    for url in urls:
        await _subscribe(database_url, url)
    settings = _settings(database_url, tmp_path, LOOPBACK + DEFAULT_DENY_NETWORKS)
    await _post_event(settings)
    async with publishing(settings):
        assert await eventually(lambda: _all_failed(database_url, len(urls))), await _errors(database_url)
    assert listener.received == []
    errors = await _errors(database_url)
    assert all(error is not None and "denied" in error for error in errors.values()), errors


async def _all_failed(database_url: str, count: int) -> bool:
    errors = await _errors(database_url)
    return len(errors) == count and all(error is not None for error in errors.values())


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "[::1]", "[::]"])
async def test_the_pool_refuses_ip_literals_that_aiohttp_never_resolves(host: str, listener: Subscriber) -> None:
    pool = HttpPool(timeout=2.0, deny_networks=LOOPBACK, limit=4)
    try:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            async with pool.session.post(f"http://{host}:{listener.port}/direct", data=b"{}"):
                pass
        assert isinstance(caught.value.__cause__, DeniedAddress)
    finally:
        await pool.close()
    assert listener.received == []
