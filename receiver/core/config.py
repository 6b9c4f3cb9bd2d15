"""Settings, read once from the environment (flags override), typed, failing fast.

Nothing else in the package reads `os.environ`. Every error names the setting
and the fix in one line, so a bad deployment stops at start-up, not at the
first webhook.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

from receiver.core import base64url, durations
from receiver.core.errors import ConfigError

LogFormat = Literal["text", "json"]
OtlpProtocol = Literal["http/protobuf", "grpc"]
ConsoleProcess = Literal["own", "same"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Link-local covers the cloud metadata services (169.254.169.254, fd00:ec2::254 sits in fc00::/7
# on AWS only, so it is named explicitly).
DEFAULT_DENY_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)
DEFAULT_RETRY_SCHEDULE: tuple[timedelta, ...] = tuple(
    durations.parse(part) for part in ["5s", "30s", "2m", "10m", "30m", "1h", "3h", "6h", "12h", "24h"]
)

# Each rule below is checked wherever its value can enter (environment, flags, key file), from here.
MIN_PORT, MAX_PORT = 0, 65535  # 0 asks the OS for any free port
# Doitong's webhook signing secret, whether from DOITONG_WEBHOOK_SECRET or `receiver endpoints`:
# a floor against typos and placeholders, not a strength requirement (Doitong chooses the secret).
MIN_WEBHOOK_SECRET_LENGTH = 8
# Our own bearer tokens (/v1/jobs, the console): we choose them, so they must be hard to guess.
MIN_API_TOKEN_LENGTH = 16
MASTER_KEY_BYTES = 32  # AES-256-GCM


# Every environment variable `Settings.from_env` reads, with its default as written and what it sets:
# `receiver --help` prints this table, and a test keeps it equal to what from_env reads.
ENVIRONMENT: tuple[tuple[str, str, str], ...] = (
    ("DATABASE_URL", "none; run: embedded", "PostgreSQL, postgresql://user@host:5432/db"),
    ("DOITONG_WEBHOOK_SECRET", "none; run: generated", "secret(s) of the default endpoint, comma-separated"),
    ("RECEIVER_MASTER_KEY", "key file in home", "32 bytes, URL-safe base64 (receiver keygen)"),
    ("RECEIVER_HOME", ".receiver", "embedded PostgreSQL, dev key and secret"),
    ("RECEIVER_HOST", "127.0.0.1", "address to bind (--host)"),
    ("RECEIVER_PORT", "8080", "port to bind (--port)"),
    ("RECEIVER_WORKERS", "1", "server worker processes (--workers)"),
    ("RECEIVER_MAX_BODY_BYTES", "1048576", "request body limit"),
    ("RECEIVER_MAX_IDEMPOTENCY_KEY_BYTES", "255", "longest idempotency key header (400 above)"),
    ("RECEIVER_MAX_STORED_HEADER_BYTES", "8192", "headers kept per webhook; the rest left out"),
    ("RECEIVER_MAX_HEADER_BYTES", "16384", "request line + headers (431 above)"),
    ("RECEIVER_HEADER_TIMEOUT", "10s", "a request's head must arrive within this (408)"),
    ("RECEIVER_BODY_TIMEOUT", "10s", "a body may take this + 1s per MIN_RATE bytes (408)"),
    ("RECEIVER_BODY_MIN_RATE", "1024", "bytes/s a slow body must keep up (see above)"),
    ("RECEIVER_KEEPALIVE_TIMEOUT", "5s", "idle keep-alive connections are closed after this"),
    ("RECEIVER_MAX_CONNECTIONS", "2048", "open connections per server process (503 above)"),
    ("RECEIVER_LOG_FORMAT", "text", "text or json"),
    ("RECEIVER_LOG_LEVEL", "info", "debug, info, warning, error (--verbose: debug)"),
    ("RECEIVER_DB_POOL_SIZE", "16", "connections per server worker"),
    ("RECEIVER_DB_TIMEOUT", "5s", "longest wait for a connection"),
    ("RECEIVER_RETRY_AFTER", "5s", "Retry-After sent with 503"),
    ("RECEIVER_ENDPOINT_REFRESH", "2s", "how often endpoints are reloaded"),
    ("RECEIVER_NATS_URL", "none", "NATS JetStream to publish to"),
    ("RECEIVER_NATS_STREAM", "DOITONG", "JetStream stream"),
    ("RECEIVER_NATS_SUBJECT_PREFIX", "doitong", "subject prefix"),
    ("RECEIVER_AMQP_URL", "none", "RabbitMQ to publish to"),
    ("RECEIVER_AMQP_EXCHANGE", "doitong", "topic exchange"),
    ("RECEIVER_DENY_NETWORKS", "metadata ranges", "CIDRs no subscriber may resolve to"),
    ("RECEIVER_RETRY_SCHEDULE", "5s,30s,...,24h", "waits between delivery attempts"),
    ("RECEIVER_HTTP_TIMEOUT", "15s", "a subscriber must answer within this"),
    ("RECEIVER_LEASE_TIMEOUT", "30s", "a dead publisher's claims are taken over after this"),
    ("RECEIVER_POLL_INTERVAL", "1s", "publishers look for work at least this often"),
    ("RECEIVER_PUBLISH_CONCURRENCY", "64", "sends in flight per publisher (--concurrency)"),
    ("RECEIVER_SUBSCRIBER_CONCURRENCY", "16", "most of those one subscriber may hold"),
    ("RECEIVER_BREAKER_FAILURES", "10", "failures in a row that open a subscriber's circuit"),
    ("RECEIVER_BREAKER_COOLOFF", "30s", "first pause of an open circuit (x2 per failed probe, 30m at most)"),
    ("RECEIVER_DISABLE_AFTER", "5d", "a subscriber failing this long without a success is disabled"),
    ("RECEIVER_METRICS_PORT", "9091", "receiver publish's /metrics, 0 = off (--metrics-port)"),
    ("RECEIVER_API_TOKEN", "none (API off)", "bearer token for /v1/jobs"),
    ("RECEIVER_CONSOLE_TOKEN", "none (off); run: generated", "token to sign in to /console/"),
    ("RECEIVER_CONSOLE_PROCESS", "own", "own: pages made by a low-priority child process; same: in the server"),
    ("RECEIVER_PUBLIC_URL", "none", "where Doitong reaches this receiver"),
    ("DOITONG_API_URL", "https://api.doitong.com", "Doitong's API"),
    ("DOITONG_API_KEY", "none", "for submit and reconciliation"),
    ("RECEIVER_STALE_AFTER", "15m", "reconcile jobs unchanged this long"),
    ("RECEIVER_RECONCILE_INTERVAL", "1m", "how often publishers reconcile"),
    ("RECEIVER_UNRESOLVED_AFTER", "1h", "polled jobs unchanged this long: operational.jobs_stale"),
    ("RECEIVER_FORGED_BURST", "20/5m", "401s per endpoint: operational.endpoint_forged_signatures"),
    # Tracing is on when an OTLP endpoint is set; the SDK itself reads the other OTEL_* variables
    # (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_BSP_*, headers...).
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "none (tracing off)", "OTLP collector, e.g. http://127.0.0.1:4318"),
    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "none", "the traces URL itself, e.g. http://c:4318/v1/traces"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", "or grpc (opentelemetry-exporter-otlp-proto-grpc)"),
    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "the above", "protocol for traces only"),
    ("OTEL_SDK_DISABLED", "false", "true: no tracing, whatever else is set"),
)


def environment_help() -> str:
    """The ENVIRONMENT table as `receiver --help` shows it."""
    rows = [("variable", "default", "meaning"), *ENVIRONMENT]
    name_width = max(len(name) for name, _, _ in rows)
    default_width = max(len(default) for _, default, _ in rows)
    lines = [f"  {name:<{name_width}}  {default:<{default_width}}  {meaning}" for name, default, meaning in rows]
    return "settings, read from the environment once at start-up (a flag overrides its variable):\n" + "\n".join(lines)


@dataclass(frozen=True)
class ConnectionLimits:
    """What the public server bounds per connection (receiver.core.http_limits applies it):
    bytes, seconds and counts."""

    max_header_bytes: int = 16 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    body_min_rate: int = 1024
    keepalive_timeout: float = 5.0
    max_connections: int = 2048


@dataclass(frozen=True)
class Settings:
    """Everything the processes need; built by `Settings.from_env`."""

    database_url: str | None = None
    webhook_secrets: tuple[str, ...] = ()
    master_key: bytes | None = None
    home: Path = field(default_factory=lambda: Path(".receiver"))
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 1024 * 1024
    max_idempotency_key_bytes: int = 255
    max_stored_header_bytes: int = 8192
    connection_limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    log_format: LogFormat = "text"
    log_level: str = "INFO"
    db_pool_size: int = 16
    db_timeout: timedelta = timedelta(seconds=5)
    retry_after: timedelta = timedelta(seconds=5)
    endpoint_refresh: timedelta = timedelta(seconds=2)
    nats_url: str | None = None
    nats_stream: str = "DOITONG"
    nats_subject_prefix: str = "doitong"
    amqp_url: str | None = None
    amqp_exchange: str = "doitong"
    deny_networks: tuple[IPNetwork, ...] = DEFAULT_DENY_NETWORKS
    retry_schedule: tuple[timedelta, ...] = DEFAULT_RETRY_SCHEDULE
    http_timeout: timedelta = timedelta(seconds=15)
    lease_timeout: timedelta = timedelta(seconds=30)
    poll_interval: timedelta = timedelta(seconds=1)
    publish_concurrency: int = 64
    subscriber_concurrency: int = 16
    breaker_failures: int = 10
    breaker_cooloff: timedelta = timedelta(seconds=30)
    disable_after: timedelta = timedelta(days=5)
    metrics_port: int = 9091
    api_token: str | None = None
    console_token: str | None = None
    console_process: ConsoleProcess = "own"
    public_url: str | None = None
    doitong_api_url: str = "https://api.doitong.com"
    doitong_api_key: str | None = None
    stale_after: timedelta = timedelta(minutes=15)
    reconcile_interval: timedelta = timedelta(minutes=1)
    unresolved_after: timedelta = timedelta(hours=1)
    forged_burst: Burst | None = field(default_factory=lambda: Burst(20, timedelta(minutes=5)))
    # OpenTelemetry: decided here, once; the SDK reads the rest of its OTEL_* variables at setup.
    tracing: bool = False
    otlp_protocol: OtlpProtocol = "http/protobuf"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        _check_decodable(env)
        http_timeout = _duration(env, "RECEIVER_HTTP_TIMEOUT", "15s")
        lease_timeout = _duration(env, "RECEIVER_LEASE_TIMEOUT", "30s")
        if lease_timeout <= http_timeout:
            raise ConfigError(
                "RECEIVER_LEASE_TIMEOUT: must be longer than RECEIVER_HTTP_TIMEOUT "
                f"({durations.format(http_timeout)}), or a slow send could be taken over and sent twice"
            )
        return cls(
            database_url=_database_url(env.get("DATABASE_URL")),
            webhook_secrets=_secrets(env.get("DOITONG_WEBHOOK_SECRET")),
            master_key=_master_key(env.get("RECEIVER_MASTER_KEY")),
            home=Path(env.get("RECEIVER_HOME") or ".receiver"),
            host=env.get("RECEIVER_HOST") or "127.0.0.1",
            port=_int(env, "RECEIVER_PORT", 8080, low=MIN_PORT, high=MAX_PORT),
            workers=_int(env, "RECEIVER_WORKERS", 1, low=1, high=256),
            max_body_bytes=_int(env, "RECEIVER_MAX_BODY_BYTES", 1024 * 1024, low=1024),
            # Above 1,024 a key could approach PostgreSQL's b-tree entry limit (receiver/inbound/idempotency.py).
            max_idempotency_key_bytes=_int(env, "RECEIVER_MAX_IDEMPOTENCY_KEY_BYTES", 255, low=16, high=1024),
            max_stored_header_bytes=_int(env, "RECEIVER_MAX_STORED_HEADER_BYTES", 8192, low=1024, high=1024 * 1024),
            connection_limits=_connection_limits(env),
            log_format=_log_format(env.get("RECEIVER_LOG_FORMAT")),
            log_level=_log_level(env.get("RECEIVER_LOG_LEVEL")),
            db_pool_size=_int(env, "RECEIVER_DB_POOL_SIZE", 16, low=1, high=1000),
            db_timeout=_duration(env, "RECEIVER_DB_TIMEOUT", "5s"),
            retry_after=_duration(env, "RECEIVER_RETRY_AFTER", "5s"),
            endpoint_refresh=_duration(env, "RECEIVER_ENDPOINT_REFRESH", "2s"),
            nats_url=_broker_url(env.get("RECEIVER_NATS_URL"), "RECEIVER_NATS_URL", ("nats", "tls")),
            nats_stream=_name(env, "RECEIVER_NATS_STREAM", "DOITONG"),
            nats_subject_prefix=_name(env, "RECEIVER_NATS_SUBJECT_PREFIX", "doitong"),
            amqp_url=_broker_url(env.get("RECEIVER_AMQP_URL"), "RECEIVER_AMQP_URL", ("amqp", "amqps")),
            amqp_exchange=_name(env, "RECEIVER_AMQP_EXCHANGE", "doitong"),
            deny_networks=_networks(env.get("RECEIVER_DENY_NETWORKS")),
            retry_schedule=_schedule(env.get("RECEIVER_RETRY_SCHEDULE")),
            http_timeout=http_timeout,
            lease_timeout=lease_timeout,
            poll_interval=_duration(env, "RECEIVER_POLL_INTERVAL", "1s"),
            publish_concurrency=_int(env, "RECEIVER_PUBLISH_CONCURRENCY", 64, low=1, high=4096),
            subscriber_concurrency=_int(env, "RECEIVER_SUBSCRIBER_CONCURRENCY", 16, low=1, high=4096),
            breaker_failures=_int(env, "RECEIVER_BREAKER_FAILURES", 10, low=1, high=1_000_000),
            breaker_cooloff=_positive_duration(env, "RECEIVER_BREAKER_COOLOFF", "30s"),
            disable_after=_positive_duration(env, "RECEIVER_DISABLE_AFTER", "5d"),
            metrics_port=_int(env, "RECEIVER_METRICS_PORT", 9091, low=MIN_PORT, high=MAX_PORT),
            api_token=_token(env.get("RECEIVER_API_TOKEN"), "RECEIVER_API_TOKEN"),
            console_token=_token(env.get("RECEIVER_CONSOLE_TOKEN"), "RECEIVER_CONSOLE_TOKEN"),
            console_process=_console_process(env.get("RECEIVER_CONSOLE_PROCESS")),
            public_url=_http_url(env.get("RECEIVER_PUBLIC_URL"), "RECEIVER_PUBLIC_URL"),
            doitong_api_url=_http_url(env.get("DOITONG_API_URL"), "DOITONG_API_URL") or "https://api.doitong.com",
            doitong_api_key=(env.get("DOITONG_API_KEY") or "").strip() or None,
            stale_after=_duration(env, "RECEIVER_STALE_AFTER", "15m"),
            reconcile_interval=_duration(env, "RECEIVER_RECONCILE_INTERVAL", "1m"),
            unresolved_after=_duration(env, "RECEIVER_UNRESOLVED_AFTER", "1h"),
            forged_burst=_burst(env.get("RECEIVER_FORGED_BURST")),
            tracing=_tracing(env),
            otlp_protocol=_otlp_protocol(env),
        )

    @property
    def retry_after_seconds(self) -> int:
        """RECEIVER_RETRY_AFTER as a `Retry-After` header says it: whole seconds, at least 1."""
        return max(1, round(self.retry_after.total_seconds()))

    def replace(self, **changes: object) -> Settings:
        """A copy with command-line flags applied."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError(
                "DATABASE_URL is not set; set it to postgresql://user@host:5432/db "
                "(or use `receiver run`, which starts an embedded PostgreSQL)"
            )
        return self.database_url


