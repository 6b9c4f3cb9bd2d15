"""`receiver simulate`: the simulated Doitong API over real HTTP, with a real webhook target.

No database: the simulator runs behind a real uvicorn in the test's event loop
and sends webhooks to tests.subscriber.Subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import stamina

from receiver.core.errors import SignatureError
from receiver.inbound import signatures
from receiver.simulator import Account, Simulator, SimulatorConfig, pricing, running, webhooks
from tests import support
from tests.subscriber import Received, Subscriber

SECRET = "sim-webhook-secret"
KEY = "sk_test_pro"
GENERATE = (
    "mutation Generate($input: GenerateInput!) "
    "{ generate(input: $input) { id status type provider url metadata creditCost createdAt } }"
)
# Every field of the documented `data.avatar` shape (a selection set is answered as selected).
AVATAR = "query Avatar($id: ID!) { avatar(id: $id) { id status url webhookUrl duration createdAt } }"
TEXT = "Hello, welcome to our platform!"
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
WEBHOOK_KEYS = ["id", "status", "url", "service", "createdAt", "completedAt", "metadata"]
RUN_MAIN = [sys.executable, "-m", "receiver", "simulate"]


class FakeClock:
    """Wall time that moves only when the test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Sim:
    simulator: Simulator
    url: str
    client: httpx.AsyncClient

    async def graphql(self, query: str, variables: dict[str, Any], key: str | None = KEY) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return await self.client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)

    async def generate(self, key: str = KEY, **fields: Any) -> httpx.Response:
        return await self.graphql(GENERATE, {"input": generate_input(**fields)}, key)

    async def avatar(self, job_id: str, key: str = KEY) -> httpx.Response:
        return await self.graphql(AVATAR, {"id": job_id}, key)

    async def stats(self) -> dict[str, Any]:
        answer = await self.client.get("/_simulator/stats")
        assert answer.status_code == 200
        document: dict[str, Any] = answer.json()
        return document


def generate_input(
    text: str = TEXT, avatar_id: str | None = "professional-1", webhook_url: str | None = None, **top: Any
) -> dict[str, Any]:
    """The documented GenerateInput, with a webhookUrl when given."""
    document: dict[str, Any] = {
        "type": "AVATAR",
        "provider": "hedra",
        "input": {"text": text, "avatarId": avatar_id},
        "options": {"voice": "en-US-neural"},
    }
    if webhook_url is not None:
        document["webhookUrl"] = webhook_url
    document.update(top)
    return document


@contextlib.asynccontextmanager
async def simulated(*accounts: Account, **changes: Any) -> AsyncIterator[Sim]:
    settings: dict[str, Any] = {"latency": 0.1, "retry_base": 0.02, "seed": 7}
    settings.update(changes)
    config = SimulatorConfig(accounts=accounts or (Account(KEY),), webhook_secret=SECRET, **settings)
    async with running(config) as (simulator, url), httpx.AsyncClient(base_url=url, timeout=10) as client:
        yield Sim(simulator, url, client)


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    server = await Subscriber().start()
    yield server
    await server.stop()


def headers_of(item: Received) -> dict[str, str]:
    return {k.lower(): v for k, v in item.headers.items()}


def genuine(item: Received) -> bool:
    try:
        signatures.verify([headers_of(item)["x-doitong-signature"]], item.body, [SECRET])
    except SignatureError:
        return False
    return True


def statuses(items: list[Received]) -> list[str]:
    return [orjson.loads(item.body)["status"] for item in items]


async def settle(sim: Sim) -> None:
    """Every webhook the simulator scheduled has been sent."""
    assert await sim.simulator.wait_idle(timeout=10)


# --- generating --------------------------------------------------------------------------------


