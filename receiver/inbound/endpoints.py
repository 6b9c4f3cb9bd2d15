"""Webhook endpoints and their signing secrets (encrypted at rest), plus the
in-memory view of them that the server verifies against.

Rotation keeps the old secret valid for a grace period next to the new one.
Running servers reload the table every RECEIVER_ENDPOINT_REFRESH (2 s by
default), so `add`, `rotate` and `remove` take effect without a restart.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from receiver.core import config, crypto, tables
from receiver.core.errors import AlreadyExists, ConfigError, NotFound, SecretDecryptError

log = logging.getLogger("receiver.inbound.endpoints")

DEFAULT = "default"
MAX_NAME_LENGTH = 63  # the webhook handler answers 404 to a longer URL segment without a lookup
_NAME = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{MAX_NAME_LENGTH - 1}}}")


@dataclass(frozen=True, slots=True)
class ActiveSecret:
    secret: str
    expires_at: datetime | None  # None: valid until rotated
    created_at: datetime | None = None  # None: from DOITONG_WEBHOOK_SECRET

    @property
    def fingerprint(self) -> str:
        """What may be shown of the secret: the first 12 hex digits of its SHA-256, which an
        operator compares with `printf %s "$SECRET" | sha256sum | cut -c1-12`."""
        return fingerprint(self.secret)


def fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    name: str
    active_secrets: int
    created_at: datetime
    updated_at: datetime
    grace_ends_at: datetime | None


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"endpoint name {name!r}: use 1-63 lowercase letters, digits, '-' or '_' "
            "(it becomes the URL segment /webhooks/doitong/NAME)"
        )
    return name


def check_secret(secret: str) -> str:
    if len(secret.strip()) < config.MIN_WEBHOOK_SECRET_LENGTH:
        raise ConfigError(f"--secret: use at least {config.MIN_WEBHOOK_SECRET_LENGTH} characters")
    return secret.strip()


async def add(conn: AsyncConnection, key: bytes, name: str, secret: str) -> None:
    check_name(name)
    inserted = await conn.execute(
        sa.dialects.postgresql.insert(tables.endpoints)
        .values(name=name)
        .on_conflict_do_nothing()
        .returning(tables.endpoints.c.name)
    )
    if inserted.first() is None:
        raise AlreadyExists(f"endpoint {name!r} exists already; use `receiver endpoints rotate`")
    await conn.execute(
        tables.endpoint_secrets.insert().values(
            endpoint=name, secret_sealed=crypto.seal(key, check_secret(secret), context=name)
        )
    )


async def rotate(conn: AsyncConnection, key: bytes, name: str, secret: str, grace: timedelta) -> datetime:
    """Make `secret` the endpoint's secret; the ones active now stay valid for `grace`.

    Returns when the grace period ends."""
    table = tables.endpoint_secrets
    row = (
        await conn.execute(
            sa.select(tables.endpoints.c.name, sa.func.now()).where(tables.endpoints.c.name == name).with_for_update()
        )
    ).first()
    if row is None:
        raise NotFound(f"endpoint {name!r} does not exist; add it with `receiver endpoints add`")
    now: datetime = row[1]
    grace_ends = now + grace
    await conn.execute(table.delete().where(table.c.endpoint == name, table.c.expires_at <= now))
    await conn.execute(
        table.update()
        .where(table.c.endpoint == name)
        .values(expires_at=sa.func.least(sa.func.coalesce(table.c.expires_at, grace_ends), grace_ends))
    )
    await conn.execute(
        table.insert().values(endpoint=name, secret_sealed=crypto.seal(key, check_secret(secret), context=name))
    )
    await conn.execute(
        tables.endpoints.update().where(tables.endpoints.c.name == name).values(updated_at=sa.func.now())
    )
    return grace_ends


async def remove(conn: AsyncConnection, name: str) -> None:
    deleted = await conn.execute(tables.endpoints.delete().where(tables.endpoints.c.name == name))
    if deleted.rowcount == 0:
        raise NotFound(f"endpoint {name!r} does not exist")


async def list_all(conn: AsyncConnection) -> list[EndpointInfo]:
    e, s = tables.endpoints, tables.endpoint_secrets
    active = sa.or_(s.c.expires_at.is_(None), s.c.expires_at > sa.func.now())
    rows = await conn.execute(
        sa.select(
            e.c.name,
            sa.func.count(s.c.id).filter(active),
            e.c.created_at,
            e.c.updated_at,
            sa.func.max(s.c.expires_at).filter(active),
        )
        .select_from(e.outerjoin(s, s.c.endpoint == e.c.name))
        .group_by(e.c.name)
        .order_by(e.c.name)
    )
    return [EndpointInfo(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def load_active(conn: AsyncConnection, key: bytes) -> dict[str, tuple[ActiveSecret, ...]]:
    """Every endpoint with its active secrets, newest first.

    A secret that does not open under `key` raises SecretDecryptError: a wrong
    master key is a configuration error, not something to verify around."""
    e, s = tables.endpoints, tables.endpoint_secrets
    rows = await conn.execute(
        sa.select(e.c.name, s.c.secret_sealed, s.c.expires_at, s.c.created_at)
        .select_from(
            e.outerjoin(
                s,
                sa.and_(
                    s.c.endpoint == e.c.name,
                    sa.or_(s.c.expires_at.is_(None), s.c.expires_at > sa.func.now()),
                ),
            )
        )
        .order_by(e.c.name, s.c.id.desc())
    )
    result: dict[str, list[ActiveSecret]] = {}
    for name, sealed, expires_at, created_at in rows:
        secrets = result.setdefault(name, [])
        if sealed is not None:
            secrets.append(ActiveSecret(crypto.open_sealed(key, sealed, context=name), expires_at, created_at))
    return {name: tuple(secrets) for name, secrets in result.items()}


async def last_accepted(conn: AsyncConnection, names: Sequence[str]) -> dict[str, datetime]:
    """When each endpoint last accepted a webhook (endpoints that never did are left out)."""
    if not names:
        return {}
    w = tables.inbound_webhooks
    endpoint = sa.func.unnest(sa.literal(list(names), sa.ARRAY(sa.Text))).table_valued("name").alias("e")
    latest = (
        sa.select(w.c.received_at)
        .where(w.c.endpoint == endpoint.c.name)
        # (endpoint, received_at), not received_at alone: only ix_inbound_webhooks_endpoint_received_at
        # gives this order, so the planner cannot walk back along received_at instead, which it does
        # when one endpoint has all the rows, and which passes every row for an endpoint with none.
        .order_by(w.c.endpoint.desc(), w.c.received_at.desc())
        .limit(1)
        .lateral()
    )
    rows = await conn.execute(
        sa.select(endpoint.c.name, latest.c.received_at).select_from(endpoint.join(latest, sa.true()))
    )
    return {row[0]: row[1] for row in rows}


class SecretCache:
    """What the server verifies against: the endpoints table, plus the `default`
    endpoint from DOITONG_WEBHOOK_SECRET."""

    def __init__(self, env_default: Sequence[str]) -> None:
        self._env_default = tuple(ActiveSecret(secret, None) for secret in env_default)
        self._from_db: dict[str, tuple[ActiveSecret, ...]] = {}
        self.loaded = False

    def replace(self, from_db: dict[str, tuple[ActiveSecret, ...]]) -> None:
        self._from_db = from_db
        self.loaded = True

    def names(self) -> list[str]:
        names = set(self._from_db)
        if self._env_default:
            names.add(DEFAULT)
        return sorted(names)

    def secrets_for(self, name: str, now: datetime | None = None) -> list[str] | None:
        """Active secrets of `name` (newest first), or None when there is no such endpoint.

        Expiry is checked here, at verification time, so a grace period ends on
        the second even between two reloads."""
        stored = self._from_db.get(name)
        if name == DEFAULT and self._env_default:
            stored = self._env_default + (stored or ())
        if stored is None:
            return None
        moment = now or datetime.now(UTC)
        return [s.secret for s in stored if s.expires_at is None or s.expires_at > moment]


async def refresh(cache: SecretCache, conn: AsyncConnection, key: bytes) -> None:
    try:
        cache.replace(await load_active(conn, key))
    except SecretDecryptError:
        log.error("RECEIVER_MASTER_KEY does not open the stored endpoint secrets; keeping the last good set")
        raise