def check_port(port: int, *, setting: str) -> int:
    """`port` when a server can listen on it (0 = any free port); ConfigError naming `setting` otherwise."""
    if not MIN_PORT <= port <= MAX_PORT:
        raise ConfigError(f"{setting}: {port} is not a port number")
    return port


def decode_master_key(text: str) -> bytes:
    """The key in `receiver keygen`'s output; ValueError unless it is MASTER_KEY_BYTES of URL-safe base64."""
    key = base64url.decode(text)
    if len(key) != MASTER_KEY_BYTES:
        raise ValueError(f"{len(key)} bytes, not {MASTER_KEY_BYTES}")
    return key


def _check_decodable(env: Mapping[str, str]) -> None:
    """os.environ hands bytes that are not UTF-8 over as lone surrogates; such a value would fail
    at its first use (the webhook secret on every webhook, the API token on every call), so it
    stops start-up instead."""
    for name, _, _ in ENVIRONMENT:
        value = env.get(name)
        if value is None:
            continue
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ConfigError(f"{name}: the value is not valid UTF-8; set it again as plain text") from None


def _database_url(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    url = value.strip()
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ConfigError(
            f"DATABASE_URL: scheme {scheme!r} is not supported; "
            "use postgresql://user@host:5432/db or postgres://… (?host=/dir for a Unix socket)"
        )
    return "postgresql://" + rest


def _secrets(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    secrets = tuple(part.strip() for part in value.split(",") if part.strip())
    for secret in secrets:
        if len(secret) < MIN_WEBHOOK_SECRET_LENGTH:
            raise ConfigError(
                f"DOITONG_WEBHOOK_SECRET: a secret is shorter than {MIN_WEBHOOK_SECRET_LENGTH} characters; "
                "use the webhook secret from your Doitong dashboard (comma-separate several to rotate)"
            )
    return secrets


def _master_key(value: str | None) -> bytes | None:
    if value is None or not value.strip():
        return None
    try:
        return decode_master_key(value.strip())
    except ValueError:
        raise ConfigError(
            f"RECEIVER_MASTER_KEY: must be {MASTER_KEY_BYTES} random bytes in URL-safe base64; "
            "generate one with `receiver keygen`"
        ) from None


def _int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}: {raw!r} is not a whole number") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name}: {value} is out of range; use a number {bound}")
    return value


