"""`receiver publish`: drains the outbox to every subscriber, at least once, in order per job.

Two things run side by side, so that sends never wait for the database:
- the loop, which wakes on whichever comes first: a NOTIFY from an ingest
  transaction, room for more claims, the poll interval, or stop. Each turn
  writes back finished attempts, fans out new events when there may be some,
  and claims due deliveries, on one connection;
- the sends: up to `concurrency` at once, taken from what the loop claimed.
  When a send finishes, the next claimed delivery starts at once.

The loop claims up to one batch ahead of the free send slots, so the next
sends are ready when slots free up. A claim waits in memory only briefly: one
older than the lease minus the send timeout (and a margin) is given back
unattempted, so it is never sent after its lease could have run out.

A subscriber can hold at most RECEIVER_SUBSCRIBER_CONCURRENCY send slots (and
as many claims waiting), so a slow one cannot starve the others; a failing one
backs off on the retry schedule and holds none.

Beside the loop run named background tasks (`receiver.core.background`): the
LISTEN connection, the fan-out of new events (with the table statistics it
keeps), and the reconciler when Doitong's API is configured. Each is watched; a
failure is logged with its traceback, and the task is started again or stops
the publisher, as `_start_background` decides for each.

Every subscription's deliveries go through one `Sink` (`sinks.base`): its own
`HttpSink` for an HTTP subscriber, the NATS or RabbitMQ sink for a broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import socket
import time
import uuid
from collections import Counter as Tally
from collections import deque
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import psycopg

from receiver.core import background, db, metrics, notify, outage, tracing
from receiver.core.config import Settings
from receiver.core.errors import DatabaseUnavailable
from receiver.jobs import doitong, reconcile
from receiver.outbound import health, operational, outbox, pacing, subscriptions, traces
from receiver.outbound.sinks.base import Message, Result, Sink, Unconfigured
from receiver.outbound.sinks.broker import BrokerSink
from receiver.outbound.sinks.http import HttpPool
from receiver.outbound.subscriptions import Subscription

log = logging.getLogger("receiver.outbound.publisher")
T = TypeVar("T")

FAN_OUT_BATCH = 1000
DRAIN_TIMEOUT = 30.0
SUBSCRIPTION_REFRESH = 2.0
# Every send ends this long (or a tenth of the lease, if less) before its lease does; a claim
# waiting to be sent is given back once older than lease - this - the HTTP timeout.
CLAIM_MARGIN = 5.0
# Deliveries fanned out before the publisher considers refreshing the table's statistics.
ANALYZE_AFTER = 10_000
# How far ahead a claim takes a rate-limited subscriber's slots (and so how long at most its
# claims wait in memory for them); the claim that follows is made when the last one starts.
PACE_AHEAD = 1.0
# A publisher that wrote a failure of a subscriber writes its successes too for this long (a
# success ends the failure streak); otherwise only while the subscriber was loaded failing.
HEALTH_MEMORY = 60.0


class Publisher:
    def __init__(self, settings: Settings, master_key: bytes, *, concurrency: int | None = None) -> None:
        self.settings = settings
        self.database_url = settings.require_database_url()
        self.master_key = master_key
        self.concurrency = concurrency or settings.publish_concurrency
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # The loop, the fan-out, /metrics and the reconciler each hold one at a time.
        self.pool = db.create_pool(self.database_url, size=4, timeout=settings.db_timeout, name="publish")
        self.engine = db.create_engine(self.database_url, pool_size=1, timeout=settings.db_timeout)
        self.http: HttpPool | None = None
        self.doitong: doitong.DoitongClient | None = None
        self.brokers: dict[str, BrokerSink] = {}
        self.subscriptions: dict[str, Subscription] = {}
        # Where each subscription's deliveries go, rebuilt with `subscriptions`: an HTTP
        # subscription's own sink, or the broker's.
        self.sinks: dict[str, Sink] = {}
        self._subscriptions_loaded_at = 0.0
        self._inflight: set[asyncio.Task[None]] = set()
        self._sending: Tally[str] = Tally()  # sends in flight, per subscription
        # Claimed, not sent yet: per subscription, with the monotonic time of the claim.
        self._queued: dict[str, deque[tuple[float, outbox.Claimed]]] = {}
        # Claims of rate-limited subscribers waiting for their slots (they hold no send slot).
        self._pacer = pacing.Pacer(self._try_start, self._release_claim, lambda: self._wake.set())
        # What this publisher's attempts found about each subscriber's health, not written yet;
        # and when it last wrote a failure of each (its successes are written for a while after).
        self._health: dict[str, health.Report] = {}
        self._failed_at: dict[str, float] = {}
        self.cap = min(settings.subscriber_concurrency, self.concurrency)
        # Every send must end before its claim's lease does (or another publisher could send the
        # same delivery meanwhile): sends get a deadline of the lease minus a margin, counted
        # from before the claim was made, and a claim waits for a slot only as long as an HTTP
        # send could still finish by then.
        lease = settings.lease_timeout.total_seconds()
        self._margin = min(CLAIM_MARGIN, lease / 10)
        self._send_window = lease - self._margin
        wait = self._send_window - settings.http_timeout.total_seconds()
        if wait > 0:
            # Claim a batch ahead of the free slots, so the next sends are ready when slots free up.
            self._max_wait = wait
            self._claim_limit = 2 * self.concurrency
            self._claim_cap = 2 * self.cap
        else:
            # No time to wait: claim only for free slots (every claim starts at once, unless a
            # failed turn left it waiting past its whole window).
            self._max_wait = self._send_window
            self._claim_limit = self.concurrency
            self._claim_cap = self.cap
        self._claim_min = max(1, self.concurrency // 8)
        # Rate-limited subscribers get the slots of the next second at most, and never more than
        # a claim may wait for its send.
        self._horizon = timedelta(seconds=min(PACE_AHEAD, self._max_wait / 2))
        self._completions: list[outbox.Completion] = []
        self._gone: dict[str, str] = {}
        self._fanned_since_analyze = 0
        self._analyze = True
        self._fan_out_due = asyncio.Event()
        self._fan_out_due.set()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self.ready = False
        # PostgreSQL as the last attempt found it: one log line when it goes and one when it is
        # back (not one per turn), the back-off between turns meanwhile, and /readyz's answer.
        poll = settings.poll_interval.total_seconds()
        self.database = outage.Dependency("database", log, first_backoff=poll, max_backoff=max(poll, 10.0))
        # LISTEN's own connection can fail while the pool's work (e.g. too many clients): its own
        # state, so that it does not flap the database's log lines and /readyz.
        self.listening = outage.Dependency("LISTEN connection", log)

    # -- life cycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set, then finish the sends in flight and return. Raises
        `background.TaskFailed` (after the same drain) when a background task it cannot do
        without failed."""
        self._stop = stop
        await self._start(stop)
        tasks = self._start_background(stop)
        try:
            while not stop.is_set():
                self._wake.clear()
                try:
                    more = await self._turn()
                    self.database.up()
                except DatabaseUnavailable as exc:
                    self.database.down(exc, doing="claiming")
                    await self.database.pause(stop)
                    continue
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
            # A fan-out is one statement: cancelled, it is rolled back and done again later. The
            # reconciler's claims only stamp last_polled_at: cancelling mid-pass loses nothing.
            await tasks.stop()
            try:
                await self._drain()
            finally:
                await self._close()
        tasks.raise_failure()

    def _start_background(self, stop: asyncio.Event) -> background.BackgroundTasks:
        """The loops beside the claiming loop, each named and watched; what a failure does is
        decided per task (anything they expect, such as a lost connection, they handle inside)."""
        tasks = background.BackgroundTasks(log, stop)
        # LISTEN only hurries things along (the poll interval covers any gap), and a new
        # connection is all it needs: restart it.
        tasks.start("outbox-listen", lambda: self._listen(stop), on_failure="restart")
        # The fan-out (and the statistics it keeps) is the only way events become deliveries,
        # and it retries every database error itself: what escapes is a bug that would recur on
        # every pass while /healthz says ok. Stop, so that the exit code (and the restarts of
        # whatever supervises the process) show it.
        tasks.start("outbox-fan-out", lambda: self._fan_out_loop(stop), on_failure="stop")
        if self.settings.doitong_api_key:
            # Reconciliation only catches webhooks Doitong failed to send; deliveries go on
            # without it, so it is started again rather than taking the publisher down.
            self.doitong = doitong.DoitongClient(self.settings.doitong_api_url, self.settings.doitong_api_key)
            api = self.doitong
            tasks.start(
                "reconcile",
                lambda: reconcile.run_periodically(
                    self.pool,
                    api,
                    interval=self.settings.reconcile_interval,
                    stale_after=self.settings.stale_after,
                    stop=stop,
                ),
                on_failure="restart",
            )
            # Jobs polling cannot finish: operational.jobs_stale and the unresolved-jobs gauges.
            tasks.start(
                "unresolved-jobs",
                lambda: operational.watch_unresolved_jobs(
                    self.pool,
                    after=self.settings.unresolved_after,
                    interval=self.settings.reconcile_interval,
                    stop=stop,
                ),
                on_failure="restart",
            )
        return tasks

    async def _start(self, stop: asyncio.Event) -> None:
        """Open what the publisher holds. Only bad configuration raises (and what was opened is
        closed first); a database or broker that is away is waited for or left to reconnect."""
        configured = self._configured_brokers()  # ConfigError before anything is opened
        outage.quiet_pool_retries()  # self.database says when PostgreSQL goes and comes back
        try:
            await self.pool.open(wait=False)
            self.http = HttpPool(
                timeout=self.settings.http_timeout.total_seconds(),
                deny_networks=self.settings.deny_networks,
                limit=self.concurrency,
            )
            await self._start_brokers(configured, stop)
            if not stop.is_set():
                try:
                    await self._refresh_subscriptions(force=True)
                except DatabaseUnavailable as exc:
                    db.check_configured(exc)  # a wrong password stops start-up; an outage is waited out
        except BaseException:
            await self._close()
            raise
        self.ready = True

    def _configured_brokers(self) -> list[tuple[Literal["nats", "amqp"], BrokerSink]]:
        configured: list[tuple[Literal["nats", "amqp"], BrokerSink]] = []
        if self.settings.nats_url:
            from receiver.outbound.sinks.nats import NatsSink

            configured.append(
                (
                    "nats",
                    NatsSink(
                        self.settings.nats_url,
                        stream=self.settings.nats_stream,
                        subject_prefix=self.settings.nats_subject_prefix,
                        duplicate_window=duplicate_window(self.settings),
                    ),
                )
            )
        if self.settings.amqp_url:
            from receiver.outbound.sinks.amqp import AmqpSink

            configured.append(("amqp", AmqpSink(self.settings.amqp_url, exchange=self.settings.amqp_exchange)))
        return configured

    async def _start_brokers(
        self, configured: list[tuple[Literal["nats", "amqp"], BrokerSink]], stop: asyncio.Event
    ) -> None:
        for kind, sink in configured:
            # Owned from here on, so that _close closes it whatever happens next.
            self.brokers[kind] = sink
            try:
                await sink.connect()
            except Exception as exc:  # the sink reconnects by itself; deliveries retry meanwhile
                log.warning("%s broker not reachable at start-up (%s); deliveries will retry", kind, exc)
        # Each broker is a subscription row, which its deliveries need: without the database
        # nothing can be claimed anyway, so wait for it here (until stop), trying with back-off.
        pending = {kind: sink.display_url for kind, sink in configured}
        while pending and not stop.is_set():
            try:
                async with db.begin(self.engine) as conn:
                    for kind, display_url in pending.items():
                        await subscriptions.ensure_broker(conn, kind, display_url)
            except DatabaseUnavailable as exc:
                db.check_configured(exc)
                self.database.down(exc, doing="registering the brokers")
                await self.database.pause(stop)
            else:
                self.database.up()
                pending = {}

    async def _drain(self) -> None:
        # Claims not started go back at once, for another publisher (or the next start), before
        # the sends in flight are waited for.
        for subscription_id in list(self._queued):
            self._release_queue(subscription_id, "stopping")
        self._pacer.release_all("stopping")
        await self._final_flush()
        if self._inflight:
            log.info("stopping: finishing %d sends in flight", len(self._inflight))
            await asyncio.wait(self._inflight, timeout=DRAIN_TIMEOUT)
        await self._final_flush()

    async def _final_flush(self) -> None:
        """Write back what can be written; at shutdown nothing may stop the drain (what is not
        written back runs out with its lease and is sent again)."""
        if not self._completions and not self._gone and not self._health:
            return  # nothing to write: no need to wait for a connection (PostgreSQL may be away)
        try:
            async with db.translated(), self.pool.connection() as conn:
                await self._flush(conn)
        except Exception as exc:
            log.warning("stopping: could not write back outcomes (%s); their claims will expire", exc)

    async def _close(self) -> None:
        self._pacer.close()
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
        """Write back and claim, on one connection. True when there is probably more to claim
        right away."""
        await self._refresh_subscriptions()
        self._release_stale(time.monotonic())
        claimed: list[outbox.Claimed] = []
        claimed_at = 0.0
        ended = False
        room = self._room()
        async with db.translated(), self.pool.connection() as conn:
            if room >= self._claim_min or (room > 0 and not self._inflight):
                disabled = await self._write_health(conn)
                disabled = await self._disable_gone(conn) or disabled
                claimed_at = time.monotonic()  # before the database's now(), which starts the lease
                held = self._claims_held()
                completions, self._completions = self._completions, []
                # The claim sees the table from before these completions: a line whose head
                # they finish advances only on the next turn, which must come at once.
                ended = any(c.state != "pending" for c in completions)
                claimed = await self._writing_back(
                    completions,
                    outbox.claim(
                        conn,
                        me=self.me,
                        limit=room,
                        lease=self.settings.lease_timeout,
                        brokers=list(self.brokers),
                        cap=self._claim_cap,
                        in_flight=held,
                        completions=completions,
                        horizon=self._horizon,
                    ),
                )
            else:
                disabled = await self._flush(conn)
        returned_at = time.monotonic()
        for item in claimed:
            if item.send_after is None:
                self._queued.setdefault(item.subscription_id, deque()).append((claimed_at, item))
                continue
            self._pacer.add(item, claimed_at, returned_at)
            if item.send_after > 0:
                metrics.RATE_LIMITED.labels(item.subscription_id).inc()
        try:
            if disabled:
                await self._refresh_subscriptions(force=True)
        finally:
            self._start_sends()
        return (bool(claimed) and len(claimed) == room) or ended

    def _room(self) -> int:
        """How many more claims this publisher may hold (sending or waiting)."""
        return self._claim_limit - len(self._inflight) - sum(len(queue) for queue in self._queued.values())

    def _claims_held(self) -> dict[str, int]:
        """Claims this publisher holds (sending or waiting), per subscription."""
        held = dict(self._sending)
        for subscription_id, queue in self._queued.items():
            held[subscription_id] = held.get(subscription_id, 0) + len(queue)
        for subscription_id, waiting in self._pacer.held().items():
            held[subscription_id] = held.get(subscription_id, 0) + waiting
        return held

    def _release_stale(self, now: float) -> None:
        """Give back claims that waited too long for a slot (their send could not finish within
        the lease), and every claim of a subscription that is no longer enabled (410 Gone, or
        disabled by an operator: its deliveries wait until it is enabled again)."""
        self._release_paused()
        for subscription_id in list(self._queued):
            subscription = self.subscriptions.get(subscription_id)
            if subscription_id in self._gone or (subscription is not None and subscription.state != "enabled"):
                self._release_queue(subscription_id, "disabled")
                continue
            queue = self._queued[subscription_id]
            while queue and now - queue[0][0] >= self._max_wait:  # oldest first
                _, item = queue.popleft()
                self._release_claim(item, "stale")
                log.debug("claim of delivery %d waited too long for a slot; released", item.delivery_id)
            if not queue:
                del self._queued[subscription_id]

    def _release_queue(self, subscription_id: str, reason: str) -> None:
        self._pacer.release(subscription_id, reason)
        for _, item in self._queued.pop(subscription_id, ()):
            self._release_claim(item, reason)

    def _release_claim(self, item: outbox.Claimed, reason: str) -> None:
        self._completions.append(outbox.Completion.release(item))
        metrics.CLAIMS_RELEASED.labels(reason).inc()
        if item.probe:  # the circuit's next claim sends another
            self._health.setdefault(item.subscription_id, health.Report()).probe = "released"

    def _release_paused(self) -> None:
        """Give back the claims (not the probe) of a subscriber whose circuit opened: they were
        claimed before it did, and would only fail."""
        now = datetime.now(UTC)
        for subscription_id in [*self._queued, *self._pacer.held()]:
            subscription = self.subscriptions.get(subscription_id)
            open_until = subscription.circuit_open_until if subscription is not None else None
            if open_until is None or open_until <= now:
                continue
            self._pacer.release(subscription_id, "circuit_open", keep_probes=True)
            queue = self._queued.pop(subscription_id, deque())
            for entry in queue:
                if entry[1].probe:
                    self._queued.setdefault(subscription_id, deque()).append(entry)
                else:
                    self._release_claim(entry[1], "circuit_open")

    def _start_sends(self) -> None:
        """Start claimed deliveries while send slots are free, taking subscriptions in turn and
        none beyond its share of slots."""
        if self._stop.is_set():
            return
        now = time.monotonic()
        self._release_stale(now)
        if self._pacer:
            self._pacer.run()  # first: a slot does not wait
        while self._queued and len(self._inflight) < self.concurrency:
            started = False
            for subscription_id in list(self._queued):
                if len(self._inflight) >= self.concurrency:
                    break
                if self._sending[subscription_id] >= self.cap:
                    continue
                queue = self._queued.pop(subscription_id)
                claimed_at, item = queue.popleft()
                if queue:
                    self._queued[subscription_id] = queue  # to the back: the next one goes first
                started = True
                self._launch(item, claimed_at)
            if not started:
                break

    def _try_start(self, item: outbox.Claimed, claimed_at: float) -> bool:
        """Start `item`'s send if a send slot is free for it."""
        if len(self._inflight) >= self.concurrency or self._sending[item.subscription_id] >= self.cap:
            return False
        self._launch(item, claimed_at)
        return True

    def _launch(self, item: outbox.Claimed, claimed_at: float) -> None:
        self._sending[item.subscription_id] += 1
        task = asyncio.create_task(self._deliver(item, claimed_at))
        self._inflight.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._start_sends()
        if self._room() >= self._claim_min or not self._inflight:
            self._wake.set()

    async def _deliver(self, item: outbox.Claimed, claimed_at: float) -> None:
        if not self.settings.tracing:
            await self._attempt(item, claimed_at)
            return
        subscription = self.subscriptions.get(item.subscription_id)
        with traces.attempt(item, subscription, self.brokers) as span:
            # The subscriber (or the broker's consumer) continues the trace from this span.
            result, outcome = await self._attempt(item, claimed_at, tracing.headers())
            traces.ended(span, result, outcome)

    async def _attempt(
        self, item: outbox.Claimed, claimed_at: float, headers: dict[str, str] | None = None
    ) -> tuple[Result, str]:
        deadline = claimed_at + self._send_window
        started_at, started = datetime.now(UTC), time.monotonic()
        try:
            result = await asyncio.wait_for(self._send(item, headers), max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            # Whatever the sink's own timeouts: no send may outlive its lease.
            result = Result(ok=False, error="send did not finish within the claim's lease")
        except Exception as exc:  # a bug in a sink must not lose the delivery: retry it
            log.exception("sink failed on event %s", item.event_id)
            result = Result(ok=False, error=f"internal error: {type(exc).__name__}")
        finally:
            self._sending[item.subscription_id] -= 1
            if self._sending[item.subscription_id] <= 0:
                del self._sending[item.subscription_id]
        outcome = self._record(item, result, started_at, round((time.monotonic() - started) * 1000))
        return result, outcome

    async def _send(self, item: outbox.Claimed, headers: dict[str, str] | None = None) -> Result:
        sink = self.sinks.get(item.subscription_id)
        if sink is None:
            await self._refresh_subscriptions(force=True)
            sink = self.sinks.get(item.subscription_id)
            if sink is None:
                return Result(ok=False, error="subscription not found")
        return await sink.send(Message(str(item.event_id), item.event_type, item.job_id, item.body, headers))

    def _record(self, item: outbox.Claimed, result: Result, started_at: datetime, duration_ms: int) -> str:
        """Queue the attempt's outcome for writing back; returns it (delivered, gone, dead, retry)."""
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
        # The start and duration go into the attempt history with the outcome.
        timing = outbox.Timing(started_at, duration_ms)
        if result.ok:
            completion = outbox.Completion.of(item, "delivered", result.status, timing=timing)
            metrics.DELIVERY_LATENCY.labels(kind).observe((now - item.event_created_at).total_seconds())
            outcome = "delivered"
            log.debug("delivered", extra={"fields": fields})
        elif result.gone:
            completion = outbox.Completion.of(item, "dead", result.status, result.error, timing=timing)
            self._gone[item.subscription_id] = f"410 Gone at {now.isoformat(timespec='seconds')}"
            self._release_queue(item.subscription_id, "disabled")
            outcome = "gone"
            log.warning("subscriber answered 410 Gone: disabling it", extra={"fields": fields})
        elif item.attempt > len(self.settings.retry_schedule):
            completion = outbox.Completion.of(item, "dead", result.status, result.error, timing=timing)
            outcome = "dead"
            log.error("delivery is dead after %d attempts", item.attempt, extra={"fields": fields})
        else:
            wait = self._wait_before_retry(item.attempt, result.retry_after)
            completion = outbox.Completion.of(item, "pending", result.status, result.error, now + wait, timing=timing)
            outcome = "retry"
            log.info("delivery failed; retrying in %.1fs", wait.total_seconds(), extra={"fields": fields})
        metrics.DELIVERIES.labels(kind, outcome).inc()
        metrics.SUBSCRIBER_ATTEMPTS.labels(item.subscription_id, outcome).inc()
        self._completions.append(completion)
        self._health.setdefault(item.subscription_id, health.Report()).note(result.ok, now, probe=item.probe)
        return outcome

    def _wait_before_retry(self, attempt: int, retry_after: float | None) -> timedelta:
        """The schedule's wait (±20 %), or longer when the subscriber asked for more with
        Retry-After. Never shorter: every attempt counts toward `dead`, so a subscriber that
        says `Retry-After: 0` must not burn through the schedule in seconds."""
        scheduled = self.settings.retry_schedule[attempt - 1].total_seconds() * random.uniform(0.8, 1.2)
        return timedelta(seconds=max(scheduled, retry_after or 0.0))

    async def _flush(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Write back finished attempts (and released claims), and disable subscribers that
        answered 410; True when some were disabled."""
        disabled = await self._disable_gone(conn)
        if self._completions:
            completions, self._completions = self._completions, []
            await self._writing_back(completions, outbox.complete(conn, self.me, completions))
        return await self._write_health(conn) or disabled

    async def _write_health(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Write what the attempts found about subscribers' health (`health.record`), with the
        operational events of what that changed, in one transaction; True when a circuit opened
        or a subscriber was disabled (the subscriptions must be reloaded)."""
        now = time.monotonic()
        reports = {
            subscription_id: report
            for subscription_id, report in self._health.items()
            if report.worth_writing(self._may_be_failing(subscription_id, now))
        }
        self._health = {}
        if not reports:
            return False
        try:
            async with conn.transaction():
                transitions = await health.record(conn, self.settings, reports)
                for transition in transitions:
                    await operational.emit(conn, _EVENTS[transition.change], transition.data())
        except (DatabaseUnavailable, psycopg.Error):
            for subscription_id, report in reports.items():  # next turn, before what came since
                later = self._health.get(subscription_id)
                if later is not None:
                    report.merge(later)
                self._health[subscription_id] = report
            raise
        for subscription_id, report in reports.items():
            if report.failures:
                self._failed_at[subscription_id] = now
        for transition in transitions:
            _log_transition(transition)
        return any(t.change != "circuit_closed" for t in transitions)

    def _may_be_failing(self, subscription_id: str, now: float) -> bool:
        subscription = self.subscriptions.get(subscription_id)
        return (
            subscription is None
            or subscription.failing
            or subscription.circuit_open_until is not None
            or now - self._failed_at.get(subscription_id, -HEALTH_MEMORY) < HEALTH_MEMORY
        )

    async def _disable_gone(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        if not self._gone:
            return False
        gone, self._gone = self._gone, {}
        try:
            for subscription_id, reason in gone.items():
                await outbox.disable_gone(conn, subscription_id, reason)
        except (DatabaseUnavailable, psycopg.Error):
            self._gone.update(gone)  # next turn
            raise
        return True

    async def _writing_back(self, completions: list[outbox.Completion], statement: Awaitable[T]) -> T:
        """Run a statement that writes `completions` back; keep them for the next turn when the
        connection failed. When the batch itself is at fault (it would fail again and stop every
        turn), drop it: the claims run out and are sent again."""
        try:
            return await statement
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError):
            log.exception("writing back %d outcomes failed; their claims will expire", len(completions))
            raise
        except (DatabaseUnavailable, psycopg.Error):
            self._completions[:0] = completions
            raise

    async def _refresh_subscriptions(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._subscriptions_loaded_at < SUBSCRIPTION_REFRESH:
            return
        async with db.begin(self.engine) as conn:
            loaded = await subscriptions.load(conn, self.master_key)
        self.sinks = {subscription_id: self._sink(s) for subscription_id, s in loaded.items()}
        self.subscriptions = loaded
        self._subscriptions_loaded_at = time.monotonic()

    def _sink(self, subscription: Subscription) -> Sink:
        if subscription.kind == "http":
            assert self.http is not None  # made in _start, before the first load
            return self.http.sink(subscription)
        return self.brokers.get(subscription.kind) or Unconfigured(subscription.kind)

    # -- wake-ups ---------------------------------------------------------------------------

    async def _listen(self, stop: asyncio.Event) -> None:
        """LISTEN on its own connection; reconnects after a connection error (anything else
        ends the task, which is then started again); the poll interval covers any gap."""
        backoff = 0.5
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                    db.libpq_url(self.database_url), autocommit=True, application_name="doitong-receiver-listen"
                ) as conn:
                    await conn.execute(f"LISTEN {notify.CHANNEL}")
                    backoff = 0.5
                    self.listening.up()
                    self._notified()  # anything committed while we were not listening
                    async for _ in conn.notifies():
                        self._notified()
            except psycopg.Error as exc:
                # A warning once per outage; every attempt only at debug.
                self.listening.down(exc, doing="waiting for notifications")
                log.debug("LISTEN connection lost (%s); reconnecting in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _keep_statistics(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            outcome = await outbox.keep_statistics(conn, self._fanned_since_analyze)
        except psycopg.Error as exc:
            log.warning("ANALYZE deliveries failed (%s); trying again after more fan-outs", exc)
            self._fanned_since_analyze = 0
            return
        if outcome == "analyzed":
            self._fanned_since_analyze = 0
        elif outcome == "not_allowed":
            log.warning(
                "cannot ANALYZE deliveries (this role does not own it or the database); "
                "leaving its statistics to autovacuum"
            )
            self._analyze = False

    def _notified(self) -> None:
        """New outbox events were committed: fan them out."""
        self._fan_out_due.set()

    async def _fan_out_loop(self, stop: asyncio.Event) -> None:
        """Fan out new events into deliveries, beside the claiming loop (a deep backlog of
        events takes many batches, and sends go on meanwhile); wakes the loop when there are
        new deliveries to claim. Runs on a NOTIFY, and every poll interval in any case: a
        NOTIFY can be lost (the server drops them when its pool is busy)."""
        poll = self.settings.poll_interval.total_seconds()
        while not stop.is_set():
            await _first(self._fan_out_due.wait(), stop.wait(), timeout=poll)
            if stop.is_set():
                return
            self._fan_out_due.clear()
            try:
                async with db.translated(), self.pool.connection() as conn:
                    fanned = await outbox.fan_out(conn, FAN_OUT_BATCH)
                    if fanned.events:
                        self._wake.set()
                    if fanned.events == FAN_OUT_BATCH:
                        self._fan_out_due.set()
                    self._fanned_since_analyze += fanned.deliveries
                    if self._fanned_since_analyze >= ANALYZE_AFTER and self._analyze:
                        await self._keep_statistics(conn)
            except DatabaseUnavailable as exc:
                self.database.down(exc, doing="fan-out")
                await _first(stop.wait(), timeout=poll)
            except psycopg.Error:
                # E.g. a statement timeout or a deadlock: the statement was rolled back, try again.
                log.exception("fan-out failed; retrying")
                await _first(stop.wait(), timeout=poll)


_EVENTS: dict[health.Change, operational.OperationalType] = {
    "circuit_opened": "operational.circuit_opened",
    "circuit_closed": "operational.circuit_closed",
    "subscriber_disabled": "operational.subscriber_disabled",
}


def _log_transition(transition: health.Transition) -> None:
    fields = {"fields": transition.data()}
    if transition.change == "circuit_opened":
        metrics.CIRCUIT_TRANSITIONS.labels(transition.subscription_id, "opened").inc()
        log.warning(
            "subscriber failing: circuit opened until %s",
            transition.circuit_open_until.isoformat(timespec="seconds") if transition.circuit_open_until else "-",
            extra=fields,
        )
    elif transition.change == "circuit_closed":
        metrics.CIRCUIT_TRANSITIONS.labels(transition.subscription_id, "closed").inc()
        log.info("subscriber answering again: circuit closed", extra=fields)
    else:
        metrics.AUTO_DISABLED.labels(transition.subscription_id).inc()
        log.error("subscriber disabled: %s", transition.disabled_reason, extra=fields)


def duplicate_window(settings: Settings) -> float:
    """Seconds a broker should recognise a message id again: from a first attempt to the last
    retry of the schedule at its longest (every wait +20 %, see `_wait_before_retry`), plus,
    for every attempt, one lease (the claim and the send) and one poll interval (the claim
    coming round). A publish whose ack was lost and that is retried within this is dropped by
    JetStream as a duplicate; a publisher or database outage longer than the margin can still
    push the last retries past it (the README says when)."""
    longest = sum(wait.total_seconds() for wait in settings.retry_schedule) * 1.2
    attempts = len(settings.retry_schedule) + 1
    per_attempt = settings.lease_timeout.total_seconds() + settings.poll_interval.total_seconds()
    return math.ceil(longest + attempts * per_attempt)


async def _first(*waits: Any, timeout: float) -> bool:
    """Wait for the first of `waits`; False when the timeout came first. The others are
    cancelled but, unlike procrastinate's `utils.wait_any`, not awaited: they are waits on
    events that hold nothing, and awaiting them would cost the claiming loop one more pass of
    the event loop on every turn."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    return bool(done)
