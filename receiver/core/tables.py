"""The tables as SQLAlchemy Core objects, for the queries built in Python and for Alembic's autogenerate.

The schema to read (functions and views included) is receiver/sql/; the tests check that the
migrations build exactly that, and that these tables match it.

Column names are snake_case and each carries a comment, which PostgreSQL keeps
(`\\d+ jobs` in psql shows them), so people writing SQL see what a column means.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, INTERVAL, JSONB, UUID

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

NOW = text("now()")


def _ts(name: str, comment: str, *, nullable: bool = True, default_now: bool = False) -> Column[object]:
    return Column(
        name,
        DateTime(timezone=True),
        nullable=nullable,
        server_default=NOW if default_now else None,
        comment=comment,
    )


endpoints = Table(
    "endpoints",
    metadata,
    Column("name", Text, primary_key=True, comment="URL segment: /webhooks/doitong/{name}"),
    _ts("created_at", "when the endpoint was added", nullable=False, default_now=True),
    _ts("updated_at", "last add/rotate", nullable=False, default_now=True),
    comment="Webhook endpoints; their secrets live in endpoint_secrets, encrypted.",
)

endpoint_secrets = Table(
    "endpoint_secrets",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column(
        "endpoint",
        Text,
        ForeignKey("endpoints.name", ondelete="CASCADE"),
        nullable=False,
        comment="the endpoint this secret signs for",
    ),
    Column(
        "secret_sealed",
        LargeBinary,
        nullable=False,
        comment="AES-256-GCM under RECEIVER_MASTER_KEY, bound to the endpoint name",
    ),
    _ts("created_at", "when the secret was added", nullable=False, default_now=True),
    _ts("expires_at", "end of a rotation's grace period; NULL = active until rotated"),
    Index("ix_endpoint_secrets_endpoint", "endpoint"),
    comment="Signing secrets per endpoint; several are active during a rotation.",
)

inbound_webhooks = Table(
    "inbound_webhooks",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("endpoint", Text, nullable=False, comment="endpoint name the request came in on"),
    Column(
        "idempotency_key",
        Text,
        nullable=False,
        comment="Idempotency-Key / X-Doitong-Delivery / webhook-id header, else sha256 of the body",
    ),
    Column("body_sha256", LargeBinary, nullable=False, comment="SHA-256 of the raw body"),
    Column("job_id", Text, nullable=False, comment="the body's `id`"),
    Column("status", Text, nullable=False, comment="the body's `status`"),
    Column("headers", JSONB, nullable=False, comment="request headers (credentials redacted)"),
    Column("body", LargeBinary, comment="raw body exactly as received (signature re-verifiable)"),
    _ts("received_at", "when we committed it", nullable=False, default_now=True),
    Column(
        "replay_count",
        Integer,
        nullable=False,
        server_default=text("0"),
        comment="how many times the same delivery came again",
    ),
    _ts("last_replay_at", "when the last replay came"),
    Column(
        "conflict_count",
        Integer,
        nullable=False,
        server_default=text("0"),
        comment="replays under this key whose body differed (not applied)",
    ),
    UniqueConstraint("endpoint", "idempotency_key"),
    Index("ix_inbound_webhooks_received_at", "received_at"),
    Index("ix_inbound_webhooks_endpoint_received_at", "endpoint", "received_at"),
    comment="Every accepted (signature-verified) webhook request, once per idempotency key.",
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Text, primary_key=True, comment="the provider's job id"),
    Column("service", Text, comment="provider service, e.g. hedra"),
    Column("type", Text, comment="generation type, e.g. AVATAR (when registered)"),
    Column(
        "status",
        Text,
        nullable=False,
        comment="submitted, processing, completed, failed, or as received",
    ),
    Column("url", Text, comment="output URL once completed"),
    Column("duration", Float, comment="metadata.duration, seconds"),
    Column("width", Integer, comment="metadata.width, pixels"),
    Column("height", Integer, comment="metadata.height, pixels"),
    Column("metadata", JSONB, comment="the provider's metadata object, merged across events"),
    _ts("created_at", "provider's createdAt"),
    _ts("completed_at", "provider's completedAt"),
    _ts("first_seen_at", "when we first heard of the job", nullable=False, default_now=True),
    _ts("updated_at", "when the job row last changed", nullable=False, default_now=True),
    Column("client_reference", Text, comment="your own reference, when the job was registered"),
    Column("tags", JSONB, comment="your own string tags, when the job was registered"),
    Column("credit_cost", Integer, comment="credits the provider charged, when known"),
    Column("input", JSONB, comment="what was asked of the provider, when registered (text, avatar, voice, ...)"),
    _ts("registered_at", "when the job was registered through us"),
    _ts("last_polled_at", "when reconciliation last asked the provider about this job"),
    Column(
        "registered",
        Boolean,
        nullable=False,
        server_default=text("false"),
        comment="true when the job was registered through us before or after its webhooks",
    ),
    Index("ix_jobs_created_at", "created_at"),
    Index("ix_jobs_client_reference", "client_reference", postgresql_where=text("client_reference IS NOT NULL")),
    Index("ix_jobs_first_seen_at_id", "first_seen_at", "id"),
    Index("ix_jobs_status_first_seen_at_id", "status", "first_seen_at", "id"),
    Index("ix_jobs_service_first_seen_at_id", "service", "first_seen_at", "id"),
    Index("ix_jobs_tags", "tags", postgresql_using="gin", postgresql_ops={"tags": "jsonb_path_ops"}),
    # Written out, not receiver_status_terminal(): see the index in receiver/sql/tables.sql.
    Index(
        "ix_jobs_unfinished",
        "updated_at",
        postgresql_where=text("status NOT IN ('completed', 'failed')"),
    ),
    comment="One row per provider job, moved only forward by the state machine.",
)

job_events = Table(
    "job_events",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True, comment="append order"),
    Column("job_id", Text, ForeignKey("jobs.id"), nullable=False, comment="the job this event reports on"),
    Column(
        "inbound_id",
        BigInteger,
        ForeignKey("inbound_webhooks.id", ondelete="SET NULL"),
        comment="the inbound_webhooks row, for webhook-sourced events",
    ),
    Column("source", Text, nullable=False, comment="webhook, poll or api"),
    Column("status", Text, nullable=False, comment="status this event reported"),
    Column("previous_status", Text, comment="jobs.status before this event (NULL: new job)"),
    Column("applied", Boolean, nullable=False, comment="whether it changed the job's state"),
    Column(
        "outbox_event_id",
        UUID(as_uuid=True),
        comment="the outbox event it produced, if any",
    ),
    Column(
        "payload",
        JSONB,
        comment="the reported document (webhooks: NULL, the raw body is inbound_webhooks.body)",
    ),
    _ts("provider_created_at", "createdAt in this event"),
    _ts("provider_completed_at", "completedAt in this event"),
    _ts("received_at", "when we committed it", nullable=False, default_now=True),
    Index("ix_job_events_job_id", "job_id", "id"),
    comment="Append-only history: every accepted delivery, applied or not.",
)

outbox_events = Table(
    "outbox_events",
    metadata,
    Column(
        "id",
        UUID(as_uuid=True),
        primary_key=True,
        server_default=text("receiver_uuid7()"),
        comment="event id, stable across retries, replays and sinks",
    ),
    Column("seq", BigInteger, Identity(), nullable=False, comment="global order of creation"),
    Column("job_id", Text, ForeignKey("jobs.id"), comment="the job whose state changed (NULL: an operational event)"),
    Column("status", Text, comment="the job status this event announces (NULL: an operational event)"),
    Column(
        "type",
        Text,
        nullable=False,
        comment="job.processing, job.completed, job.failed, ...; operational.* for events about the receiver",
    ),
    Column("payload", JSONB, nullable=False, comment="the envelope {id,type,timestamp,data} as sent"),
    _ts("created_at", "when the state change committed", nullable=False, default_now=True),
    _ts("dispatched_at", "when the publisher fanned it out to subscribers (NULL: pending)"),
    Column(
        "traceparent",
        Text,
        comment="W3C traceparent of the span that created it (ingest, poll); its deliveries continue "
        "that trace. NULL: tracing was off",
    ),
    Column("tracestate", Text, comment="W3C tracestate that came with traceparent, if any"),
    Column(
        "subject",
        Text,
        comment="what an operational event is about: subscriber:<id>, endpoint:<name> or jobs (NULL: a job event)",
    ),
    UniqueConstraint("job_id", "status"),
    UniqueConstraint("seq"),
    Index(
        "ix_outbox_events_pending",
        "seq",
        postgresql_where=text("dispatched_at IS NULL"),
    ),
    # ck_outbox_events_about (job events have a job and a status, operational ones a subject and
    # a known type) is written out in receiver/sql/tables.sql; autogenerate does not compare CHECKs.
    comment="Transactional outbox: one event per real job state change, and the receiver's operational events.",
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", Text, primary_key=True, comment="sub_… for HTTP subscribers; nats / amqp for the configured brokers"),
    Column("kind", Text, nullable=False, comment="http, nats or amqp"),
    Column("url", Text, nullable=False, comment="HTTP target, or the broker URL without its password"),
    Column("secret_sealed", LargeBinary, comment="whsec_ signing secret, AES-256-GCM under RECEIVER_MASTER_KEY"),
    Column(
        "previous_secret_sealed",
        LargeBinary,
        comment="the secret before the last rotate-secret; requests carry both signatures until it expires",
    ),
    _ts("previous_secret_expires_at", "when requests stop carrying the previous secret's signature"),
    Column("signing_key_sealed", LargeBinary, comment="Ed25519 private key for v1a signatures, sealed"),
    Column("public_key", Text, comment="Ed25519 public key (whpk_…) consumers verify v1a with"),
    Column("event_types", ARRAY(Text), comment="event types delivered; NULL = all"),
    Column("services", ARRAY(Text), comment="job services delivered; NULL = all"),
    Column(
        "state",
        Text,
        nullable=False,
        server_default=text("'enabled'"),
        comment="enabled or disabled (disabled: deliveries wait until enable)",
    ),
    Column(
        "disabled_reason",
        Text,
        comment="why it was disabled (operator, HTTP 410 Gone, or failing for RECEIVER_DISABLE_AFTER)",
    ),
    _ts("created_at", "events created from this moment on are delivered", nullable=False, default_now=True),
    _ts("updated_at", "last change", nullable=False, default_now=True),
    Column("rate_limit", Integer, comment="attempts allowed per rate_period (--rate); NULL = no limit"),
    Column("rate_period", INTERVAL, comment="1 second, 1 minute or 1 hour"),
    _ts("next_send_at", "rate limit: the next attempt starts no earlier"),
    Column(
        "consecutive_failures",
        Integer,
        nullable=False,
        server_default=text("0"),
        comment="failed attempts since the last success (the breaker opens at RECEIVER_BREAKER_FAILURES)",
    ),
    _ts(
        "failing_since",
        "first failure after the last success (NULL: the last attempt succeeded); auto-disable counts from it",
    ),
    _ts("circuit_open_until", "circuit breaker: no attempts before this (NULL = closed); then one probe decides"),
    Column("circuit_cooloff", INTERVAL, comment="the breaker's current cool-off (doubled on each failed probe)"),
    Column("circuit_probe", BigInteger, comment="the delivery claimed as the probe, while one is out"),
    CheckConstraint("kind IN ('http', 'nats', 'amqp')", name="kind"),
    CheckConstraint("state IN ('enabled', 'disabled')", name="state"),
    CheckConstraint(
        "(rate_limit IS NULL) = (rate_period IS NULL) AND rate_limit > 0 "
        "AND rate_period IN ('1 second', '1 minute', '1 hour')",
        name="rate",
    ),
    comment="Where outbox events go: HTTP subscribers and the configured brokers.",
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column(
        "event_id",
        UUID(as_uuid=True),
        ForeignKey("outbox_events.id", ondelete="CASCADE"),
        nullable=False,
        comment="the outbox event being delivered",
    ),
    Column(
        "subscription_id",
        Text,
        ForeignKey("subscriptions.id", ondelete="CASCADE"),
        nullable=False,
        comment="who it is delivered to",
    ),
    Column(
        "job_id",
        Text,
        nullable=False,
        comment="the event's job, or operational:<subject> (deliveries per subscriber and line go in order)",
    ),
    Column("event_seq", BigInteger, nullable=False, comment="outbox_events.seq, the order within a job"),
    Column(
        "state",
        Text,
        nullable=False,
        server_default=text("'pending'"),
        comment="pending, delivered or dead",
    ),
    Column("attempts", Integer, nullable=False, server_default=text("0"), comment="attempts started so far"),
    _ts("next_attempt_at", "not before this time", nullable=False, default_now=True),
    Column("claimed_by", Text, comment="publisher holding the claim"),
    _ts("claimed_until", "the claim's lease; after it another publisher may take over"),
    _ts("last_attempt_at", "when the last attempt started"),
    Column("last_status", Integer, comment="HTTP status of the last attempt"),
    Column("last_error", Text, comment="why the last attempt failed"),
    _ts("created_at", "when the event was fanned out to this subscriber", nullable=False, default_now=True),
    _ts("delivered_at", "when it was delivered"),
    _ts(
        "replayed_at",
        "when `receiver replay` (or the console) last queued it again; its attempts then start a new trace "
        "linked to the event's",
    ),
    UniqueConstraint("event_id", "subscription_id"),
    CheckConstraint("state IN ('pending', 'delivered', 'dead')", name="state"),
    Index(
        "ix_deliveries_due",
        "subscription_id",
        "next_attempt_at",
        "event_seq",
        postgresql_where=text("state = 'pending'"),
    ),
    Index(
        "ix_deliveries_order",
        "subscription_id",
        "job_id",
        "event_seq",
        postgresql_where=text("state = 'pending'"),
    ),
    Index("ix_deliveries_dead", "subscription_id", postgresql_where=text("state = 'dead'")),
    Index("ix_deliveries_dead_id", "id", "subscription_id", postgresql_where=text("state = 'dead'")),
    Index("ix_deliveries_delivered_at", "delivered_at", postgresql_where=text("state = 'delivered'")),
    comment="One row per event and subscriber: attempts, schedule and outcome.",
)

operational_marks = Table(
    "operational_marks",
    metadata,
    Column("type", Text, primary_key=True, comment="the operational event type"),
    Column("subject", Text, primary_key=True, comment="what it was about, as outbox_events.subject"),
    _ts("emitted_at", "when it was last emitted", nullable=False),
    _ts("covered_until", "what the last one covered (jobs_stale: the last change of the newest job it reported)"),
    comment="When an operational event emitted at most once per window was last emitted, across every process.",
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _ts("at", "when the action was taken", nullable=False, default_now=True),
    Column(
        "actor",
        Text,
        nullable=False,
        comment="session (logged in with the console token) or bearer (Authorization header)",
    ),
    Column("session", Text, comment="which login session (a digest of its id), for session actions"),
    Column("client", Text, comment="the client address the request came from"),
    Column("action", Text, nullable=False, comment="what was done, e.g. subscriber.disable, deliveries.replay"),
    Column("target", Text, comment="what it was done to: a subscription, job or delivery id"),
    Column("detail", JSONB, comment="parameters and outcome (never a secret)"),
    CheckConstraint("actor IN ('session', 'bearer')", name="actor"),
    comment="Every state-changing action taken in the console, newest last.",
)

replay_runs = Table(
    "replay_runs",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    _ts("started_at", "when it was started", nullable=False, default_now=True),
    _ts("updated_at", "when its last batch was written", nullable=False, default_now=True),
    _ts("finished_at", "when it ended (NULL: running, or its process stopped)"),
    Column("filter", JSONB, nullable=False, comment="which deliveries: state, subscription_id, job_id"),
    Column("total", Integer, comment="deliveries matching when it started"),
    Column("examined", Integer, nullable=False, server_default=text("0"), comment="deliveries gone through so far"),
    Column(
        "queued",
        Integer,
        nullable=False,
        server_default=text("0"),
        comment="of those, queued again (pending ones are left as they are)",
    ),
    Column("error", Text, comment="why it stopped early"),
    comment="Replays of many deliveries started in the console, and how far each has got.",
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column(
        "delivery_id",
        BigInteger,
        ForeignKey("deliveries.id", ondelete="CASCADE"),
        nullable=False,
        comment="the delivery attempted",
    ),
    Column("subscription_id", Text, nullable=False, comment="its subscriber (copied, for per-subscriber figures)"),
    Column(
        "attempt",
        Integer,
        nullable=False,
        comment="deliveries.attempts at the time: 1 for the first (a replay starts again at 1)",
    ),
    _ts("at", "when the attempt started", nullable=False),
    Column("duration_ms", Integer, comment="how long the send took, milliseconds"),
    Column(
        "outcome",
        Text,
        nullable=False,
        comment="delivered, retrying (failed, tried again later) or dead (failed, given up)",
    ),
    Column("status", Integer, comment="HTTP status, when there was an answer"),
    Column("error", Text, comment="why it failed"),
    CheckConstraint("outcome IN ('delivered', 'retrying', 'dead')", name="outcome"),
    Index("ix_delivery_attempts_delivery_id", "delivery_id", "id"),
    Index("ix_delivery_attempts_subscription_id", "subscription_id", "at"),
    Index("ix_delivery_attempts_failed", "subscription_id", "at", postgresql_where=text("outcome <> 'delivered'")),
    comment="Every delivery attempt and how it ended (deliveries keeps only the last).",
)

webhook_outcomes = Table(
    "webhook_outcomes",
    metadata,
    _ts("minute", "the minute the requests were counted in", nullable=False),
    Column("endpoint", Text, nullable=False, comment="endpoint name, or (unknown)"),
    Column(
        "outcome",
        Text,
        nullable=False,
        comment="as the receiver_webhooks metric: accepted, duplicate, conflict, unauthorized, bad_request, ...",
    ),
    Column("requests", BigInteger, nullable=False, comment="requests with that outcome in that minute"),
    PrimaryKeyConstraint("minute", "endpoint", "outcome"),
    comment="Webhook requests per minute, endpoint and outcome, from every server process.",
)

job_minutes = Table(
    "job_minutes",
    metadata,
    _ts("minute", "the minute the jobs were first seen in", nullable=False),
    Column("service", Text, nullable=False, comment="their service ('' when a job has none)"),
    Column("status", Text, nullable=False, comment="their status now"),
    Column("writer", Integer, nullable=False, comment="the backend (pid) that counted them, 0 once folded"),
    Column(
        "jobs", BigInteger, nullable=False, comment="how many (a sum over writers; one writer's row may be negative)"
    ),
    PrimaryKeyConstraint("minute", "service", "status", "writer"),
    Index("ix_job_minutes_unfolded", "minute", postgresql_where=text("writer <> 0")),
    comment="Jobs by the minute they were first seen, service and status, kept by triggers on jobs.",
)

attempt_minutes = Table(
    "attempt_minutes",
    metadata,
    _ts("minute", "the minute the attempts started in", nullable=False),
    Column("subscription_id", Text, nullable=False, comment="their subscriber"),
    Column(
        "bucket",
        SmallInteger,
        nullable=False,
        comment="their send time, receiver_latency_bucket(duration_ms): 0 under 1 ms, b from 10^((b-1)/10) to "
        "10^(b/10) ms, -1 not timed",
    ),
    Column("writer", Integer, nullable=False, comment="the backend (pid) that counted them, 0 once folded"),
    Column("attempts", BigInteger, nullable=False, comment="how many"),
    Column("delivered", BigInteger, nullable=False, comment="how many of them delivered"),
    PrimaryKeyConstraint("minute", "subscription_id", "bucket", "writer"),
    Index("ix_attempt_minutes_unfolded", "minute", postgresql_where=text("writer <> 0")),
    comment="Delivery attempts by the minute they started, subscriber and send time, kept by a trigger on "
    "delivery_attempts.",
)