def _connection_limits(env: Mapping[str, str]) -> ConnectionLimits:
    def seconds(name: str, default: str) -> float:
        value = _duration(env, name, default).total_seconds()
        if value <= 0:
            raise ConfigError(f"{name}: must be longer than 0s")
        return value

    return ConnectionLimits(
        max_header_bytes=_int(env, "RECEIVER_MAX_HEADER_BYTES", 16 * 1024, low=1024, high=1024 * 1024),
        header_timeout=seconds("RECEIVER_HEADER_TIMEOUT", "10s"),
        body_timeout=seconds("RECEIVER_BODY_TIMEOUT", "10s"),
        body_min_rate=_int(env, "RECEIVER_BODY_MIN_RATE", 1024, low=1),
        keepalive_timeout=seconds("RECEIVER_KEEPALIVE_TIMEOUT", "5s"),
        max_connections=_int(env, "RECEIVER_MAX_CONNECTIONS", 2048, low=1, high=1_000_000),
    )


def _duration(env: Mapping[str, str], name: str, default: str) -> timedelta:
    return durations.parse(env.get(name) or default, setting=name)


def _positive_duration(env: Mapping[str, str], name: str, default: str) -> timedelta:
    value = _duration(env, name, default)
    if value.total_seconds() <= 0:
        raise ConfigError(f"{name}: must be longer than 0s, e.g. {default}")
    return value