async def test_generate_over_graphql_answers_the_documented_shape_and_charges() -> None:
    async with simulated(latency=0.2) as sim:
        answer = await sim.generate()
        assert answer.status_code == 200
        assert answer.headers["x-ratelimit-limit"] == "60"
        assert answer.headers["x-ratelimit-remaining"] == "59"
        job = answer.json()["data"]["generate"]
        assert re.fullmatch(r"[a-z0-9]{12}", job["id"])
        assert job["status"] == "processing"
        assert (job["type"], job["provider"], job["url"]) == ("AVATAR", "hedra", None)
        assert ISO_Z.fullmatch(job["createdAt"])
        # 31 characters: 50 + (50 * 31) // 450 = 53 credits.
        assert job["creditCost"] == 53 == pricing.cost(TEXT)
        assert job["metadata"]["avatarId"] == "professional-1"
        assert sim.simulator.credits(KEY) == 10_000 - 53

        early = (await sim.avatar(job["id"])).json()["data"]["avatar"]
        assert early == {
            "id": job["id"],
            "status": "processing",
            "url": None,
            "webhookUrl": None,
            "duration": None,
            "createdAt": job["createdAt"],
        }
        await asyncio.sleep(0.3)
        done = (await sim.avatar(job["id"])).json()["data"]["avatar"]
        assert done["status"] == "completed"
        assert done["url"] == f"https://cdn.doitong.com/outputs/{job['id']}.mp4"
        assert done["duration"] == round(len(TEXT) / 15, 2)


async def test_generate_over_rest_and_poll_its_status() -> None:
    async with simulated(latency=0.2) as sim:
        body = {
            "service": "hedra",
            "text": TEXT,
            "avatarId": "professional-1",
            "voice": "en-US-neural",
            "webhookUrl": "https://example.com/hook",
        }
        answer = await sim.client.post("/v1/avatar", json=body, headers={"X-API-Key": KEY})
        assert answer.status_code == 200
        assert "x-ratelimit-reset" in answer.headers
        avatar = answer.json()["data"]["avatar"]
        assert list(avatar) == ["id", "status", "url", "webhookUrl", "createdAt"]
        assert (avatar["status"], avatar["url"], avatar["webhookUrl"]) == (
            "processing",
            None,
            "https://example.com/hook",
        )
        # Either header works on either endpoint.
        polled = await sim.client.get(f"/v1/avatar/{avatar['id']}", headers={"Authorization": f"Bearer {KEY}"})
        assert polled.json()["data"]["avatar"]["status"] == "processing"
        await asyncio.sleep(0.3)
        polled = await sim.client.get(f"/v1/avatar/{avatar['id']}", headers={"X-API-Key": KEY})
        assert polled.status_code == 200
        assert polled.json()["data"]["avatar"]["status"] == "completed"


async def test_the_javascript_examples_generate_avatar_alias_is_accepted() -> None:
    async with simulated() as sim:
        query = (
            "mutation GenerateAvatar($input: AvatarGenerationInput!) "
            "{ generateAvatar(input: $input) { id status videoUrl } }"
        )
        variables = {"input": {"service": "hedra", "text": TEXT, "avatarId": "professional-1", "voice": "x"}}
        answer = await sim.graphql(query, variables)
        assert answer.status_code == 200
        result = answer.json()["data"]["generateAvatar"]
        assert (result["status"], result["videoUrl"]) == ("processing", None)


async def test_unknown_ids_are_not_found_and_other_accounts_jobs_too() -> None:
    async with simulated(Account(KEY), Account("other")) as sim:
        job_id = (await sim.generate()).json()["data"]["generate"]["id"]
        for key, wanted in ((KEY, job_id), ("other", job_id), (KEY, "nosuchjob123")):
            answer = await sim.avatar(wanted, key=key)
            if key == KEY and wanted == job_id:
                assert answer.json()["data"]["avatar"]["id"] == job_id
                continue
            # GraphQL: HTTP 200, data.avatar null, an error with code NOT_FOUND.
            assert answer.status_code == 200
            document = answer.json()
            assert document["data"] == {"avatar": None}
            assert document["errors"][0]["extensions"]["code"] == "NOT_FOUND"
            assert document["errors"][0]["path"] == ["avatar"]
            rest = await sim.client.get(f"/v1/avatar/{wanted}", headers={"X-API-Key": key})
            assert rest.status_code == 404
            assert rest.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"


# --- errors ------------------------------------------------------------------------------------


async def test_missing_or_unknown_keys_get_401_and_do_not_count_toward_the_rate_limit() -> None:
    unauthenticated = {"errors": [{"message": "Missing or invalid API key", "extensions": {"code": "UNAUTHENTICATED"}}]}
    async with simulated(Account("free-key", "free")) as sim:
        attempts = [
            sim.client.post("/graphql", json={"query": GENERATE, "variables": {"input": generate_input()}}),
            sim.generate(key="wrong"),
            sim.client.post("/v1/avatar", json={}, headers={"X-API-Key": "wrong"}),
            sim.client.get("/v1/avatar/abc", headers={"Authorization": "Basic free-key"}),
        ]
        for attempt in attempts:
            answer = await attempt
            assert answer.status_code == 401
            assert answer.json() == unauthenticated
            assert "x-ratelimit-remaining" not in answer.headers
        answer = await sim.generate(key="free-key")
        assert answer.status_code == 200
        assert answer.headers["x-ratelimit-limit"] == "10"
        assert answer.headers["x-ratelimit-remaining"] == "9"
        assert (await sim.stats())["requests"]["unauthenticated"] == 4


