"""Subscribers: HTTP endpoints of the team's services, plus one row per configured broker.

HTTP subscribers get Standard Webhooks signatures: a `whsec_` secret (HMAC,
`v1`) and optionally an Ed25519 key pair (`v1a`). Secrets and private keys are
sealed with the master key like endpoint secrets. `rotate-secret` keeps the
previous secret signing for a grace period, so requests carry both signatures
while consumers switch over (the Standard Webhooks header allows several).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import sqlalchemy as sa
import yarl
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.core import crypto, tables
from receiver.core.errors import ConfigError, NotFound
from receiver.outbound import health, operational

Kind = Literal["http", "nats", "amqp"]
SECRET_PREFIX = "whsec_"
PUBLIC_KEY_PREFIX = "whpk_"
_EVENT_TYPE = re.compile(r"job\.[a-z0-9_]+")
JOB_WILDCARD = "job.*"
# The HMAC key inside a subscriber's whsec_ secret, in bytes. Not the inbound secret's
# character floor (config.MIN_WEBHOOK_SECRET_LENGTH): here we sign, so the key must be strong.
MIN_SECRET_KEY_BYTES = 16


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription as the publisher uses it (secrets opened)."""

    id: str
    kind: Kind
    url: str
    secret: bytes | None  # HMAC key (the base64-decoded part of whsec_…)
    previous_secret: bytes | None
    previous_secret_expires_at: datetime | None
    signing_key: Ed25519PrivateKey | None
    state: str
    # Health as last loaded: whether its circuit is open (until when), and whether it may be failing.
    circuit_open_until: datetime | None = None
    failing: bool = False


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    id: str
    kind: str
    url: str
    event_types: list[str] | None
    services: list[str] | None
    state: str
    disabled_reason: str | None
    public_key: str | None
    pending: int
    dead: int
    delivered: int | None  # None unless list_all was asked to count them (it reads every delivery)
    rate: str | None = None  # e.g. 50/s
    consecutive_failures: int = 0
    circuit_open_until: datetime | None = None  # set while the circuit is open or a probe is out


