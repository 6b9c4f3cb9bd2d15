"""Sending one webhook: signed, retried with back-off, with per-webhook faults.

Every genuine copy carries `X-Doitong-Signature: sha256=<hex HMAC-SHA256 of
the raw body>` and `X-Doitong-Delivery`, an id that stays the same on retries,
on an injected duplicate and on an injected forgery, as a redelivery (or a
replayed capture) would. A copy is retried on any non-2xx answer and on
connection errors, after retry_base, 2x, 4x, … seconds, up to max_attempts.

Faults, decided per webhook: `--bad-signature-rate` first sends one extra copy
signed with a wrong secret (never retried: the receiver must refuse it and the
genuine copy must still get through); `--duplicate-rate` sends the genuine
copy again after the first one finished.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import aiohttp

from receiver.inbound import signatures
from receiver.simulator.config import SimulatorConfig
from receiver.simulator.faults import Dice
from receiver.simulator.stats import WebhookStats

log = logging.getLogger("receiver.simulator.webhooks")

SIGNATURE_HEADER = "X-Doitong-Signature"
DELIVERY_HEADER = "X-Doitong-Delivery"
USER_AGENT = "Doitong-Webhooks/1.0 (doitong-receiver simulator)"


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
            await self._attempt(url, body, delivery, signatures.sign(self._forger_secret, body))
        signature = signatures.sign(self._config.webhook_secret, body)
        delivered = await self._send(url, body, delivery, signature)
        if delivered:
            self._stats.delivered += 1
        if self._dice.roll(self._config.duplicate_rate):
            self._stats.duplicates += 1
            await self._send(url, body, delivery, signature)
        return delivered

    async def _send(self, url: str, body: bytes, delivery: str, signature: str) -> bool:
        """One copy, retried until a 2xx or max_attempts."""
        for attempt in range(self._config.max_attempts):
            if attempt:
                self._stats.retries += 1
                await asyncio.sleep(self._config.retry_base * 2 ** (attempt - 1))
            if await self._attempt(url, body, delivery, signature):
                return True
        self._stats.gave_up += 1
        log.warning("webhook %s to %s gave up after %d attempts", delivery, url, self._config.max_attempts)
        return False

    async def _attempt(self, url: str, body: bytes, delivery: str, signature: str) -> bool:
        if self._session is None:
            raise RuntimeError("Sender.open() was not called")
        self._stats.attempts += 1
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature, DELIVERY_HEADER: delivery}
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                await response.read()
                ok = 200 <= response.status < 300
                if not ok:
                    log.info("webhook %s to %s answered %d", delivery, url, response.status)
                return ok
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("webhook %s to %s failed: %s", delivery, url, type(exc).__name__)
            return False