async def test_insufficient_credits_is_402_and_charges_nothing() -> None:
    async with simulated(Account("poor", "pro", 60)) as sim:
        long_text = "x" * 600  # 40 s of speech: 200 + (300 * 150) // 1350 = 233 credits
        answer = await sim.generate(key="poor", text=long_text)
        assert answer.status_code == 402
        assert answer.json() == {
            "errors": [
                {
                    "message": "Insufficient credits for this operation",
                    "extensions": {"code": "INSUFFICIENT_CREDITS", "creditsRequired": 233, "creditsAvailable": 60},
                }
            ]
        }
        assert answer.headers["x-ratelimit-remaining"] == "59"
        assert sim.simulator.credits("poor") == 60
        assert sim.simulator.stats()["jobs"]["created"] == 0
        short = await sim.generate(key="poor", text="x" * 45)  # 50 + 5 = 55 credits
        assert short.status_code == 200
        assert short.json()["data"]["generate"]["creditCost"] == 55
        assert sim.simulator.credits("poor") == 5


async def test_the_plans_rate_limit_answers_429_until_the_window_resets() -> None:
    clock = FakeClock()
    start = clock.now
    async with simulated(Account("free-key", "free"), clock=clock) as sim:
        headers = {"X-API-Key": "free-key"}
        for used in range(1, 11):
            answer = await sim.client.get("/v1/avatar/nosuchjob123", headers=headers)
            assert answer.status_code == 404
            assert answer.headers["x-ratelimit-limit"] == "10"
            assert answer.headers["x-ratelimit-remaining"] == str(10 - used)
            assert answer.headers["x-ratelimit-reset"] == str(math.ceil(start + 60))
        clock.now = start + 20
        limited = await sim.client.get("/v1/avatar/nosuchjob123", headers=headers)
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "40"
        assert limited.headers["x-ratelimit-remaining"] == "0"
        assert limited.json() == {
            "errors": [{"message": "Rate limit exceeded", "extensions": {"code": "RATE_LIMITED", "retryAfter": 40}}]
        }
        assert (await sim.generate(key="free-key")).status_code == 429  # GraphQL shares the window
        clock.now = start + 60
        fresh = await sim.client.get("/v1/avatar/nosuchjob123", headers=headers)
        assert fresh.status_code == 404
        assert fresh.headers["x-ratelimit-remaining"] == "9"
        assert fresh.headers["x-ratelimit-reset"] == str(math.ceil(start + 120))
        assert (await sim.stats())["requests"]["rate_limited"] == 2


async def test_a_plans_concurrent_job_limit_answers_429_without_charging() -> None:
    async with simulated(Account("free-key", "free"), latency=5) as sim:
        assert (await sim.generate(key="free-key")).status_code == 200
        left = sim.simulator.credits("free-key")
        answer = await sim.generate(key="free-key")
        assert answer.status_code == 429
        assert answer.json()["errors"][0]["extensions"]["code"] == "CONCURRENCY_LIMIT"
        assert 1 <= int(answer.headers["retry-after"]) <= 5
        assert sim.simulator.credits("free-key") == left


