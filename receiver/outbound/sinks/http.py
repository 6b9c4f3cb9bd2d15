"""HTTP subscribers, signed the Standard Webhooks way.

Headers: `webhook-id` (the event id), `webhook-timestamp` (seconds),
`webhook-signature` = space-separated `v1,<base64 HMAC-SHA256>` for the current
secret (and the previous one during a rotation's grace period), plus
`v1a,<base64 Ed25519>` when the subscription has a key pair. The signed content
is `{id}.{timestamp}.{body}`, so consumers verify with the published
`standardwebhooks` library.

Redirects are not followed (a 3xx is a failure), and targets whose address
falls inside RECEIVER_DENY_NETWORKS are refused at connect time. Two places
check, because aiohttp skips the resolver for IP-literal URLs
(`http://0.0.0.0:8080/`): the resolver drops denied addresses of a name (so a
name with one allowed address still works, and one with none says so), and
the connector's socket factory checks the very address each socket is about
to connect to, whatever the URL held.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from receiver import __version__
from receiver.core.config import IPNetwork
from receiver.outbound.sinks.base import Message, Result
from receiver.outbound.subscriptions import Subscription

USER_AGENT = f"doitong-receiver/{__version__}"
_MAX_RETRY_AFTER = 24 * 3600.0
# What aiohttp's connector hands its socket factory: (family, type, proto, canonname, sockaddr).
AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]


class DeniedAddress(OSError):
    """The address about to be connected to, or every address a name resolves to, is denied."""


# Addresses that reach this host although they are not in 127.0.0.0/8 or ::1: connecting to
# 0.0.0.0 (all of "this network", 0.0.0.0/8, on Linux) or to :: lands on the loopback interface.
_THIS_HOST_V4 = ipaddress.ip_network("0.0.0.0/8")
_LOOPBACKS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
# IPv6 prefixes that carry an IPv4 address in their last 32 bits: IPv4-compatible (::a.b.c.d,
# deprecated but still routed by some stacks), IPv4-translated (SIIT) and the NAT64 well-known
# prefix, where 64:ff9b::a9fe:a9fe is 169.254.169.254 behind a NAT64 gateway.
_LAST_32_BITS = (
    ipaddress.ip_network("::/96"),
    ipaddress.ip_network("::ffff:0:0:0/96"),
    ipaddress.ip_network("64:ff9b::/96"),
)
# The local-use NAT64 range (RFC 8215) may use any RFC 6052 prefix length from /48 on; the IPv4
# address then sits at a different place (skipping bits 64-71), so every layout is a candidate.
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
_RFC6052_LAYOUTS = ((48, 64, 72, 88), (56, 64, 72, 96), (72, 72, 72, 104), (96, 128, 128, 128))


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address may lead to: mapped, compatible, translated, NAT64,
    6to4 (2002::/16) and both ends of Teredo (2001::/32), ISATAP interface ids (…:5efe:a.b.c.d)."""
    value = int(ip)
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if any(ip in network for network in _LAST_32_BITS):
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if ip in _LOCAL_NAT64:
        for start, gap_start, gap_end, end in _RFC6052_LAYOUTS:
            bits = f"{value:0128b}"
            found.append(ipaddress.IPv4Address(int(bits[start:gap_start] + bits[gap_end:end], 2)))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if (value >> 32) & 0xFDFFFFFF == 0x00005EFE:  # ISATAP, universal/local bit either way
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    return found


def denied(address: str, networks: Sequence[IPNetwork]) -> bool:
    """Whether connecting to `address` (an IP, not a name) may reach a denied network.

    Checks the address itself, every IPv4 address embedded in an IPv6 one (::ffff:169.254.169.254
    and 64:ff9b::a9fe:a9fe are 169.254.169.254), and treats the unspecified addresses (0.0.0.0/8,
    ::) as this host: they are denied whenever 127.0.0.1 or ::1 is.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        candidates.extend(_embedded_ipv4(ip))
    if ip.is_unspecified or any(c.version == 4 and c in _THIS_HOST_V4 for c in candidates):
        candidates.extend(_LOOPBACKS)
    return any(candidate in network for candidate in candidates for network in networks)


def denying_socket_factory(networks: Sequence[IPNetwork]) -> Callable[[AddrInfo], socket.socket]:
    """A socket factory for aiohttp's connector that refuses a denied address just before the
    connect: the last step every connection passes through, IP-literal URLs included."""
    networks = tuple(networks)

    def make(addr_info: AddrInfo) -> socket.socket:
        family, type_, proto, _, address = addr_info
        if denied(str(address[0]), networks):
            raise DeniedAddress(f"connecting to {address[0]} is denied (RECEIVER_DENY_NETWORKS)")
        return socket.socket(family=family, type=type_, proto=proto)

    return make


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
            connector=aiohttp.TCPConnector(
                limit=limit,
                resolver=DenyingResolver(self.deny),
                socket_factory=denying_socket_factory(self.deny),
                ttl_dns_cache=10,
            ),
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
        # No deny check on the URL's host here: the connector's socket factory checks the address
        # actually connected to, which a name or an IP literal in the URL cannot route around.
        subscription = self.subscription
        now = datetime.now(UTC)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": message.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(subscription, message, timestamp, now),
        }
        if message.headers:
            headers.update(message.headers)
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
