"""HTTP subscribers, signed the Standard Webhooks way.

Headers: `webhook-id` (the event id), `webhook-timestamp` (seconds),
`webhook-signature` = space-separated `v1,<base64 HMAC-SHA256>` for the current
secret (and the previous one during a rotation's grace period), plus
`v1a,<base64 Ed25519>` when the subscription has a key pair. The signed content
is `{id}.{timestamp}.{body}`, so consumers verify with the published
`standardwebhooks` library.

Redirects are not followed (a 3xx is a failure), and targets whose address
falls inside RECEIVER_DENY_NETWORKS are refused at connect time: the check is
in the resolver, so the address checked is the address connected to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from receiver import __version__
from receiver.core.config import IPNetwork
from receiver.outbound.sinks.base import Message, Result
from receiver.outbound.subscriptions import Subscription

USER_AGENT = f"doitong-receiver/{__version__}"
_MAX_RETRY_AFTER = 24 * 3600.0


class DeniedAddress(OSError):
    """The target resolves only to addresses inside RECEIVER_DENY_NETWORKS."""


def denied(address: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)  # ::ffff:169.254.169.254 is 169.254.169.254
    return any(candidate in network for candidate in candidates for network in networks)


class DenyingResolver(AbstractResolver):
    """Resolves like aiohttp does, then drops addresses inside the denied networks."""

    def __init__(self, networks: Sequence[IPNetwork]) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._networks = tuple(networks)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if not denied(r["host"], self._networks)]
        if not allowed:
            raise DeniedAddress(f"{host} resolves only to denied addresses (RECEIVER_DENY_NETWORKS)")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def signature_header(subscription: Subscription, message: Message, timestamp: int, now: datetime) -> str:
    content = f"{message.event_id}.{timestamp}.".encode() + message.body
    parts: list[str] = []
    keys = [subscription.secret]
    if (
        subscription.previous_secret is not None
        and subscription.previous_secret_expires_at is not None
        and subscription.previous_secret_expires_at > now
    ):
        keys.append(subscription.previous_secret)
    for key in keys:
        if key is not None:
            digest = hmac.new(key, content, hashlib.sha256).digest()
            parts.append("v1," + base64.b64encode(digest).decode())
    if subscription.signing_key is not None:
        parts.append("v1a," + base64.b64encode(subscription.signing_key.sign(content)).decode())
    return " ".join(parts)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), capped at a day."""
    if not value:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():  # int() takes other scripts' digits; HTTP does not
        return min(float(text), _MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - now).total_seconds(), 0.0), _MAX_RETRY_AFTER)


class HttpPool:
    """One connection pool (and the resolver that refuses denied networks) for every HTTP
    subscriber; each subscription's sink posts through it."""

    def __init__(self, *, timeout: float, deny_networks: Sequence[IPNetwork], limit: int) -> None:
        self.deny = tuple(deny_networks)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=limit, resolver=DenyingResolver(self.deny), ttl_dns_cache=10),
            timeout=aiohttp.ClientTimeout(total=timeout),
            headers={"user-agent": USER_AGENT},
            skip_auto_headers=("content-type",),
        )

    def sink(self, subscription: Subscription) -> HttpSink:
        return HttpSink(subscription, self)

    async def close(self) -> None:
        await self.session.close()


class HttpSink:
    """The `Sink` of one HTTP subscription: signs with its secrets, posts to its URL, and
    turns the answer into a Result (2xx delivered, 410 gone, 3xx not followed, 429/503 with
    their Retry-After). Made afresh whenever the publisher reloads the subscription, so the
    secrets are the current ones."""

    __slots__ = ("_pool", "subscription")

    def __init__(self, subscription: Subscription, pool: HttpPool) -> None:
        self.subscription = subscription
        self._pool = pool

    async def send(self, message: Message) -> Result:
        subscription = self.subscription
        host = urlsplit(subscription.url).hostname or ""
        if denied(host, self._pool.deny):
            return Result(ok=False, error=f"{host} is inside RECEIVER_DENY_NETWORKS")
        now = datetime.now(UTC)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": message.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(subscription, message, timestamp, now),
        }
        try:
            async with self._pool.session.post(
                subscription.url, data=message.body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = retry_after_seconds(response.headers.get("retry-after"), now)
                await response.release()
        except TimeoutError:
            return Result(ok=False, error="timed out")
        except (aiohttp.ClientError, OSError) as exc:
            return Result(ok=False, error=_describe(exc))
        if 200 <= status < 300:
            return Result(ok=True, status=status)
        if status == 410:
            return Result(ok=False, status=status, error="410 Gone", gone=True)
        if 300 <= status < 400:
            return Result(ok=False, status=status, error=f"{status} redirect (not followed)")
        if status in (429, 503):
            return Result(ok=False, status=status, error=f"HTTP {status}", retry_after=retry_after)
        return Result(ok=False, status=status, error=f"HTTP {status}")

    async def close(self) -> None:
        """Nothing of its own to let go: the pool is shared, and closed by its owner."""


def _describe(exc: BaseException) -> str:
    cause = exc
    while cause.__cause__ is not None and not isinstance(cause, DeniedAddress):
        cause = cause.__cause__
    text = str(cause) or type(cause).__name__
    return text.splitlines()[0][:300]
