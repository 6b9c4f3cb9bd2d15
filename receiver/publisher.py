"""`receiver publish`: drains the outbox to every subscriber, at least once, in order per job.

The loop waits on whichever comes first: a NOTIFY from an ingest transaction,
a finished send (a free slot), the poll interval, or stop. Each turn writes
back finished attempts, fans out new events and claims as many due deliveries
as there are free slots. A subscriber can hold at most
RECEIVER_SUBSCRIBER_CONCURRENCY slots, so a slow one cannot starve the others;
a failing one backs off on the retry schedule and holds none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections import Counter as Tally
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import psycopg

from receiver import db, metrics, notify, outbox, provider, reconcile, subscriptions
from receiver.config import Settings
from receiver.errors import DatabaseUnavailable
from receiver.sinks.base import Message, Result, Sink
from receiver.sinks.http import HttpSender
from receiver.subscriptions import Subscription

log = logging.getLogger("receiver.publisher")

FAN_OUT_BATCH = 1000
DRAIN_TIMEOUT = 30.0
SUBSCRIPTION_REFRESH = 2.0


class Publisher:
    def __init__(self, settings: Settings, master_key: bytes, *, concurrency: int | None = None) -> None:
        self.settings = settings
        self.database_url = settings.require_database_url()
        self.master_key = master_key
        self.concurrency = concurrency or settings.publish_concurrency
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.pool = db.create_pool(self.database_url, size=3, timeout=settings.db_timeout)
        self.engine = db.create_engine(self.database_url, pool_size=1, timeout=settings.db_timeout)
        self.http: HttpSender | None = None
        self.doitong: provider.DoitongClient | None = None
        self.brokers: dict[str, Sink] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self._subscriptions_loaded_at = 0.0
        self._inflight: set[asyncio.Task[None]] = set()
        self._per_subscription: Tally[str] = Tally()
        self._completions: list[outbox.Completion] = []
        self._gone: dict[str, str] = {}
        self._wake = asyncio.Event()
        self.ready = False

    # -- life cycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set, then finish the sends in flight and return."""
        await self._start()
        listener = asyncio.create_task(self._listen(stop), name="outbox-listen")
        reconciling = self._start_reconciler(stop)
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    more = await self._turn()
                except DatabaseUnavailable as exc:
                    log.warning("database unavailable: %s; retrying", exc)
                    more = False
                except Exception:
                    # A publisher that dies quietly while the server keeps accepting is the worst
                    # outcome: log, back off, keep going (claims of a turn that failed expire).
                    log.exception("publisher turn failed; retrying")
                    more = False
                if more:
                    await asyncio.sleep(0)
                    continue
                await _first(self._wake.wait(), stop.wait(), timeout=self.settings.poll_interval.total_seconds())
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            if reconciling is not None:
                # Its claims only stamp last_polled_at: cancelling mid-pass loses nothing.
                reconciling.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reconciling
            await self._drain()
            await self._close()

    def _start_reconciler(self, stop: asyncio.Event) -> asyncio.Task[None] | None:
        """Periodic reconciliation, when Doitong's API is configured (DOITONG_API_KEY)."""
        if not self.settings.doitong_api_key:
            return None
        self.doitong = provider.DoitongClient(self.settings.doitong_api_url, self.settings.doitong_api_key)
        return asyncio.create_task(
            reconcile.run_periodically(
                self.pool,
                self.doitong,
                interval=self.settings.reconcile_interval,
                stale_after=self.settings.stale_after,
                stop=stop,
            ),
            name="reconcile",
        )

    async def _start(self) -> None:
        await self.pool.open(wait=False)
        self.http = HttpSender(
            timeout=self.settings.http_timeout.total_seconds(),
            deny_networks=self.settings.deny_networks,
            limit=self.concurrency,
        )
        await self._start_brokers()
        with contextlib.suppress(DatabaseUnavailable):
            await self._refresh_subscriptions(force=True)
        self.ready = True

    async def _start_brokers(self) -> None:
        configured: list[tuple[Literal["nats", "amqp"], Any]] = []
        if self.settings.nats_url:
            from receiver.sinks.nats import NatsSink

            configured.append(
                (
                    "nats",
                    NatsSink(
                        self.settings.nats_url,
                        stream=self.settings.nats_stream,
                        subject_prefix=self.settings.nats_subject_prefix,
                    ),
                )
            )
        if self.settings.amqp_url:
            from receiver.sinks.amqp import AmqpSink

            configured.append(("amqp", AmqpSink(self.settings.amqp_url, exchange=self.settings.amqp_exchange)))
        for kind, sink in configured:
            try:
                await sink.connect()
            except Exception as exc:  # the sink reconnects by itself; deliveries retry meanwhile
                log.warning("%s broker not reachable at start-up (%s); deliveries will retry", kind, exc)
            self.brokers[kind] = sink
            async with db.begin(self.engine) as conn:
                await subscriptions.ensure_broker(conn, kind, sink.display_url)

    async def _drain(self) -> None:
        if self._inflight:
            log.info("stopping: finishing %d sends in flight", len(self._inflight))
            await asyncio.wait(self._inflight, timeout=DRAIN_TIMEOUT)
        with contextlib.suppress(DatabaseUnavailable):
            await self._flush()

    async def _close(self) -> None:
        for task in self._inflight:
            task.cancel()
        if self.http is not None:
            await self.http.close()
        if self.doitong is not None:
            await self.doitong.close()
        for sink in self.brokers.values():
            with contextlib.suppress(Exception):
                await sink.close()
        await self.pool.close()
        await self.engine.dispose()

    # -- one turn of the loop ---------------------------------------------------------------

    async def _turn(self) -> bool:
        """Write back, fan out, claim. True when there is probably more to do right away."""
        await self._flush()
        async with db.translated(), self.pool.connection() as conn:
            dispatched = await outbox.fan_out(conn, FAN_OUT_BATCH)
        await self._refresh_subscriptions()
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            return dispatched == FAN_OUT_BATCH
        async with db.translated(), self.pool.connection() as conn:
            claimed = await outbox.claim(
                conn,
                me=self.me,
                limit=free,
                lease=self.settings.lease_timeout,
                brokers=list(self.brokers),
                cap=min(self.settings.subscriber_concurrency, self.concurrency),
                in_flight=dict(self._per_subscription),
            )
        for item in claimed:
            self._per_subscription[item.subscription_id] += 1
            task = asyncio.create_task(self._deliver(item))
            self._inflight.add(task)
            task.add_done_callback(self._finished)
        return dispatched == FAN_OUT_BATCH or (len(claimed) == free and free > 0)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()

    async def _deliver(self, item: outbox.Claimed) -> None:
        try:
            result = await self._send(item)
        except Exception as exc:  # a bug in a sink must not lose the delivery: retry it
            log.exception("sink failed on event %s", item.event_id)
            result = Result(ok=False, error=f"internal error: {type(exc).__name__}")
        finally:
            self._per_subscription[item.subscription_id] -= 1
            if self._per_subscription[item.subscription_id] <= 0:
                del self._per_subscription[item.subscription_id]
        self._record(item, result)

    async def _send(self, item: outbox.Claimed) -> Result:
        subscription = self.subscriptions.get(item.subscription_id)
        if subscription is None:
            await self._refresh_subscriptions(force=True)
            subscription = self.subscriptions.get(item.subscription_id)
            if subscription is None:
                return Result(ok=False, error="subscription not found")
        message = Message(str(item.event_id), item.event_type, item.job_id, item.body)
        if subscription.kind == "http":
            assert self.http is not None
            return await self.http.send(subscription, message)
        sink = self.brokers.get(subscription.kind)
        if sink is None:
            return Result(ok=False, error=f"{subscription.kind} is not configured in this publisher")
        return await sink.send(message)

    def _record(self, item: outbox.Claimed, result: Result) -> None:
        now = datetime.now(UTC)
        kind = self.subscriptions[item.subscription_id].kind if item.subscription_id in self.subscriptions else "http"
        fields = {
            "event_id": str(item.event_id),
            "event_type": item.event_type,
            "job_id": item.job_id,
            "subscription_id": item.subscription_id,
            "attempt": item.attempt,
            "status": result.status,
            "error": result.error,
        }
        if result.ok:
            completion = outbox.Completion(item.delivery_id, "delivered", result.status, None, None)
            metrics.DELIVERY_LATENCY.labels(kind).observe((now - item.event_created_at).total_seconds())
            outcome = "delivered"
            log.debug("delivered", extra={"fields": fields})
        elif result.gone:
            completion = outbox.Completion(item.delivery_id, "dead", result.status, result.error, None)
            self._gone[item.subscription_id] = f"410 Gone at {now.isoformat(timespec='seconds')}"
            outcome = "gone"
            log.warning("subscriber answered 410 Gone: disabling it", extra={"fields": fields})
        elif item.attempt > len(self.settings.retry_schedule):
            completion = outbox.Completion(item.delivery_id, "dead", result.status, result.error, None)
            outcome = "dead"
            log.error("delivery is dead after %d attempts", item.attempt, extra={"fields": fields})
        else:
            wait = self._wait_before_retry(item.attempt, result.retry_after)
            completion = outbox.Completion(item.delivery_id, "pending", result.status, result.error, now + wait)
            outcome = "retry"
            log.info("delivery failed; retrying in %.1fs", wait.total_seconds(), extra={"fields": fields})
        metrics.DELIVERIES.labels(kind, outcome).inc()
        self._completions.append(completion)

    def _wait_before_retry(self, attempt: int, retry_after: float | None) -> timedelta:
        """The schedule's wait (±20 %), or longer when the subscriber asked for more with
        Retry-After. Never shorter: every attempt counts toward `dead`, so a subscriber that
        says `Retry-After: 0` must not burn through the schedule in seconds."""
        scheduled = self.settings.retry_schedule[attempt - 1].total_seconds() * random.uniform(0.8, 1.2)
        return timedelta(seconds=max(scheduled, retry_after or 0.0))

    async def _flush(self) -> None:
        if not self._completions and not self._gone:
            return
        completions, self._completions = self._completions, []
        gone, self._gone = self._gone, {}
        try:
            async with db.translated(), self.pool.connection() as conn:
                for subscription_id, reason in gone.items():
                    await outbox.disable_gone(conn, subscription_id, reason)
                if completions:
                    await outbox.complete(conn, self.me, completions)
        except DatabaseUnavailable:
            # Keep them for the next turn; if the lease runs out first, another publisher
            # sends again, which at-least-once allows.
            self._completions[:0] = completions
            self._gone.update(gone)
            raise
        if gone:
            await self._refresh_subscriptions(force=True)

    async def _refresh_subscriptions(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._subscriptions_loaded_at < SUBSCRIPTION_REFRESH:
            return
        async with db.begin(self.engine) as conn:
            self.subscriptions = await subscriptions.load(conn, self.master_key)
        self._subscriptions_loaded_at = time.monotonic()

    # -- wake-ups ---------------------------------------------------------------------------

    async def _listen(self, stop: asyncio.Event) -> None:
        """LISTEN on its own connection; reconnects; the poll interval covers any gap."""
        backoff = 0.5
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                    db.libpq_url(self.database_url), autocommit=True, application_name="doitong-receiver-listen"
                ) as conn:
                    await conn.execute(f"LISTEN {notify.CHANNEL}")
                    backoff = 0.5
                    self._wake.set()  # anything committed while we were not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error as exc:
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)


async def _first(*waits: Any, timeout: float) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
