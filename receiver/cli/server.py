"""`receiver run | serve | publish | migrate | keygen`: the processes and the schema."""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import errno
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import uvicorn

from receiver.core import config, crypto, db, embedded_postgres, embedded_uvicorn, http_limits, migrate, outage
from receiver.core.config import Settings
from receiver.core.errors import ConfigError, DatabaseUnavailable, ReceiverError, SecretDecryptError
from receiver.inbound import endpoints
from receiver.outbound import process

log = logging.getLogger("receiver.cli.server")

WEBHOOK_SECRET_FILE = "webhook_secret"
CONSOLE_TOKEN_FILE = "console_token"


def register(commands: Any) -> None:
    """Add this module's commands to the `receiver` parser."""
    for name, handler, text in (
        ("run", cmd_run, "all in one: embedded PostgreSQL when DATABASE_URL is unset, migrate, serve, publish"),
        ("serve", cmd_serve, "serve webhooks (uvicorn); DATABASE_URL required"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--host", help="address to bind (env RECEIVER_HOST, default 127.0.0.1)")
        sub.add_argument("--port", type=int, help="port to bind (env RECEIVER_PORT, default 8080)")
        if name == "serve":
            sub.add_argument("--workers", type=int, help="worker processes (env RECEIVER_WORKERS, default 1)")
        sub.set_defaults(handler=handler)

    publish = commands.add_parser("publish", help="drain the outbox to subscribers and brokers")
    publish.add_argument(
        "--concurrency", type=int, help="sends in flight at once (env RECEIVER_PUBLISH_CONCURRENCY, default 64)"
    )
    publish.add_argument(
        "--metrics-port",
        type=int,
        help="port for /healthz and /metrics, 0 = off (env RECEIVER_METRICS_PORT, default 9091)",
    )
    publish.set_defaults(handler=cmd_publish)

    commands.add_parser("migrate", help="bring the database schema to the latest revision").set_defaults(
        handler=cmd_migrate
    )
    commands.add_parser("keygen", help="print a new RECEIVER_MASTER_KEY").set_defaults(handler=cmd_keygen)


def cmd_keygen(settings: Settings, args: argparse.Namespace) -> int:
    print(crypto.generate_key())
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    url = settings.require_database_url()
    print(f"schema at {_migrate(url)}")
    return 0


def _migrate(url: str) -> str | None:
    try:
        return migrate.upgrade(url)
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot migrate: {str(exc.orig).strip().splitlines()[0]}") from None


def _migrate_when_reachable(url: str) -> None:
    """`receiver run` waits for a database that is away at start-up, trying with back-off and
    logging once when it goes and once when it is back (`receiver migrate`, a one-off
    command, fails instead). SIGTERM or Ctrl-C ends the wait."""
    database = outage.Dependency("database", log, max_backoff=10.0)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    while True:
        try:
            _migrate(url)
        except DatabaseUnavailable as exc:
            db.check_configured(exc)
            database.down(exc, doing="migrating at start-up")
            time.sleep(database.next_wait())
        else:
            database.up()
            return


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    settings = _with_flags(settings, args)
    settings.require_database_url()
    _check_listen(settings, workers=settings.workers)
    asyncio.run(_preflight(settings))
    if settings.workers > 1:
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # Workers share counters through files here; removed when the supervisor exits.
            shared = tempfile.mkdtemp(prefix="receiver-metrics-")
            atexit.register(shutil.rmtree, shared, ignore_errors=True)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = shared
        _serve("receiver.app:factory", settings, factory=True, workers=settings.workers)
        return 0
    from receiver.app import create_app

    _serve(create_app(settings), settings)
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    settings = _with_flags(settings, args)
    _check_listen(settings)
    if settings.database_url is None:
        log.info("DATABASE_URL is not set: starting an embedded PostgreSQL under %s", settings.home)
        _server, url = embedded_postgres.start(settings.home)
        settings = settings.replace(database_url=url)
    url = settings.require_database_url()
    _migrate_when_reachable(url)
    if not settings.webhook_secrets:
        settings = settings.replace(webhook_secrets=(_dev_webhook_secret(settings.home),))
    if not settings.console_token:
        settings = settings.replace(console_token=_dev_console_token(settings.home))
    asyncio.run(_preflight(settings))
    public = f"http://{settings.host}:{settings.port}"
    print(
        "\n".join(
            [
                "doitong-receiver is starting",
                f"  webhook URL : {public}/webhooks/doitong",
                f"  secret      : {settings.webhook_secrets[0]}",
                f"  database    : {db.libpq_url(url)}",
                f"  psql        : psql '{db.libpq_url(url)}'",
                f"  metrics     : {public}/metrics",
                # The token rides in the fragment, which the browser never sends: the login page
                # reads it, signs in and drops it from the address bar and history.
                f"  console     : {public}/console/login#token={settings.console_token}",
            ]
        ),
        flush=True,
    )
    from receiver.app import create_app

    app = create_app(settings, with_publisher=True)
    server = uvicorn.Server(uvicorn.Config(app, **_uvicorn_options(settings)))

    def stop_server() -> None:
        server.should_exit = True

    app.stop_server = stop_server
    try:
        signal.signal(signal.SIGTERM, _exit_cleanly)
        server.run()
        if not server.started:
            raise ReceiverError("the server did not start (the lines above say why)")
    finally:
        # The publisher inside failed and stopped the server: exit 1 with its reason.
        app.raise_failure()
    return 0


def _dev_webhook_secret(home: Path) -> str:
    return _kept_in_home(home, WEBHOOK_SECRET_FILE, "whsec_" + secrets.token_urlsafe(24), "DOITONG_WEBHOOK_SECRET")


def _dev_console_token(home: Path) -> str:
    return _kept_in_home(home, CONSOLE_TOKEN_FILE, secrets.token_urlsafe(24), "RECEIVER_CONSOLE_TOKEN")


def _kept_in_home(home: Path, name: str, new_value: str, setting: str) -> str:
    """What `setting` would hold in development: the file `name` under `home`, written with
    `new_value` (mode 0600) the first time."""
    path = home / name
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(new_value + "\n")
    log.warning("%s is not set: generated one and kept it in %s", setting, path)
    return new_value


def _with_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    changes: dict[str, object] = {}
    if getattr(args, "host", None):
        changes["host"] = args.host
    if getattr(args, "port", None) is not None:
        changes["port"] = config.check_port(args.port, setting="--port")
    if getattr(args, "workers", None) is not None:
        if args.workers < 1:
            raise ConfigError("--workers: use 1 or more")
        changes["workers"] = args.workers
    return settings.replace(**changes) if changes else settings


def _check_listen(settings: Settings, *, workers: int = 1) -> None:
    """Fail with one line naming the setting when the server could not listen, before
    anything starts (uvicorn would print a burst of lines and exit 3).

    Binds probe sockets the way uvicorn will: one process (uvloop's create_server) binds
    every address the host resolves to, IPv6 ones v6-only; `--workers N` binds one socket
    itself, IPv6 only when the host has a colon, dual-stack."""
    host, port = settings.host, settings.port
    family = socket.AF_UNSPEC if workers == 1 else (socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        found = socket.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"RECEIVER_HOST (--host): cannot resolve {host!r} ({exc})") from None
    addresses = list(dict.fromkeys((info[0], info[4]) for info in found))
    if workers > 1:
        addresses = addresses[:1]
    with contextlib.ExitStack() as probes:
        for address_family, address in addresses:
            probe = probes.enter_context(socket.socket(address_family, socket.SOCK_STREAM))
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if address_family == socket.AF_INET6 and workers == 1:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                port_trouble = exc.errno in (errno.EADDRINUSE, errno.EACCES)
                setting = "RECEIVER_PORT (--port)" if port_trouble else "RECEIVER_HOST (--host)"
                shown = f"[{address[0]}]" if address_family == socket.AF_INET6 else address[0]
                raise ConfigError(f"{setting}: cannot listen on {shown}:{port} ({exc.strerror})") from None


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _serve(app: Any, settings: Settings, **extra: Any) -> None:
    """uvicorn, with SIGTERM ending the process with status 0 after the graceful
    shutdown (uvicorn re-raises the signal it caught; with the default handler the
    process would die before atexit hooks, such as stopping the embedded
    PostgreSQL, could run)."""
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(app, **_uvicorn_options(settings), **extra)


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    limits = http_limits.fit_open_files(settings.connection_limits)
    http_limits.configure(limits)  # workers (receiver.app:factory) configure their own
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop" if sys.platform != "win32" else "asyncio",
        "http": http_limits.LimitedHttpToolsProtocol,
        "timeout_keep_alive": limits.keepalive_timeout,
        "access_log": False,
        "log_config": None,
        "server_header": False,
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
    }


async def _preflight(settings: Settings) -> None:
    """Fail fast on a master key that cannot open the stored secrets, and say
    plainly when the default endpoint has no secret at all."""
    key = crypto.master_key(settings)
    engine = db.create_engine(settings.require_database_url(), pool_size=1, timeout=settings.db_timeout)
    try:
        async with db.begin(engine) as conn:
            stored = await endpoints.load_active(conn, key)
    except SecretDecryptError as exc:
        raise ConfigError(f"RECEIVER_MASTER_KEY: {exc}; set the key the secrets were stored with") from None
    except DatabaseUnavailable as exc:
        db.check_configured(exc)
        log.warning("database not reachable at start-up (%s); answering 503 until it is", exc)
        return
    except sa.exc.ProgrammingError:
        log.warning("the schema is missing; run `receiver migrate` (answering 503 until then)")
        return
    finally:
        await engine.dispose()
    if not settings.webhook_secrets and endpoints.DEFAULT not in stored:
        log.warning(
            "DOITONG_WEBHOOK_SECRET is not set and no 'default' endpoint is stored: "
            "POST /webhooks/doitong answers 404 (endpoints: %s)",
            ", ".join(sorted(stored)) or "none",
        )


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    concurrency = args.concurrency if args.concurrency is not None else settings.publish_concurrency
    if concurrency < 1:
        raise ConfigError("--concurrency: use 1 or more")
    port = config.check_port(
        args.metrics_port if args.metrics_port is not None else settings.metrics_port, setting="--metrics-port"
    )
    settings.require_database_url()
    if port:
        # A port in use is bad configuration: one line and exit 2 before anything starts,
        # not a failed background task after the publisher began its work.
        embedded_uvicorn.check_listen(settings.host, port, setting=process.METRICS_PORT_SETTING)
    # uvloop, as `receiver serve` runs on: a publisher spends most of its time in the event loop.
    loop_factory = None
    if sys.platform != "win32":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(process.publish(settings, concurrency=concurrency, metrics_port=port))
    return 0