@dataclass(frozen=True, slots=True)
class Added:
    id: str
    secret: str
    public_key: str | None


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_…` secret, as the standardwebhooks library reads it."""
    if not secret.startswith(SECRET_PREFIX):
        raise ConfigError("--secret: must look like whsec_<base64>, e.g. one printed by `receiver subscribers add`")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < MIN_SECRET_KEY_BYTES:
        raise ConfigError(
            f"--secret: the part after whsec_ must be base64 of at least {MIN_SECRET_KEY_BYTES} random bytes"
        )
    return key


def check_url(url: str) -> str:
    """The one gate for a subscriber URL, wherever one enters (`subscribers add`, the demo, the
    Python API): refuse here, once, with one line, what would otherwise be stored and then
    retried for two days, or reach the HTTP client as something other than the operator meant.

    Accepts an absolute http(s) URL whose host is a name, a dotted-quad IPv4 address or a
    bracketed IPv6 address, with an optional port 1-65535. Refuses control characters, spaces
    and other invisible characters anywhere (CRLF would split a request or a log line),
    `user:pass@` (credentials in a URL end up in logs and `subscribers list`), and anything the
    HTTP client (yarl, under aiohttp) would read differently from this check.
    Returns the URL unchanged.
    """
    if len(url) > MAX_URL_LENGTH:
        raise _bad_url(url, f"longer than {MAX_URL_LENGTH} characters")
    for char in url:
        category = unicodedata.category(char)
        if char == " ":
            raise _bad_url(url, "contains a space; a host has none, and a path or query writes it %20")
        if category == "Cc":
            raise _bad_url(url, f"contains the control character U+{ord(char):04X}")
        if category[0] in "CZ":  # format characters (zero-width…), other spaces, separators
            raise _bad_url(url, f"contains the invisible character U+{ord(char):04X}")
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in ("http", "https"):
        raise _bad_url(url, "use an absolute http:// or https:// URL")
    netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in netloc:
        raise _bad_url(url, "user:password@ is not allowed (credentials in a URL end up in logs)")
    host, port = _split_host_port(url, netloc)
    try:
        parsed = yarl.URL(url)
        client_host, client_port = parsed.raw_host, parsed.explicit_port
    except ValueError as exc:  # the HTTP client could never send to it
        raise _bad_url(url, f"not a URL the HTTP client can use ({exc})") from None
    if client_host != host or client_port != port:
        raise _bad_url(url, "the host or port is ambiguous; write it plainly")
    return url


# A URL is an operator's line, not a document; browsers and proxies cap near here too.
MAX_URL_LENGTH = 2048
_HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_DOTTED = re.compile(r"[0-9.]+")


def _split_host_port(url: str, netloc: str) -> tuple[str, int | None]:
    """The host (as the HTTP client writes it: lower case, IDNA, IPv6 compressed) and the port."""
    if netloc.startswith("["):
        inside, bracket, after = netloc[1:].partition("]")
        if not bracket:
            raise _bad_url(url, "the [ before an IPv6 address has no closing ]")
        if "%" in inside:
            raise _bad_url(url, "IPv6 zone ids (%…) are not supported")
        try:
            host = str(ipaddress.IPv6Address(inside))
        except ValueError:
            raise _bad_url(url, f"[{inside}] is not an IPv6 address") from None
    else:
        name, colon, port_part = netloc.partition(":")
        after = colon + port_part
        if "[" in netloc or "]" in netloc:
            raise _bad_url(url, "[ ] belong around an IPv6 address only")
        host = _check_name(url, name)
    if not after:
        return host, None
    port_text = after.removeprefix(":")
    if not after.startswith(":") or not (port_text.isascii() and port_text.isdigit()):
        raise _bad_url(url, f"{after!r} after the host is not :PORT")
    if not 1 <= int(port_text) <= 65535:
        raise _bad_url(url, f"port {port_text} is not between 1 and 65535")
    return host, int(port_text)


def _check_name(url: str, name: str) -> str:
    if not name:
        raise _bad_url(url, "has no host")
    if _DOTTED.fullmatch(name):  # 127.1, 2130706433 and 0177.0.0.1 mean different hosts to different parsers
        try:
            return str(ipaddress.IPv4Address(name))
        except ValueError:
            raise _bad_url(url, f"{name} is not a dotted-quad IPv4 address (write e.g. 192.0.2.10)") from None
    try:
        ascii_name = yarl.URL.build(scheme="http", host=name).raw_host or ""
    except (ValueError, UnicodeError):
        raise _bad_url(url, f"{name!r} is not a host name") from None
    labels = ascii_name.removesuffix(".").split(".")
    if len(ascii_name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise _bad_url(url, f"{name!r} is not a host name (letters, digits, - and . only)")
    return ascii_name


def _bad_url(url: str, problem: str) -> ConfigError:
    # repr() keeps CR, LF and other controls on one line; the cut keeps the line short.
    shown = repr(url[:100]) + ("…" if len(url) > 100 else "")
    return ConfigError(f"subscriber URL {shown}: {problem}")


def check_event_types(types: list[str] | None) -> list[str] | None:
    """The event types a subscription asks for, or None for every job event. `job.*` is every
    job event, `operational.*` every operational event; operational events go only to a
    subscription that names them (or the wildcard), so a misspelt one is refused here rather
    than silently never delivered. Job types are open-ended (job.<any status>)."""
    if not types:
        return None
    for event_type in types:
        if event_type.startswith(operational.PREFIX):
            if event_type != operational.WILDCARD and event_type not in operational.TYPES:
                raise ConfigError(
                    f"--events: {event_type!r} is not an operational event type; use {operational.WILDCARD} "
                    f"or one of {', '.join(operational.TYPES)}"
                )
        elif event_type != JOB_WILDCARD and not _EVENT_TYPE.fullmatch(event_type):
            raise ConfigError(
                f"--events: {event_type!r} is not an event type; use e.g. job.completed,job.failed, "
                f"{JOB_WILDCARD} or {operational.WILDCARD}"
            )
    return sorted(set(types))


def public_key_text(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()


def new_id() -> str:
    return "sub_" + secrets.token_hex(8)


async def add(
    conn: AsyncConnection,
    master_key: bytes,
    url: str,
    *,
    secret: str | None = None,
    event_types: list[str] | None = None,
    services: list[str] | None = None,
    ed25519: bool = False,
) -> Added:
    """Add an HTTP subscriber; it receives events created from now on."""
    check_url(url)
    secret = secret or new_secret()
    secret_key(secret)
    subscription_id = new_id()
    signing_key = Ed25519PrivateKey.generate() if ed25519 else None
    public_key = public_key_text(signing_key) if signing_key else None
    await conn.execute(
        tables.subscriptions.insert().values(
            id=subscription_id,
            kind="http",
            url=url,
            secret_sealed=crypto.seal(master_key, secret, context=subscription_id),
            signing_key_sealed=(
                crypto.seal(master_key, _private_text(signing_key), context=subscription_id + ":ed25519")
                if signing_key
                else None
            ),
            public_key=public_key,
            event_types=check_event_types(event_types),
            services=sorted(set(services)) if services else None,
        )
    )
    return Added(subscription_id, secret, public_key)


async def rotate_secret(conn: AsyncConnection, master_key: bytes, subscription_id: str, grace: timedelta) -> str:
    """A new whsec_ secret; the current one keeps signing alongside it for `grace`."""
    table = tables.subscriptions
    row = (
        await conn.execute(
            sa.select(table.c.secret_sealed, table.c.kind).where(table.c.id == subscription_id).with_for_update()
        )
    ).first()
    if row is None:
        raise NotFound(f"subscription {subscription_id!r} does not exist")
    if row.kind != "http":
        raise ConfigError(f"subscription {subscription_id!r} is a {row.kind} broker; it has no signing secret")
    secret = new_secret()
    await conn.execute(
        table.update()
        .where(table.c.id == subscription_id)
        .values(
            previous_secret_sealed=row.secret_sealed,
            previous_secret_expires_at=sa.func.now() + grace,
            secret_sealed=crypto.seal(master_key, secret, context=subscription_id),
            updated_at=sa.func.now(),
        )
    )
    return secret


async def set_enabled(conn: AsyncConnection, subscription_id: str, enabled: bool, reason: str | None = None) -> None:
    table = tables.subscriptions
    result = await conn.execute(
        table.update()
        .where(table.c.id == subscription_id)
        .values(
            state="enabled" if enabled else "disabled",
            disabled_reason=None if enabled else (reason or "disabled by an operator"),
            updated_at=sa.func.now(),
            # Enabled again: a fresh start, whatever the breaker or auto-disable had counted.
            **(
                {"consecutive_failures": 0, "failing_since": None, "circuit_open_until": None}
                | {"circuit_cooloff": None, "circuit_probe": None}
                if enabled
                else {}
            ),
        )
    )
    if result.rowcount == 0:
        raise NotFound(f"subscription {subscription_id!r} does not exist")


async def remove(conn: AsyncConnection, subscription_id: str) -> None:
    result = await conn.execute(tables.subscriptions.delete().where(tables.subscriptions.c.id == subscription_id))
    if result.rowcount == 0:
        raise NotFound(f"subscription {subscription_id!r} does not exist")


async def list_all(conn: AsyncConnection, *, count_delivered: bool = False) -> list[SubscriptionInfo]:
    """Every subscription with its pending and dead deliveries counted, each a walk of a partial
    index (ix_deliveries_order, ix_deliveries_dead): milliseconds on 3,000,000 deliveries.
    `count_delivered` counts the delivered ones too, which reads every delivery (over a second at
    that size): `receiver subscribers list` does; the console shows what the last hour and day
    delivered (deliveries.figures) instead, since its overview asks every few seconds."""
    s, d = tables.subscriptions, tables.deliveries

    def count(state: str) -> sa.ScalarSelect[int]:
        return sa.select(sa.func.count()).where(d.c.subscription_id == s.c.id, d.c.state == state).scalar_subquery()

    delivered = (
        sa.select(d.c.subscription_id, sa.func.count().label("n"))
        .where(d.c.state == "delivered")
        .group_by(d.c.subscription_id)
        .subquery()
    )
    rows = await conn.execute(
        sa.select(
            s.c.id,
            s.c.kind,
            s.c.url,
            s.c.event_types,
            s.c.services,
            s.c.state,
            s.c.disabled_reason,
            s.c.public_key,
            count("pending"),
            count("dead"),
            sa.func.coalesce(delivered.c.n, 0) if count_delivered else sa.null(),
            s.c.rate_limit,
            s.c.rate_period,
            s.c.consecutive_failures,
            s.c.circuit_open_until,
        )
        .select_from(s.outerjoin(delivered, delivered.c.subscription_id == s.c.id) if count_delivered else s)
        .order_by(s.c.created_at)
    )
    return [
        SubscriptionInfo(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            row[9],
            row[10],
            rate=str(health.rate_of(row[11], row[12]) or "") or None,
            consecutive_failures=row[13],
            circuit_open_until=row[14],
        )
        for row in rows
    ]


async def load(conn: AsyncConnection, master_key: bytes) -> dict[str, Subscription]:
    """Every subscription with its secrets opened, for the publisher."""
    table = tables.subscriptions
    rows = await conn.execute(
        sa.select(
            table.c.id,
            table.c.kind,
            table.c.url,
            table.c.secret_sealed,
            table.c.previous_secret_sealed,
            table.c.previous_secret_expires_at,
            table.c.signing_key_sealed,
            table.c.state,
            table.c.circuit_open_until,
            (table.c.consecutive_failures > 0) | table.c.failing_since.is_not(None),
        )
    )
    loaded: dict[str, Subscription] = {}
    for row in rows:
        secret = (
            secret_key(crypto.open_sealed(master_key, row.secret_sealed, context=row.id)) if row.secret_sealed else None
        )
        previous = (
            secret_key(crypto.open_sealed(master_key, row.previous_secret_sealed, context=row.id))
            if row.previous_secret_sealed
            else None
        )
        signing_key = (
            Ed25519PrivateKey.from_private_bytes(
                base64.b64decode(crypto.open_sealed(master_key, row.signing_key_sealed, context=row.id + ":ed25519"))
            )
            if row.signing_key_sealed
            else None
        )
        loaded[row.id] = Subscription(
            id=row.id,
            kind=row.kind,
            url=row.url,
            secret=secret,
            previous_secret=previous,
            previous_secret_expires_at=row.previous_secret_expires_at,
            signing_key=signing_key,
            state=row.state,
            circuit_open_until=row[8],
            failing=bool(row[9]),
        )
    return loaded


async def ensure_broker(conn: AsyncConnection, kind: Literal["nats", "amqp"], display_url: str) -> None:
    """The configured broker as a subscription (id = kind), so its deliveries have rows,
    retries and order like any subscriber. Created once: it receives events from then on."""
    table = tables.subscriptions
    await conn.execute(
        insert(table)
        .values(id=kind, kind=kind, url=display_url)
        .on_conflict_do_update(index_elements=[table.c.id], set_={"url": display_url, "updated_at": sa.func.now()})
    )


def _private_text(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    return base64.b64encode(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode()
