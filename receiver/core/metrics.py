"""Prometheus metrics. With `receiver serve --workers N` (N > 1) the workers
share PROMETHEUS_MULTIPROC_DIR, which `receiver serve` sets up."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from receiver import __version__

# The *_created series double every counter's size for no operator value.
disable_created_metrics()  # type: ignore[no-untyped-call]

WEBHOOKS = Counter(
    "receiver_webhooks",
    "Webhook requests by endpoint and outcome "
    "(accepted, duplicate, conflict, unauthorized, bad_request, too_large, "
    "unsupported_encoding, not_found, unavailable, error).",
    ["endpoint", "outcome"],
)
CONNECTIONS_REFUSED = Counter(
    "receiver_connections_refused",
    "Connections the server closed at a limit (headers_too_large, header_timeout, "
    "body_timeout, idle_timeout, connection_limit); see the README's security section.",
    ["reason"],
)
REPLAYS = Counter(
    "receiver_webhook_replays",
    "Deliveries that came again under an idempotency key already stored.",
    ["endpoint"],
)
REPLAY_CONFLICTS = Counter(
    "receiver_webhook_replay_conflicts",
    "Replays whose body differed from the stored one (logged, not applied).",
    ["endpoint"],
)
SECRET_MATCHES = Counter(
    "receiver_webhook_signature_matches",
    "Verified webhooks by which active secret matched (0 = newest); "
    "watch 1+ drop to zero before a rotation's grace period ends.",
    ["endpoint", "secret"],
)
EVENTS = Counter(
    "receiver_outbox_events_created",
    "Outbox events created by accepted webhooks, by type.",
    ["type"],
)
DELIVERIES = Counter(
    "receiver_delivery_attempts",
    "Delivery attempts by sink kind (http, nats, amqp) and outcome (delivered, retry, dead, gone).",
    ["kind", "outcome"],
)
# Per subscriber, for the failure ratio of each (deploy/prometheus/alerts.yml). Subscribers are
# operator-made and few; a removed one's series go at the next restart.
SUBSCRIBER_ATTEMPTS = Counter(
    "receiver_subscriber_delivery_attempts",
    "Delivery attempts by subscription id and outcome (delivered, retry, dead, gone).",
    ["subscriber", "outcome"],
)
CLAIMS_RELEASED = Counter(
    "receiver_delivery_claims_released",
    "Claimed deliveries given back unattempted: they waited for a send slot too close to their "
    "lease's end (stale: a subscriber slower than its share of slots), their subscriber was "
    "disabled or answered 410 (disabled), its circuit opened (circuit_open), its rate-limit slot "
    "passed while every send slot was busy (late), or the publisher stopped (stopping).",
    ["reason"],
)
DELIVERY_LATENCY = Histogram(
    "receiver_delivery_latency_seconds",
    "Time from the state change's commit to the subscriber's acknowledgement.",
    ["kind"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0, 86400.0),
)
RATE_LIMITED = Counter(
    "receiver_subscriber_rate_limited",
    "Attempts that waited for their slot under the subscriber's rate limit (subscribers ... --rate).",
    ["subscriber"],
)
CIRCUIT_TRANSITIONS = Counter(
    "receiver_subscriber_circuit_transitions",
    "Circuit breaker changes this process made: opened (RECEIVER_BREAKER_FAILURES failures in a row) "
    "or closed (a probe, or any attempt, succeeded).",
    ["subscriber", "transition"],
)
AUTO_DISABLED = Counter(
    "receiver_subscribers_auto_disabled",
    "Subscribers this process disabled for failing RECEIVER_DISABLE_AFTER without a success.",
    ["subscriber"],
)
REGISTRATIONS = Counter(
    "receiver_job_registrations",
    "Jobs registered through POST /v1/jobs: created, or merged into a job its webhooks created first.",
    ["result"],
)
UNREGISTERED = Counter(
    "receiver_webhooks_unregistered",
    "Accepted webhooks for job ids never registered through us (a leaked secret shows up here).",
    ["endpoint"],
)
# Set by the publishers that reconcile (operational.watch_unresolved_jobs), 0 elsewhere: alert on
# the max across processes. "livemax" so that a worker of `serve --workers N` that ended is not counted.
JOBS_UNRESOLVED = Gauge(
    "receiver_jobs_unresolved",
    "Jobs reconciliation asked Doitong about that are still unfinished RECEIVER_UNRESOLVED_AFTER "
    "after their last change (operational.jobs_stale).",
    multiprocess_mode="livemax",
)
JOBS_UNRESOLVED_OLDEST = Gauge(
    "receiver_jobs_unresolved_oldest_seconds",
    "Time since the last change of the oldest unresolved job (0: none).",
    multiprocess_mode="livemax",
)
LATENCY = Histogram(
    "receiver_webhook_duration_seconds",
    "Time from request start to answer, webhook endpoint only.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


class DatabaseGauges(Collector):
    """Gauges read from PostgreSQL at scrape time by the process that serves the scrape."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, float]] = {}
        self.labeled: dict[str, tuple[str, str, dict[str, float]]] = {}

    def set(self, name: str, help_text: str, value: float) -> None:
        self.values[name] = (help_text, value)

    def set_labeled(self, name: str, help_text: str, label: str, values: dict[str, float]) -> None:
        """A gauge with one label, whose series are exactly `values` (label value: value)."""
        self.labeled[name] = (help_text, label, values)

    def collect(self) -> Iterator[Metric]:
        for name, (help_text, value) in sorted(self.values.items()):
            yield GaugeMetricFamily(name, help_text, value=value)
        for name, (help_text, label, values) in sorted(self.labeled.items()):
            family = GaugeMetricFamily(name, help_text, labels=[label])
            for label_value, value in sorted(values.items()):
                family.add_metric([label_value], value)
            yield family
        info = GaugeMetricFamily("receiver_build_info", "Version of doitong-receiver.", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info


class Backlog(Protocol):
    """What `outbox.backlog()` reads; the core does not import the outbound flow."""

    @property
    def undispatched(self) -> int: ...
    @property
    def undispatched_oldest_seconds(self) -> float: ...
    @property
    def pending(self) -> int: ...
    @property
    def pending_oldest_seconds(self) -> float: ...
    @property
    def dead(self) -> int: ...


def set_backlog(gauges: DatabaseGauges, backlog: Backlog | None) -> None:
    """Gauges from `outbox.backlog()`; None when the database could not be read."""
    gauges.set("receiver_database_up", "1 when the last scrape reached PostgreSQL.", 0.0 if backlog is None else 1.0)
    if backlog is None:
        return
    gauges.set("receiver_outbox_backlog", "Outbox events not yet fanned out to subscribers.", backlog.undispatched)
    gauges.set(
        "receiver_outbox_oldest_pending_seconds",
        "Age of the oldest outbox event not yet fanned out.",
        backlog.undispatched_oldest_seconds,
    )
    gauges.set(
        "receiver_deliveries_pending", "Deliveries not yet delivered (due or waiting to retry).", backlog.pending
    )
    gauges.set(
        "receiver_deliveries_oldest_pending_seconds",
        "Age of the event behind the oldest pending delivery.",
        backlog.pending_oldest_seconds,
    )
    gauges.set("receiver_deliveries_dead", "Deliveries that gave up (replay them with receiver replay).", backlog.dead)


class SubscriberHealth(Protocol):
    """What `health.states()` reads for one subscriber."""

    @property
    def subscription_id(self) -> str: ...
    @property
    def circuit_open(self) -> bool: ...
    @property
    def consecutive_failures(self) -> int: ...
    @property
    def disabled(self) -> bool: ...


def set_subscriber_health(gauges: DatabaseGauges, states: Sequence[SubscriberHealth] | None) -> None:
    """Per-subscriber gauges from `health.states()`; None (the database could not be read) drops them."""
    rows = states or ()
    gauges.set_labeled(
        "receiver_subscriber_circuit_open",
        "1 while the subscriber's circuit is open (or its probe is out).",
        "subscriber",
        {s.subscription_id: float(s.circuit_open) for s in rows},
    )
    gauges.set_labeled(
        "receiver_subscriber_consecutive_failures",
        "Failed attempts since the subscriber's last success.",
        "subscriber",
        {s.subscription_id: float(s.consecutive_failures) for s in rows},
    )
    gauges.set_labeled(
        "receiver_subscriber_disabled",
        "1 when the subscriber is disabled (by an operator, 410 Gone, or auto-disable).",
        "subscriber",
        {s.subscription_id: float(s.disabled) for s in rows},
    )


class Exposition:
    """Renders this process's metrics, or every worker's in multiprocess mode,
    followed by the database gauges."""

    def __init__(self) -> None:
        self.gauges = DatabaseGauges()
        self._own = CollectorRegistry()
        self._own.register(self.gauges)
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            self._base = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._base)  # type: ignore[no-untyped-call]
        else:
            self._base = REGISTRY

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self._base) + generate_latest(self._own), CONTENT_TYPE_LATEST
