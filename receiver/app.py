"""The ASGI application: routes, start-up and shut-down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from receiver import crypto, db, endpoints, inbound, metrics, migrate, outbox
from receiver.config import Settings
from receiver.errors import DatabaseUnavailable, ReceiverError
from receiver.logs import AccessLog
from receiver.metrics import Exposition
from receiver.publisher import Publisher
from receiver.state import AppState, json_response

log = logging.getLogger("receiver.app")


def create_app(settings: Settings, *, with_publisher: bool = False) -> Starlette:
    """The receiver's ASGI app for `settings` (DATABASE_URL must be set).

    `with_publisher` runs the outbox publisher in the same process (`receiver run`)."""
    database_url = settings.require_database_url()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = db.create_pool(database_url, size=settings.db_pool_size, timeout=settings.db_timeout)
        engine = db.create_engine(database_url, pool_size=2, timeout=settings.db_timeout)
        state = AppState(
            settings=settings,
            secrets=endpoints.SecretCache(settings.webhook_secrets),
            pool=pool,
            engine=engine,
            exposition=Exposition(),
            head_revision=migrate.head_revision(),
            master_key=crypto.master_key(settings),
        )
        app.state.receiver = state
        await pool.open(wait=False)
        await _refresh_endpoints(state)
        refresher = asyncio.create_task(_refresh_loop(state), name="endpoint-refresh")
        stop_publisher = asyncio.Event()
        publishing = (
            asyncio.create_task(Publisher(settings, state.master_key).run(stop_publisher), name="publisher")
            if with_publisher
            else None
        )
        try:
            yield
        finally:
            stop_publisher.set()
            if publishing is not None:
                await publishing
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await pool.close()
            await engine.dispose()

    routes = [
        Route("/webhooks/doitong", inbound.receive, methods=["POST"]),
        Route("/webhooks/doitong/{endpoint}", inbound.receive, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(AccessLog)
    return app


def factory() -> Starlette:
    """Entry point for `uvicorn --factory` workers: settings from the environment."""
    return create_app(Settings.from_env())


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"}, 200)


async def readyz(request: Request) -> Response:
    state: AppState = request.app.state.receiver
    try:
        async with db.begin(state.engine) as conn:
            current = await conn.run_sync(migrate.current_revision_sync)
    except DatabaseUnavailable as exc:
        return json_response({"status": "unavailable", "reason": f"database: {exc}"}, 503)
    if current != state.head_revision:
        reason = f"schema at {current or 'nothing'}, expected {state.head_revision}; run `receiver migrate`"
        return json_response({"status": "unavailable", "reason": reason}, 503)
    if not state.secrets.loaded:
        return json_response({"status": "unavailable", "reason": "endpoints not loaded yet"}, 503)
    return json_response({"status": "ready", "revision": current}, 200)


async def metrics_endpoint(request: Request) -> Response:
    state: AppState = request.app.state.receiver
    try:
        async with db.translated(), state.pool.connection() as conn:
            backlog = await outbox.backlog(conn)
    except DatabaseUnavailable:
        backlog = None
    metrics.set_backlog(state.exposition.gauges, backlog)
    body, content_type = state.exposition.render()
    return Response(body, 200, media_type=content_type)


async def _refresh_endpoints(state: AppState) -> None:
    try:
        async with db.begin(state.engine) as conn:
            await endpoints.refresh(state.secrets, conn, state.master_key)
    except DatabaseUnavailable as exc:
        log.warning("could not load endpoints: %s", exc)
    except ReceiverError as exc:
        log.error("could not load endpoints: %s", exc)
    except sa.exc.ProgrammingError as exc:
        log.error("could not load endpoints (schema missing? run `receiver migrate`): %s", exc.orig)


async def _refresh_loop(state: AppState) -> None:
    interval = state.settings.endpoint_refresh.total_seconds()
    while True:
        await asyncio.sleep(interval)
        await _refresh_endpoints(state)
