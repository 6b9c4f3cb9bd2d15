"""The `receiver publish` process: the publisher, its /healthz, /readyz and /metrics, and signals.

/healthz says the process is alive and started (an orchestrator restarts it otherwise);
/readyz says whether it can deliver right now: 503 while PostgreSQL or a configured broker
is away, with the reason. The publisher waits for them and recovers by itself, so a
failing /readyz is for dashboards and alerts, not a reason to restart it.

SIGTERM (or Ctrl-C) stops claiming, lets the sends in flight finish, writes
their outcomes back and exits 0.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver.core import background, crypto, db, embedded_uvicorn, metrics
from receiver.core.config import Settings
from receiver.core.errors import DatabaseUnavailable
from receiver.inbound.state import json_response
from receiver.outbound import health, outbox
from receiver.outbound.publisher import Publisher

log = logging.getLogger("receiver.outbound.process")

METRICS_PORT_SETTING = "RECEIVER_METRICS_PORT (--metrics-port)"
# How long the metrics server gets to close its connections at stop.
METRICS_SHUTDOWN = 5.0


def metrics_app(publisher: Publisher) -> Starlette:
    exposition = metrics.Exposition()

    async def healthz(request: Request) -> Response:
        # Liveness only: the publisher may wait for PostgreSQL at start-up for as long as it is
        # away, and an orchestrator must not restart it for that (/readyz says what it waits for).
        return json_response({"status": "ok"}, 200)

    async def metrics_endpoint(request: Request) -> Response:
        try:
            async with db.translated(), publisher.pool.connection() as conn:
                backlog: outbox.Backlog | None = await outbox.backlog(conn)
                subscribers: list[health.State] | None = await health.states(conn)
        except DatabaseUnavailable:
            backlog, subscribers = None, None
        metrics.set_backlog(exposition.gauges, backlog)
        metrics.set_subscriber_health(exposition.gauges, subscribers)
        body, content_type = exposition.render()
        return Response(body, 200, media_type=content_type)

    async def readyz(request: Request) -> Response:
        reasons = unready(publisher)
        if reasons:
            return json_response({"status": "unavailable", "reason": "; ".join(reasons)}, 503)
        return json_response({"status": "ready"}, 200)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics_endpoint)])


def unready(publisher: Publisher) -> list[str]:
    """Why the publisher cannot deliver right now, as its last attempts found: empty when it can."""
    reasons = [] if publisher.ready else ["starting"]
    if not publisher.database.is_up:
        reasons.append(f"database: {publisher.database.reason}")
    for kind, sink in publisher.brokers.items():
        if not sink.connected:
            reasons.append(f"{kind}: not connected to {sink.broker} at {sink.display_url}")
    return reasons


async def publish(settings: Settings, *, concurrency: int, metrics_port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    publisher = Publisher(settings, crypto.master_key(settings), concurrency=concurrency)
    tasks = background.BackgroundTasks(log, stop)
    drained = asyncio.Event()  # the metrics stay up while the sends in flight finish
    if metrics_port:
        # Without /healthz an orchestrator takes the publisher for dead, and /metrics is how
        # an operator sees the backlog: a server that fails (a port in use) stops the publisher
        # (exit code 1).
        serve = functools.partial(_serve_metrics, publisher, settings.host, metrics_port, drained)
        tasks.start("metrics-server", serve, on_failure="stop")
    log.info(
        "publishing (concurrency %d, brokers: %s, metrics on %s)",
        concurrency,
        ", ".join(k for k, v in (("nats", settings.nats_url), ("amqp", settings.amqp_url)) if v) or "none",
        f"{settings.host}:{metrics_port}" if metrics_port else "off",
    )
    try:
        await publisher.run(stop)
    finally:
        drained.set()
        await tasks.stop(grace=METRICS_SHUTDOWN)
    tasks.raise_failure()
    log.info("publisher stopped")


async def _serve_metrics(publisher: Publisher, host: str, port: int, until: asyncio.Event) -> None:
    """/healthz and /metrics until `until` is set; then connections get METRICS_SHUTDOWN to close."""
    async with embedded_uvicorn.serving(
        metrics_app(publisher),
        host=host,
        port=port,
        lifespan="off",
        setting=METRICS_PORT_SETTING,
        timeout_graceful_shutdown=METRICS_SHUTDOWN,
    ):
        await until.wait()
