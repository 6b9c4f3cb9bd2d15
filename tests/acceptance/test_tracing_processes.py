"""Tracing wired by environment variables alone: `receiver serve` and `receiver publish` as real
processes export over OTLP/HTTP to a small collector in the test, which decodes the protobuf
(ExportTraceServiceRequest) and finds one trace from the signed webhook to the subscriber."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from receiver.inbound import signatures
from receiver.outbound import subscriptions
from tests.subscriber import Subscriber
from tests.support import MASTER_KEY, SECRET, admin, doitong_body, eventually, free_port

RECEIVER = [sys.executable, "-m", "receiver"]


class Collector:
    """POST /v1/traces: keeps every span of every ExportTraceServiceRequest, with its service."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []
        self.content_types: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _export(self, request: web.Request) -> web.Response:
        self.content_types.add(request.content_type)
        exported = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in exported.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((attributes.get("service.name", ""), span) for span in scope_spans.spans)
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    async def start(self) -> Collector:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def named(self, name: str) -> list[Span]:
        return [span for _, span in self.spans if span.name == name]


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    server = await Collector().start()
    yield server
    await server.stop()


@pytest.fixture
async def subscriber() -> AsyncIterator[Subscriber]:
    server = await Subscriber().start()
    yield server
    await server.stop()


def _env(database_url: str, home: Path, collector: Collector, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RECEIVER_", "DOITONG_", "OTEL_"))}
    env.update(
        {
            "DATABASE_URL": database_url,
            "DOITONG_WEBHOOK_SECRET": SECRET,
            "RECEIVER_HOME": str(home),
            "RECEIVER_MASTER_KEY": base64.urlsafe_b64encode(MASTER_KEY).decode(),
            "RECEIVER_POLL_INTERVAL": "200ms",
            "RECEIVER_DENY_NETWORKS": "",
            "RECEIVER_LOG_FORMAT": "json",
            # The standard variables, and nothing else: tracing is on because the endpoint is set.
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
            "OTEL_SERVICE_NAME": "receiver-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
    )
    env.update(values)
    return env


async def test_one_trace_from_a_signed_webhook_to_the_subscriber_reaches_an_otlp_collector(
    database_url: str, tmp_path: Path, collector: Collector, subscriber: Subscriber
) -> None:
    await admin(database_url, lambda c: subscriptions.add(c, MASTER_KEY, subscriber.url()))
    port = free_port()
    env = _env(database_url, tmp_path, collector, RECEIVER_PORT=str(port))
    server = subprocess.Popen([*RECEIVER, "serve"], env=env, stderr=subprocess.PIPE, text=True)
    publisher = subprocess.Popen(
        [*RECEIVER, "publish", "--metrics-port", "0"], env=env, stderr=subprocess.PIPE, text=True
    )
    job = "job_" + uuid.uuid4().hex[:10]
    try:
        async with httpx.AsyncClient(timeout=10) as client:

            async def ready() -> bool:
                try:
                    return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            assert await eventually(ready, seconds=30)
            body = doitong_body(job)
            answer = await client.post(
                f"http://127.0.0.1:{port}/webhooks/doitong",
                content=body,
                headers={"content-type": "application/json", signatures.HEADER: signatures.sign(SECRET, body)},
            )
            assert answer.status_code == 200
        (got,) = await subscriber.wait_for(1, timeout=30)
    finally:
        # SIGTERM: both processes flush the spans they still hold before they exit.
        for process in (server, publisher):
            process.send_signal(signal.SIGTERM)
        logs = {
            name: process.communicate(timeout=30)[1] for name, process in (("serve", server), ("publish", publisher))
        }
    assert server.returncode == 0 and publisher.returncode == 0, logs

    async def exported() -> bool:
        return bool(collector.named("POST")) and bool(collector.named("POST /webhooks/doitong"))

    assert await eventually(exported, seconds=5)
    assert collector.content_types == {"application/x-protobuf"}  # http/protobuf, the default
    assert {service for service, _ in collector.spans} == {"receiver-under-test"}
    (server_span,) = collector.named("POST /webhooks/doitong")
    (ingest,) = collector.named("receiver_ingest")
    (attempt,) = collector.named("POST")
    assert server_span.kind == Span.SPAN_KIND_SERVER and attempt.kind == Span.SPAN_KIND_CLIENT
    # One tree, across two processes: server span -> ingest (in serve) -> attempt (in publish).
    assert ingest.trace_id == server_span.trace_id == attempt.trace_id
    assert ingest.parent_span_id == server_span.span_id
    assert attempt.parent_span_id == ingest.span_id
    # ...and the subscriber can hang its own spans under the attempt.
    assert got.headers["traceparent"].split("-")[1:3] == [attempt.trace_id.hex(), attempt.span_id.hex()]
    # The access log line of the webhook carries the ids of the span it ran in (JSON logs).
    assert f'"trace_id":"{server_span.trace_id.hex()}","span_id":"{server_span.span_id.hex()}"' in logs["serve"]