def _log_format(value: str | None) -> LogFormat:
    text = (value or "text").strip().lower()
    if text == "json":
        return "json"
    if text == "text":
        return "text"
    raise ConfigError(f"RECEIVER_LOG_FORMAT: {value!r} is not supported; use text or json")


def _console_process(value: str | None) -> ConsoleProcess:
    text = (value or "own").strip().lower()
    if text == "own":
        return "own"
    if text == "same":
        return "same"
    raise ConfigError(f"RECEIVER_CONSOLE_PROCESS: {value!r} is not supported; use own or same")


def _log_level(value: str | None) -> str:
    text = (value or "INFO").strip().upper()
    if text not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"RECEIVER_LOG_LEVEL: {value!r} is not a level; use debug, info, warning or error")
    return text


def _broker_url(value: str | None, name: str, schemes: tuple[str, ...]) -> str | None:
    if value is None or not value.strip():
        return None
    url = value.strip()
    scheme = url.partition("://")[0]
    if "://" not in url or scheme not in schemes:
        accepted = " or ".join(s + "://" for s in schemes)
        raise ConfigError(f"{name}: {scheme!r} is not a supported scheme; use {accepted}")
    return url


def _networks(value: str | None) -> tuple[IPNetwork, ...]:
    if value is None:
        return DEFAULT_DENY_NETWORKS
    networks: list[IPNetwork] = []
    for part in value.split(","):
        if not part.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise ConfigError(
                f"RECEIVER_DENY_NETWORKS: {part.strip()!r} is not a CIDR; write e.g. 169.254.0.0/16,10.0.0.0/8"
            ) from None
    return tuple(networks)