@pytest.mark.parametrize(
    ("path", "document"),
    [
        ("/graphql", {"query": GENERATE, "variables": {"input": generate_input(text="")}}),
        ("/graphql", {"query": GENERATE, "variables": {"input": generate_input(avatar_id=None)}}),
        ("/graphql", {"query": GENERATE, "variables": {"input": generate_input(webhook_url="ftp://x/hook")}}),
        ("/graphql", {"query": GENERATE, "variables": {"input": generate_input(provider="heygen")}}),
        ("/graphql", {"query": GENERATE, "variables": {"input": generate_input(type="IMAGE")}}),
        ("/graphql", {"query": GENERATE, "variables": {"input": generate_input(text="x" * 1801)}}),
        ("/graphql", {"query": GENERATE, "variables": {}}),
        ("/graphql", {"query": "query { me { id } }"}),
        ("/graphql", {"variables": {}}),
        ("/graphql", [1, 2]),
        ("/v1/avatar", {"service": "hedra", "avatarId": "a"}),
        ("/v1/avatar", {"service": "hedra", "text": TEXT}),
        ("/v1/avatar", {"service": "other", "text": TEXT, "avatarId": "a"}),
        ("/v1/avatar", {"service": "hedra", "text": TEXT, "avatarId": "a", "webhookUrl": "not a url"}),
    ],
)
async def test_invalid_requests_are_400_and_charge_nothing(path: str, document: Any) -> None:
    async with simulated() as sim:
        answer = await sim.client.post(path, json=document, headers={"Authorization": f"Bearer {KEY}"})
        assert answer.status_code == 400, answer.text
        error = answer.json()["errors"][0]
        assert error["extensions"] == {"code": "BAD_REQUEST"}
        assert error["message"]
        assert sim.simulator.credits(KEY) == 10_000


async def test_a_body_that_is_not_json_is_400() -> None:
    async with simulated() as sim:
        answer = await sim.client.post("/v1/avatar", content=b"{nope", headers={"X-API-Key": KEY})
        assert answer.status_code == 400
        assert answer.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


@pytest.mark.parametrize("path", ["/graphql", "/v1/avatar"])
async def test_a_client_that_hangs_up_mid_body_leaves_no_traceback(path: str, caplog: pytest.LogCaptureFixture) -> None:
    head = f"POST {path} HTTP/1.1\r\nHost: sim\r\nX-API-Key: {KEY}\r\n"
    head += "Content-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    part = b'{"query": "mutat'
    assert len(part) == 16
    async with simulated() as sim:
        parts = urlsplit(sim.url)
        assert parts.hostname is not None and parts.port is not None
        with caplog.at_level(logging.DEBUG):
            with socket.create_connection((parts.hostname, parts.port), timeout=5) as raw:
                raw.sendall(head.encode() + part)
            deadline = time.monotonic() + 5
            while sim.simulator.request_stats.total == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.2)  # the handler has seen the hang-up and finished
            assert (await sim.client.get("/healthz")).status_code == 200
        stats = (await sim.stats())["requests"]
    assert [r for r in caplog.records if r.exc_info] == []
    assert "Traceback" not in caplog.text
    assert "ClientDisconnect" not in caplog.text
    assert (stats["total"], stats["disconnected"], stats["ok"]) == (1, 1, 0)


async def test_fail_rate_answers_500_internal_error_with_rate_headers() -> None:
    async with simulated(fail_rate=1.0) as sim:
        answer = await sim.generate()
        assert answer.status_code == 500
        assert answer.json() == {
            "errors": [{"message": "Internal server error", "extensions": {"code": "INTERNAL_ERROR"}}]
        }
        assert answer.headers["x-ratelimit-remaining"] == "59"
        assert sim.simulator.credits(KEY) == 10_000
        assert (await sim.stats())["requests"]["injected_errors"] == 1


# --- webhooks ----------------------------------------------------------------------------------


async def test_webhooks_arrive_signed_in_order_with_the_documented_body(subscriber: Subscriber) -> None:
    async with simulated(latency=0.15) as sim:
        job = (await sim.generate(webhook_url=subscriber.url())).json()["data"]["generate"]
        await settle(sim)
    got = await subscriber.wait_for(2)
    assert len(got) == 2
    assert all(genuine(item) for item in got)
    processing, completed = (orjson.loads(item.body) for item in got)
    assert list(processing) == WEBHOOK_KEYS == list(completed)
    assert processing == {
        "id": job["id"],
        "status": "processing",
        "url": None,
        "service": "hedra",
        "createdAt": job["createdAt"],
        "completedAt": None,
        "metadata": {"duration": None, "width": None, "height": None},
    }
    assert completed["status"] == "completed"
    assert completed["url"] == f"https://cdn.doitong.com/outputs/{job['id']}.mp4"
    assert ISO_Z.fullmatch(completed["completedAt"])
    assert completed["completedAt"] >= completed["createdAt"] == job["createdAt"]
    assert completed["metadata"] == {"duration": round(len(TEXT) / 15, 2), "width": 1280, "height": 720}
    first, second = (headers_of(item) for item in got)
    assert first["content-type"] == "application/json"
    assert first["x-doitong-delivery"] != second["x-doitong-delivery"]
    assert got[1].at - got[0].at > 0.05  # the terminal one waits for the latency


