"""Sending one webhook: signed, retried with back-off, with per-webhook faults.

Every genuine copy carries the documented `X-Doitong-Signature: sha256=<hex
HMAC-SHA256 of the raw body>`, computed here with hmac/hashlib rather than
with the receiver's `signatures` module: were the receiver's scheme wrong, a
simulator sharing its code would sign the same wrong way and hide it.

Each copy also carries `X-Doitong-Delivery` (the simulator's own; Doitong
documents no delivery id), an id that stays the same on retries, on an
injected duplicate and on an injected forgery, as a redelivery (or a
replayed capture) would. A copy is retried (with `stamina`) on any non-2xx
answer and on connection errors, after retry_base, 2x, 4x, … seconds (no
jitter, no cap), up to max_attempts.

Faults, decided per webhook: `--bad-signature-rate` first sends one extra copy
signed with a wrong secret (never retried: the receiver must refuse it and the
genuine copy must still get through); `--duplicate-rate` sends the genuine
copy again after the first one finished.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets

import aiohttp
import stamina

from receiver.core.errors import ReceiverError
from receiver.simulator.config import SimulatorConfig
from receiver.simulator.faults import Dice
from receiver.simulator.stats import WebhookStats

log = logging.getLogger("receiver.simulator.webhooks")

SIGNATURE_HEADER = "X-Doitong-Signature"
DELIVERY_HEADER = "X-Doitong-Delivery"
USER_AGENT = "Doitong-Webhooks/1.0 (doitong-receiver simulator)"


def sign(secret: str, body: bytes) -> str:
    """The documented `X-Doitong-Signature` value for `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Refused(ReceiverError):
    """The target answered, but not with a 2xx: worth another try."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


_RETRIED = (Refused, aiohttp.ClientError, TimeoutError, OSError)


def delivery_id() -> str:
    """A new, unique X-Doitong-Delivery value."""
    return "dlv_" + secrets.token_hex(12)


class Sender:
    """Delivers webhook bodies over one HTTP client session (open/close around use)."""

    def __init__(self, config: SimulatorConfig, dice: Dice, stats: WebhookStats) -> None:
        self._config = config
        self._dice = dice
        self._stats = stats
        self._session: aiohttp.ClientSession | None = None
        # A fresh wrong secret per process: the forgery must not verify under any real one.
        self._forger_secret = "forged-" + secrets.token_hex(16)

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._config.request_timeout),
                headers={"User-Agent": USER_AGENT},
            )

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def deliver(self, url: str, body: bytes) -> bool:
        """Send one webhook (with any injected faults); True when its genuine copy got a 2xx."""
        delivery = delivery_id()
        self._stats.sent += 1
        if self._dice.roll(self._config.bad_signature_rate):
            self._stats.forged += 1
            await self._attempt(url, body, delivery, sign(self._forger_secret, body))
        signature = sign(self._config.webhook_secret, body)
        delivered = await self._send(url, body, delivery, signature)
        if delivered:
            self._stats.delivered += 1
        if self._dice.roll(self._config.duplicate_rate):
            self._stats.duplicates += 1
            await self._send(url, body, delivery, signature)
        return delivered

    async def _send(self, url: str, body: bytes, delivery: str, signature: str) -> bool:
        """One copy, retried until a 2xx or max_attempts."""
        retries = stamina.retry_context(
            on=_RETRIED,
            attempts=self._config.max_attempts,
            timeout=None,
            wait_initial=self._config.retry_base,
            wait_exp_base=2,
            wait_jitter=0,
            wait_max=math.inf,
        )
        try:
            async for attempt in retries:
                with attempt:
                    if attempt.num > 1:
                        self._stats.retries += 1
                    await self._post(url, body, delivery, signature)
        except _RETRIED:
            self._stats.gave_up += 1
            log.warning("webhook %s to %s gave up after %d attempts", delivery, url, self._config.max_attempts)
            return False
        return True

    async def _attempt(self, url: str, body: bytes, delivery: str, signature: str) -> bool:
        """One HTTP request, not retried; True on a 2xx."""
        try:
            await self._post(url, body, delivery, signature)
        except _RETRIED:
            return False
        return True

    async def _post(self, url: str, body: bytes, delivery: str, signature: str) -> None:
        """One HTTP request; Refused on a non-2xx answer, the client's error when there was none."""
        if self._session is None:
            raise RuntimeError("Sender.open() was not called")
        self._stats.attempts += 1
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature, DELIVERY_HEADER: delivery}
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                await response.read()
                if not 200 <= response.status < 300:
                    log.info("webhook %s to %s answered %d", delivery, url, response.status)
                    raise Refused(response.status)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("webhook %s to %s failed: %s", delivery, url, type(exc).__name__)
            raise