def _schedule(value: str | None) -> tuple[timedelta, ...]:
    if value is None or not value.strip():
        return DEFAULT_RETRY_SCHEDULE
    schedule = tuple(durations.parse(part, setting="RECEIVER_RETRY_SCHEDULE") for part in value.split(","))
    if any(wait.total_seconds() <= 0 for wait in schedule):
        raise ConfigError("RECEIVER_RETRY_SCHEDULE: every wait must be longer than 0s")
    return schedule


def _name(env: Mapping[str, str], name: str, default: str) -> str:
    value = (env.get(name) or default).strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise ConfigError(f"{name}: {value!r} is not a plain name; use letters, digits, '-' or '_'")
    return value


def _token(value: str | None, setting: str) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value.strip()) < MIN_API_TOKEN_LENGTH:
        raise ConfigError(f"{setting}: use at least {MIN_API_TOKEN_LENGTH} random characters (e.g. `receiver keygen`)")
    return value.strip()


@dataclass(frozen=True)
class Burst:
    """So many signature failures on one endpoint within a window (RECEIVER_FORGED_BURST)."""

    failures: int
    window: timedelta


def _burst(value: str | None) -> Burst | None:
    """`20/5m`: 20 or more 401s on one endpoint within 5 minutes; `off` (or 0) turns it off. The
    window is counted in whole minutes (webhook_outcomes keeps minutes)."""
    text = (value or "20/5m").strip().lower()
    if text in ("off", "0"):
        return None
    count, slash, window_text = text.partition("/")
    usage = "write COUNT/WINDOW, e.g. 20/5m (20 or more 401s on one endpoint within 5 minutes), or off"
    if not slash or not (count.isascii() and count.isdigit()) or not 1 <= int(count) <= 1_000_000:
        raise ConfigError(f"RECEIVER_FORGED_BURST: {value!r}: {usage}")
    window = durations.parse(window_text, setting="RECEIVER_FORGED_BURST")
    if window < timedelta(minutes=1) or window > timedelta(days=1) or window.total_seconds() % 60:
        raise ConfigError(f"RECEIVER_FORGED_BURST: the window must be whole minutes, from 1m to 24h ({value!r})")
    return Burst(int(count), window)