async def test_the_webhook_url_may_be_given_in_options(subscriber: Subscriber) -> None:
    async with simulated() as sim:
        answer = await sim.generate(options={"voice": "v", "webhookUrl": subscriber.url("/opt")})
        assert answer.status_code == 200
        await settle(sim)
    assert statuses(await subscriber.wait_for(2, path="/opt")) == ["processing", "completed"]


async def test_a_failing_target_gets_the_webhook_again_with_the_same_delivery_id(subscriber: Subscriber) -> None:
    subscriber.script["/hook"] = [500, 500]
    async with simulated() as sim:
        await sim.generate(webhook_url=subscriber.url())
        await settle(sim)
        stats = await sim.stats()
    got = subscriber.received
    assert [item.status for item in got] == [500, 500, 200, 200]
    assert statuses(got) == ["processing", "processing", "processing", "completed"]
    assert len({headers_of(item)["x-doitong-delivery"] for item in got[:3]}) == 1
    assert got[0].body == got[1].body == got[2].body
    assert stats["webhooks"]["retries"] == 2
    assert stats["webhooks"]["attempts"] == 4
    assert stats["webhooks"]["delivered"] == 2


async def test_a_target_that_never_answers_2xx_is_given_up(subscriber: Subscriber) -> None:
    subscriber.default = 503
    async with simulated(max_attempts=3, retry_base=0.01) as sim:
        await sim.generate(webhook_url=subscriber.url())
        await settle(sim)
        stats = sim.simulator.stats()["webhooks"]
    assert len(subscriber.received) == 6
    assert (stats["sent"], stats["gave_up"], stats["delivered"], stats["retries"]) == (2, 2, 0, 4)


async def test_retries_wait_retry_base_then_twice_as_long_each_time(subscriber: Subscriber) -> None:
    subscriber.default = 503
    waits: list[float] = []

    def record(details: stamina.instrumentation.RetryDetails) -> None:  # stamina calls it before each wait
        if isinstance(details.caused_by, webhooks.Refused):
            waits.append(details.wait_for)

    stamina.instrumentation.set_on_retry_hooks([record])
    try:
        async with simulated(max_attempts=4, retry_base=0.03, latency=5) as sim:
            await sim.generate(webhook_url=subscriber.url())
            got = await subscriber.wait_for(4)
    finally:
        stamina.instrumentation.set_on_retry_hooks(None)
    assert waits == pytest.approx([0.03, 0.06, 0.12])  # no jitter
    assert got[3].at - got[0].at >= 0.2  # and waited for


async def test_a_failed_job_sends_a_failed_webhook_and_says_failed(subscriber: Subscriber) -> None:
    async with simulated(failure_rate=1.0) as sim:
        job_id = (await sim.generate(webhook_url=subscriber.url())).json()["data"]["generate"]["id"]
        await settle(sim)
        assert (await sim.avatar(job_id)).json()["data"]["avatar"]["status"] == "failed"
        assert (await sim.stats())["jobs"]["failed"] == 1
    failed = orjson.loads(subscriber.received[-1].body)
    assert (failed["status"], failed["url"]) == ("failed", None)
    assert ISO_Z.fullmatch(failed["completedAt"])


async def test_duplicate_rate_sends_each_delivery_twice(subscriber: Subscriber) -> None:
    async with simulated(duplicate_rate=1.0) as sim:
        await sim.generate(webhook_url=subscriber.url())
        await settle(sim)
        stats = await sim.stats()
    got = subscriber.received
    assert statuses(got) == ["processing", "processing", "completed", "completed"]
    for first, again in ((got[0], got[1]), (got[2], got[3])):
        assert first.body == again.body
        assert headers_of(first)["x-doitong-delivery"] == headers_of(again)["x-doitong-delivery"]
        assert headers_of(first)["x-doitong-signature"] == headers_of(again)["x-doitong-signature"]
    assert all(genuine(item) for item in got)
    assert (stats["webhooks"]["sent"], stats["webhooks"]["duplicates"]) == (2, 2)


