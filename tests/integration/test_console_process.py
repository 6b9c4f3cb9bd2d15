"""The console's pages made by a child process (RECEIVER_CONSOLE_PROCESS=own, the default): one
child per server process, at a lower priority, relayed over a Unix socket with the client's
address; started again after a crash; gone when the server stops, even when it is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from receiver.app import create_app
from tests.support import SECRET, Receiver, eventually, free_port, query, running, settings_for

TOKEN = "console-token-for-tests-0123"
BEARER = {"authorization": f"Bearer {TOKEN}"}


def console_children(parent: int) -> list[int]:
    """The console processes whose parent is `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == parent and b"console_child" in command:
            found.append(int(entry.name))
    return found


def ended(pid: int) -> bool:
    """Gone, or a zombie its new parent has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def _socket_directories() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("receiver-console-*"))


def nice_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[16])


@pytest.fixture
async def receiver(database_url: str, tmp_path: Path) -> AsyncIterator[Receiver]:
    async with running(settings_for(database_url, tmp_path, console_token=TOKEN)) as server:
        yield server


async def test_pages_come_from_one_child_at_a_lower_priority(receiver: Receiver) -> None:
    answer = await receiver.client.get(receiver.url + "/console/", headers=BEARER)
    assert answer.status_code == 200 and "Overview" in answer.text
    children = console_children(os.getpid())
    assert len(children) == 1
    assert nice_of(children[0]) >= nice_of(os.getpid()) + 10
    # Webhooks are still this process's: the child has none of its routes.
    assert (await receiver.client.get(receiver.url + "/healthz")).status_code == 200


async def test_the_client_address_is_relayed_and_cannot_be_forged(receiver: Receiver) -> None:
    spoofed = {**BEARER, "x-receiver-console-client": "203.0.113.9", "x-receiver-console-scheme": "https"}
    answer = await receiver.client.post(receiver.url + "/console/subscribers/nope/enable", headers=spoofed)
    assert answer.status_code == 404
    # Signed in over http, whatever the client claims: no Secure cookie (it would not come back).
    login = await receiver.client.post(
        receiver.url + "/console/login",
        data={"token": TOKEN},
        headers={"x-receiver-console-scheme": "https"},
    )
    assert login.status_code == 303
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Secure" not in cookie
    rows = query(receiver.settings.database_url or "", "SELECT client FROM audit_log WHERE action = 'console.login'")
    assert rows == [("127.0.0.1",)]


async def test_a_crashed_child_is_started_again(receiver: Receiver) -> None:
    assert (await receiver.client.get(receiver.url + "/console/", headers=BEARER)).status_code == 200
    [first] = console_children(os.getpid())
    os.kill(first, signal.SIGKILL)

    async def answered_by_another() -> bool:
        answer = await receiver.client.get(receiver.url + "/console/jobs", headers=BEARER)
        return answer.status_code == 200 and console_children(os.getpid()) not in ([], [first])

    assert await eventually(answered_by_another, seconds=30)


async def test_the_child_stops_with_the_server(database_url: str, tmp_path: Path) -> None:
    before = _socket_directories()
    async with running(settings_for(database_url, tmp_path, console_token=TOKEN)) as server:
        assert (await server.client.get(server.url + "/console/", headers=BEARER)).status_code == 200
        [child] = console_children(os.getpid())
        assert len(_socket_directories() - before) == 1
    assert ended(child)
    assert _socket_directories() <= before


async def test_same_process_serves_the_console_itself(database_url: str, tmp_path: Path) -> None:
    settings = settings_for(database_url, tmp_path, console_token=TOKEN, console_process="same")
    async with running(settings) as server:
        assert (await server.client.get(server.url + "/console/", headers=BEARER)).status_code == 200
        assert console_children(os.getpid()) == []


async def test_a_killed_server_leaves_no_console_behind(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DOITONG_WEBHOOK_SECRET": SECRET,
        "RECEIVER_CONSOLE_TOKEN": TOKEN,
        "RECEIVER_HOME": str(tmp_path),
    }
    before = _socket_directories()
    server = subprocess.Popen(
        [sys.executable, "-m", "receiver", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def console_up() -> bool:
                try:
                    return (await client.get("/console/", headers=BEARER)).status_code == 200
                except httpx.TransportError:
                    return False

            assert await eventually(console_up, seconds=30)
        [child] = console_children(server.pid)
        server.kill()
        server.wait()

        async def gone() -> bool:
            return ended(child)

        assert await eventually(gone, seconds=10)
        # Nor its socket's directory, which the server would have removed had it stopped.
        assert _socket_directories() <= before
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


async def test_one_persons_session_never_reaches_anothers_requests(receiver: Receiver) -> None:
    """The relay keeps no cookies: after someone signs in, a browser without a session is still
    sent to the login page."""
    async with httpx.AsyncClient(base_url=receiver.url) as signed_in:
        login = await signed_in.post("/console/login", data={"token": TOKEN})
        assert login.status_code == 303 and (await signed_in.get("/console/jobs")).status_code == 200
        stranger = await receiver.client.get(receiver.url + "/console/jobs", headers={"accept": "text/html"})
        assert stranger.status_code in (302, 303, 307) and "/console/login" in stranger.headers["location"]


async def test_a_client_that_leaves_mid_body_does_not_hold_the_console(receiver: Receiver) -> None:
    """Its body is never relayed: the console would wait for the bytes it was promised, paced,
    with everyone else behind it."""
    host, port = receiver.url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100\r\n\r\ntok"
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await writer.wait_closed()
    started = asyncio.get_running_loop().time()
    answer = await receiver.client.get(receiver.url + "/console/jobs", headers=BEARER, timeout=10)
    assert answer.status_code == 200
    assert asyncio.get_running_loop().time() - started < 5


async def test_relayed_answers_carry_the_servers_date_and_server_headers_once(receiver: Receiver) -> None:
    answer = await receiver.client.get(receiver.url + "/console/", headers=BEARER)
    assert answer.status_code == 200
    # The child's own are left out: what the client sees is the server's (this test's server
    # sends `server: uvicorn`; `receiver serve` sends none).
    assert len(answer.headers.get_list("date")) == 1 and len(answer.headers.get_list("server")) <= 1


def test_an_app_never_started_leaves_no_socket_behind(database_url: str, tmp_path: Path) -> None:
    before = _socket_directories()
    create_app(settings_for(database_url, tmp_path, console_token=TOKEN))
    assert _socket_directories() == before