def _http_url(value: str | None, name: str) -> str | None:
    if value is None or not value.strip():
        return None
    url = value.strip().rstrip("/")
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise ConfigError(f"{name}: {value!r} is not an http(s) URL, e.g. https://hooks.example.com")
    return url


def _tracing(env: Mapping[str, str]) -> bool:
    """On when an OTLP endpoint is set and OTEL_SDK_DISABLED is not `true` (the specification's
    rule: any other value leaves the SDK enabled). The endpoints are checked here, so a typo stops
    start-up instead of losing every span; the exporter reads them again itself."""
    configured = False
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        value = (env.get(name) or "").strip()
        if not value:
            continue
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ConfigError(f"{name}: {value!r} is not an http(s) URL, e.g. http://127.0.0.1:4318")
        configured = True
    disabled = (env.get("OTEL_SDK_DISABLED") or "").strip().lower() == "true"
    return configured and not disabled


def _otlp_protocol(env: Mapping[str, str]) -> OtlpProtocol:
    name = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    value = (env.get(name) or "").strip()
    if not value:
        name = "OTEL_EXPORTER_OTLP_PROTOCOL"
        value = (env.get(name) or "").strip()
    if value in ("", "http/protobuf"):
        return "http/protobuf"
    if value == "grpc":
        return "grpc"
    raise ConfigError(f"{name}: {value!r} is not supported; use http/protobuf (the default) or grpc")