async def test_drop_rate_never_sends_the_terminal_webhook_but_the_job_completes(subscriber: Subscriber) -> None:
    async with simulated(drop_rate=1.0) as sim:
        job_id = (await sim.generate(webhook_url=subscriber.url())).json()["data"]["generate"]["id"]
        await settle(sim)
        await asyncio.sleep(0.05)
        assert statuses(subscriber.received) == ["processing"]
        assert (await sim.avatar(job_id)).json()["data"]["avatar"]["status"] == "completed"
        stats = await sim.stats()
    assert (stats["webhooks"]["sent"], stats["webhooks"]["dropped"]) == (1, 1)
    assert stats["jobs"]["completed"] == 1


async def test_bad_signature_rate_adds_a_forged_copy_the_receiver_must_refuse(subscriber: Subscriber) -> None:
    async with simulated(bad_signature_rate=1.0) as sim:
        await sim.generate(webhook_url=subscriber.url())
        await settle(sim)
        stats = await sim.stats()
    got = subscriber.received
    assert len(got) == 4
    assert [genuine(item) for item in got] == [False, True, False, True]
    assert got[0].body == got[1].body
    assert headers_of(got[0])["x-doitong-delivery"] == headers_of(got[1])["x-doitong-delivery"]
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", headers_of(got[0])["x-doitong-signature"])
    assert statuses([item for item in got if genuine(item)]) == ["processing", "completed"]
    assert (stats["webhooks"]["forged"], stats["webhooks"]["sent"]) == (2, 2)


async def test_reorder_rate_sends_the_terminal_webhook_before_the_processing_one(subscriber: Subscriber) -> None:
    async with simulated(reorder_rate=1.0) as sim:
        await sim.generate(webhook_url=subscriber.url())
        await settle(sim)
        stats = await sim.stats()
    assert statuses(subscriber.received) == ["completed", "processing"]
    assert all(genuine(item) for item in subscriber.received)
    assert stats["webhooks"]["reordered"] == 1


async def test_a_seeded_simulator_injects_the_same_faults_again(subscriber: Subscriber) -> None:
    async def faults(seed: int) -> list[str]:
        """Which webhooks (in sending order) were duplicated."""
        subscriber.received.clear()
        async with simulated(duplicate_rate=0.5, seed=seed, latency=0.05) as sim:
            await sim.generate(webhook_url=subscriber.url())
            await settle(sim)
        return statuses(subscriber.received)

    first = await faults(3)
    assert first == await faults(3)
    assert 2 <= len(first) <= 4


async def test_jobs_accepted_before_start_send_their_webhooks_once_started(subscriber: Subscriber) -> None:
    simulator = Simulator(SimulatorConfig(accounts=(Account(KEY),), webhook_secret=SECRET, latency=0.05))
    transport = httpx.ASGITransport(app=simulator.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        body = {"service": "hedra", "text": TEXT, "avatarId": "a", "webhookUrl": subscriber.url()}
        assert (await client.post("/v1/avatar", json=body, headers={"X-API-Key": KEY})).status_code == 200
    await asyncio.sleep(0.1)
    assert subscriber.received == []
    async with simulator:
        assert await simulator.wait_idle(timeout=10)
    assert statuses(subscriber.received) == ["processing", "completed"]


# --- the command -------------------------------------------------------------------------------


def test_the_simulate_command_serves_until_sigterm_and_exits_0() -> None:
    port = support.free_port()
    command = [*RUN_MAIN, "--port", str(port), "--api-key", "sk_cli:starter:500"]
    command += ["--webhook-secret", SECRET, "--latency", "100ms", "--duplicate-rate", "0.5", "--seed", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "simulator not up in time"
            time.sleep(0.05)
        document = {"query": GENERATE, "variables": {"input": generate_input()}}
        answer = httpx.post(url + "/graphql", json=document, headers={"Authorization": "Bearer sk_cli"}, timeout=5)
        assert answer.status_code == 200
        assert answer.headers["x-ratelimit-limit"] == "30"
        assert answer.json()["data"]["generate"]["creditCost"] == 53
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert f"base URL       : {url}" in out
    assert "sk_cli (starter, 500 credits)" in out
    assert "simulator stopped: 1 jobs" in out


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--webhook-secret", "s"], "--api-key"),
        (["--api-key", "k", "--webhook-secret", "s", "--drop-rate", "1.5"], "--drop-rate"),
    ],
)
def test_the_simulate_command_refuses_bad_flags_in_one_line(flags: list[str], named: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOITONG_", "RECEIVER_"))}
    result = subprocess.run([*RUN_MAIN, *flags], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"receiver: config error: {named}")
