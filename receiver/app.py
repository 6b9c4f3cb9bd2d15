"""The ASGI application: routes, start-up and shut-down."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable

import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from receiver.console import process, site
from receiver.console.guard import PREFIX, STATIC
from receiver.console.state import Console
from receiver.core import crypto, db, http_limits, logs, metrics, migrate, minutes, outage, tracing
from receiver.core.background import BackgroundTasks, TaskFailed
from receiver.core.config import Settings
from receiver.core.errors import DatabaseUnavailable, ReceiverError
from receiver.core.logs import AccessLog
from receiver.core.metrics import Exposition
from receiver.core.notify import Notifier
from receiver.inbound import endpoints, handler, outcomes
from receiver.inbound.state import AppState, json_response
from receiver.jobs import api, openapi
from receiver.outbound import forgeries, health, outbox
from receiver.outbound.publisher import Publisher

log = logging.getLogger("receiver.app")


def create_app(settings: Settings, *, with_publisher: bool = False) -> ReceiverApp:
    """The receiver's ASGI app for `settings` (DATABASE_URL must be set).

    `with_publisher` runs the outbox publisher in the same process (`receiver run`)."""
    database_url = settings.require_database_url()
    console = Console(settings)
    # The pages made by a child process (receiver/console/process.py), or by this one.
    console_process = None
    if console.enabled and settings.console_process == "own":
        console_process = process.ConsoleProcess(settings, [sys.executable, "-c", _CONSOLE_CHILD])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = _state(settings, database_url, pool_size=settings.db_pool_size)
        pool = state.pool
        app.state.receiver = state
        await pool.open(wait=False)
        # PostgreSQL away: one line when it goes and one when it is back (not one per pool
        # attempt or per refresh); requests get 503 and /readyz says why meanwhile.
        outage.quiet_pool_retries()
        database = outage.Dependency("database", log)
        await _refresh_endpoints(state, database)
        # Everything allocated so far lives as long as the process: keep it out of the
        # collector's full passes, which otherwise show up as tail-latency spikes.
        gc.freeze()
        # Both loops can recover from anything (the next pass reloads / notifies again): restart.
        tasks = BackgroundTasks(log, asyncio.Event())
        tasks.start("endpoint-refresh", lambda: _refresh_loop(state, database), on_failure="restart")
        tasks.start("outbox-notify", state.notifier.run, on_failure="restart")
        # Requests per minute and outcome (the console's charts) from this process's counter, and
        # in each flush's transaction the forged-signature burst check; a flush that fails loses
        # nothing (kept for the next one).
        burst_check = forgeries.check_flushed(settings.forged_burst)
        tasks.start("webhook-outcomes", lambda: outcomes.run(pool, after=burst_check), on_failure="restart")
        # The per-minute counts the console reads: past minutes' rows folded into one per key.
        tasks.start("console-minutes", lambda: minutes.run(pool), on_failure="restart")
        if console_process is not None:
            tasks.start("console-process", console_process.run, on_failure="restart")
        stop_publisher = asyncio.Event()
        publishing = None
        if with_publisher:
            # `receiver run` without its publisher would accept webhooks that nobody delivers:
            # a publisher that fails stops the server too, and the command exits 1.
            publishing = asyncio.create_task(
                Publisher(settings, state.master_key).run(stop_publisher), name="publisher"
            )
            publishing.add_done_callback(receiver_app.publisher_ended)
        try:
            yield
        finally:
            stop_publisher.set()
            if publishing is not None:
                with contextlib.suppress(Exception):  # kept by publisher_ended
                    await publishing
            await console.close()
            await tasks.stop()
            if console_process is not None:
                await console_process.close()
            await pool.close()
            await state.engine.dispose()

    routes: list[BaseRoute] = [
        Route("/v1/jobs", api.jobs, methods=["GET", "POST"]),  # one route: a 405's Allow lists both
        Route("/v1/jobs/{job_id}", api.get_job, methods=["GET"]),
        Route("/openapi.json", openapi_document, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    if console_process is None:
        routes.append(site.mount(console))  # /console/: 404 unless RECEIVER_CONSOLE_TOKEN is set
    starlette = Starlette(routes=routes, lifespan=lifespan)
    receiver_app = ReceiverApp(starlette, traced=settings.tracing, console=console_process)
    return receiver_app


def _state(settings: Settings, database_url: str, *, pool_size: int) -> AppState:
    pool = db.create_pool(database_url, size=pool_size, timeout=settings.db_timeout)
    return AppState(
        settings=settings,
        secrets=endpoints.SecretCache(settings.webhook_secrets),
        pool=pool,
        engine=db.create_engine(database_url, pool_size=4, timeout=settings.db_timeout),
        exposition=Exposition(),
        head_revision=migrate.head_revision(),
        master_key=crypto.master_key(settings),
        notifier=Notifier(pool),
    )


# What the server runs as its console process (RECEIVER_CONSOLE_PROCESS=own).
_CONSOLE_CHILD = "from receiver.app import console_child; console_child()"


def create_console_app(settings: Settings) -> ASGIApp:
    """The console alone, as its child process serves it: its pages and actions, no webhooks
    and no background work of the server's (receiver/console/process.py)."""
    database_url = settings.require_database_url()
    console = Console(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = _state(settings, database_url, pool_size=2)
        app.state.receiver = state
        await state.pool.open(wait=False)
        outage.quiet_pool_retries()
        try:
            yield
        finally:
            await console.close()
            await state.pool.close()
            await state.engine.dispose()

    starlette = Starlette(routes=[site.mount(console)], lifespan=lifespan)
    return process.trusted(process.Paced(starlette, skip=STATIC))


def console_child() -> None:
    """The console process's main: settings from stdin, the server's socket, uvicorn until
    SIGTERM or the server goes away."""
    settings = process.child_settings()
    logs.setup(settings)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # not a second "Started server process"
    sock = process.child_socket()
    config = uvicorn.Config(
        create_console_app(settings),
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(process.STOP_GRACE),
        server_header=False,  # the relay's answer has the server's own headers
        date_header=False,
    )
    uvicorn.Server(config).run(sockets=[sock])


class ReceiverApp:
    """The ASGI app: webhooks go straight to their handler, everything else (and the
    lifespan) through Starlette; every request gets one access log line."""

    def __init__(self, starlette: Starlette, *, traced: bool = False, console: ASGIApp | None = None) -> None:
        self.starlette = starlette
        self._console = console  # the relay to the console process, when it has one
        self._logged = AccessLog(self._dispatch)
        # Tracing on: a server span around the request and its log line. Off: not even a check.
        self._entry: ASGIApp = tracing.ServerSpans(self._logged, _route) if traced else self._logged
        # Set by whoever runs the server (`receiver run`): how to stop it when the publisher
        # inside it has failed. `failure` keeps what failed, for the exit code.
        self.stop_server: Callable[[], None] | None = None
        self.failure: ReceiverError | None = None

    def publisher_ended(self, task: asyncio.Task[None]) -> None:
        """The in-process publisher's task ended: by itself only when it failed."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, TaskFailed):
            self.failure = exc  # the background task that failed has logged why
        elif isinstance(exc, ReceiverError):
            log.error("the publisher stopped: %s", exc)
            self.failure = exc
        else:
            log.error("the publisher failed; stopping the server", exc_info=exc)
            self.failure = TaskFailed(f"the publisher failed ({type(exc).__name__}: {exc}); stopped")
        if self.stop_server is not None:
            self.stop_server()

    def raise_failure(self) -> None:
        """Raise what stopped the server, if something did."""
        if self.failure is not None:
            raise self.failure

    @property
    def state(self) -> State:
        return self.starlette.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if handler.matches(scope):
            await handler.asgi(self.starlette.state.receiver, scope, receive, send)
        elif self._console is not None and _is_console(scope):
            await self._console(scope, receive, send)
        else:
            await self.starlette(scope, receive, send)


def _is_console(scope: Scope) -> bool:
    path: str = scope.get("path", "")
    return scope["type"] == "http" and (path == PREFIX or path.startswith(PREFIX + "/"))


def _route(scope: Scope) -> str | None:
    """The route a request matched, for its server span's name (after the request ran)."""
    if handler.matches(scope):
        return handler.route(scope)
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


def factory() -> ReceiverApp:
    """Entry point for `uvicorn --factory` workers: settings from the environment. A worker
    is a fresh process, so it sets up its own logging (else its request lines are lost)."""
    settings = Settings.from_env()
    logs.setup(settings)
    http_limits.configure(http_limits.fit_open_files(settings.connection_limits))
    tracing.setup(settings)
    return create_app(settings)


async def openapi_document(request: Request) -> Response:
    return json_response(openapi.document(), 200)


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"}, 200)


async def readyz(request: Request) -> Response:
    state: AppState = request.app.state.receiver
    try:
        async with db.begin(state.engine) as conn:
            current = await conn.run_sync(migrate.current_revision_sync)
    except DatabaseUnavailable as exc:
        return json_response({"status": "unavailable", "reason": f"database: {exc}"}, 503)
    # A schema ahead of this code is the next release's, migrated before this replica is replaced
    # (a rolling deploy): still ready, or every old replica would leave the load balancer at once.
    standing = migrate.standing(current)
    if standing == "behind":
        reason = f"schema at {current or 'nothing'}, expected {state.head_revision}; run `receiver migrate`"
        return json_response({"status": "unavailable", "reason": reason}, 503)
    if not state.secrets.loaded:
        return json_response({"status": "unavailable", "reason": "endpoints not loaded yet"}, 503)
    ready: dict[str, str | None] = {"status": "ready", "revision": current}
    if standing == "ahead":
        ready["note"] = (
            f"schema at {current} is newer than this release's {state.head_revision}: "
            "the next release's migration has run; this process keeps working until it is replaced"
        )
    return json_response(ready, 200)


async def metrics_endpoint(request: Request) -> Response:
    state: AppState = request.app.state.receiver
    try:
        async with db.translated(), state.pool.connection() as conn:
            backlog = await outbox.backlog(conn)
            subscribers: list[health.State] | None = await health.states(conn)
    except DatabaseUnavailable:
        backlog, subscribers = None, None
    metrics.set_backlog(state.exposition.gauges, backlog)
    metrics.set_subscriber_health(state.exposition.gauges, subscribers)
    body, content_type = state.exposition.render()
    return Response(body, 200, media_type=content_type)


async def _refresh_endpoints(state: AppState, database: outage.Dependency) -> None:
    try:
        async with db.begin(state.engine) as conn:
            await endpoints.refresh(state.secrets, conn, state.master_key)
        database.up()
    except DatabaseUnavailable as exc:
        database.down(exc, doing="loading endpoints")
    except ReceiverError as exc:
        log.error("could not load endpoints: %s", exc)
    except sa.exc.ProgrammingError as exc:
        log.error("could not load endpoints (schema missing? run `receiver migrate`): %s", exc.orig)


async def _refresh_loop(state: AppState, database: outage.Dependency) -> None:
    interval = state.settings.endpoint_refresh.total_seconds()
    while True:
        await asyncio.sleep(interval)
        await _refresh_endpoints(state, database)
