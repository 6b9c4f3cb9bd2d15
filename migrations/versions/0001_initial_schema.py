"""initial schema: tables, the ingest function (state machine in SQL) and the SQL views

Revision ID: 0001
Revises:
Create Date: 2026-11-24 20:23:31.475306
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(UUID7)
    op.create_table(
        "endpoints",
        sa.Column("name", sa.Text(), nullable=False, comment="URL segment: /webhooks/doitong/{name}"),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="when the endpoint was added",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="last add/rotate",
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_endpoints")),
        comment="Webhook endpoints; their secrets live in endpoint_secrets, encrypted.",
    )
    op.create_table(
        "inbound_webhooks",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False, comment="endpoint name the request came in on"),
        sa.Column(
            "idempotency_key",
            sa.Text(),
            nullable=False,
            comment="Idempotency-Key / X-Doitong-Delivery / webhook-id header, else sha256 of the body",
        ),
        sa.Column("body_sha256", sa.LargeBinary(), nullable=False, comment="SHA-256 of the raw body"),
        sa.Column("job_id", sa.Text(), nullable=False, comment="the body's `id`"),
        sa.Column("status", sa.Text(), nullable=False, comment="the body's `status`"),
        sa.Column(
            "headers",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="request headers (credentials redacted)",
        ),
        sa.Column(
            "body",
            sa.LargeBinary(),
            nullable=True,
            comment="raw body exactly as received (signature re-verifiable)",
        ),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="when we committed it",
        ),
        sa.Column(
            "replay_count",
            sa.Integer(),
            server_default=sa.text("0"),
            nullable=False,
            comment="how many times the same delivery came again",
        ),
        sa.Column(
            "last_replay_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when the last replay came",
        ),
        sa.Column(
            "conflict_count",
            sa.Integer(),
            server_default=sa.text("0"),
            nullable=False,
            comment="replays under this key whose body differed (not applied)",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_webhooks")),
        sa.UniqueConstraint("endpoint", "idempotency_key", name=op.f("uq_inbound_webhooks_endpoint_idempotency_key")),
        comment="Every accepted (signature-verified) webhook request, once per idempotency key.",
    )
    op.create_index("ix_inbound_webhooks_received_at", "inbound_webhooks", ["received_at"], unique=False)
    op.create_table(
        "jobs",
        sa.Column("id", sa.Text(), nullable=False, comment="the provider's job id"),
        sa.Column("service", sa.Text(), nullable=True, comment="provider service, e.g. hedra"),
        sa.Column(
            "type",
            sa.Text(),
            nullable=True,
            comment="generation type, e.g. AVATAR (when registered)",
        ),
        sa.Column(
            "status",
            sa.Text(),
            nullable=False,
            comment="submitted, processing, completed, failed, or as received",
        ),
        sa.Column("url", sa.Text(), nullable=True, comment="output URL once completed"),
        sa.Column("duration", sa.Float(), nullable=True, comment="metadata.duration, seconds"),
        sa.Column("width", sa.Integer(), nullable=True, comment="metadata.width, pixels"),
        sa.Column("height", sa.Integer(), nullable=True, comment="metadata.height, pixels"),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="the provider's metadata object, merged across events",
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True, comment="provider's createdAt"),
        sa.Column(
            "completed_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="provider's completedAt",
        ),
        sa.Column(
            "first_seen_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="when we first heard of the job",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="when the job row last changed",
        ),
        sa.Column(
            "client_reference",
            sa.Text(),
            nullable=True,
            comment="your own reference, when the job was registered",
        ),
        sa.Column(
            "tags",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="your own string tags, when the job was registered",
        ),
        sa.Column(
            "credit_cost",
            sa.Integer(),
            nullable=True,
            comment="credits the provider charged, when known",
        ),
        sa.Column(
            "registered",
            sa.Boolean(),
            server_default=sa.text("false"),
            nullable=False,
            comment="true when the job was registered through us before or after its webhooks",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        comment="One row per provider job, moved only forward by the state machine.",
    )
    op.create_index(
        "ix_jobs_client_reference",
        "jobs",
        ["client_reference"],
        unique=False,
        postgresql_where=sa.text("client_reference IS NOT NULL"),
    )
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"], unique=False)
    op.create_table(
        "endpoint_secrets",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False, comment="the endpoint this secret signs for"),
        sa.Column(
            "secret_sealed",
            sa.LargeBinary(),
            nullable=False,
            comment="AES-256-GCM under RECEIVER_MASTER_KEY, bound to the endpoint name",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="when the secret was added",
        ),
        sa.Column(
            "expires_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="end of a rotation's grace period; NULL = active until rotated",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint"],
            ["endpoints.name"],
            name=op.f("fk_endpoint_secrets_endpoint_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_endpoint_secrets")),
        comment="Signing secrets per endpoint; several are active during a rotation.",
    )
    op.create_index("ix_endpoint_secrets_endpoint", "endpoint_secrets", ["endpoint"], unique=False)
    op.create_table(
        "job_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False, comment="append order"),
        sa.Column("job_id", sa.Text(), nullable=False, comment="the job this event reports on"),
        sa.Column(
            "inbound_id",
            sa.BigInteger(),
            nullable=True,
            comment="the inbound_webhooks row, for webhook-sourced events",
        ),
        sa.Column("source", sa.Text(), nullable=False, comment="webhook, poll or api"),
        sa.Column("status", sa.Text(), nullable=False, comment="status this event reported"),
        sa.Column(
            "previous_status",
            sa.Text(),
            nullable=True,
            comment="jobs.status before this event (NULL: new job)",
        ),
        sa.Column("applied", sa.Boolean(), nullable=False, comment="whether it changed the job's state"),
        sa.Column(
            "outbox_event_id",
            sa.UUID(),
            nullable=True,
            comment="the outbox event it produced, if any",
        ),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="the reported document as received",
        ),
        sa.Column(
            "provider_created_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="createdAt in this event",
        ),
        sa.Column(
            "provider_completed_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="completedAt in this event",
        ),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="when we committed it",
        ),
        sa.ForeignKeyConstraint(
            ["inbound_id"],
            ["inbound_webhooks.id"],
            name=op.f("fk_job_events_inbound_id_inbound_webhooks"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_events_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_events")),
        comment="Append-only history: every accepted delivery, applied or not.",
    )
    op.create_index("ix_job_events_job_id", "job_events", ["job_id", "id"], unique=False)
    op.create_table(
        "outbox_events",
        sa.Column(
            "id",
            sa.UUID(),
            server_default=sa.text("receiver_uuid7()"),
            nullable=False,
            comment="event id, stable across retries, replays and sinks",
        ),
        sa.Column(
            "seq",
            sa.BigInteger(),
            sa.Identity(always=False),
            nullable=False,
            comment="global order of creation",
        ),
        sa.Column("job_id", sa.Text(), nullable=False, comment="the job whose state changed"),
        sa.Column("status", sa.Text(), nullable=False, comment="the job status this event announces"),
        sa.Column(
            "type",
            sa.Text(),
            nullable=False,
            comment="job.processing, job.completed, job.failed, ...",
        ),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="the envelope {id,type,timestamp,data} as sent",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="when the state change committed",
        ),
        sa.Column(
            "dispatched_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when the publisher fanned it out to subscribers (NULL: pending)",
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_outbox_events_job_id_jobs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
        sa.UniqueConstraint("job_id", "status", name=op.f("uq_outbox_events_job_id_status")),
        sa.UniqueConstraint("seq", name=op.f("uq_outbox_events_seq")),
        comment="Transactional outbox: one event per real job state change.",
    )
    op.create_index(
        "ix_outbox_events_pending",
        "outbox_events",
        ["seq"],
        unique=False,
        postgresql_where=sa.text("dispatched_at IS NULL"),
    )

    for statement in UPGRADE_SQL:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE_SQL:
        op.execute(statement)
    op.drop_index(
        "ix_outbox_events_pending",
        table_name="outbox_events",
        postgresql_where=sa.text("dispatched_at IS NULL"),
    )
    op.drop_table("outbox_events")
    op.drop_index("ix_job_events_job_id", table_name="job_events")
    op.drop_table("job_events")
    op.drop_index("ix_endpoint_secrets_endpoint", table_name="endpoint_secrets")
    op.drop_table("endpoint_secrets")
    op.drop_index("ix_jobs_created_at", table_name="jobs")
    op.drop_index("ix_jobs_client_reference", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_inbound_webhooks_received_at", table_name="inbound_webhooks")
    op.drop_table("inbound_webhooks")
    op.drop_table("endpoints")
    op.execute("DROP FUNCTION IF EXISTS receiver_uuid7()")


# The state machine lives in SQL so that concurrent deliveries for one job are
# serialised by the row lock on `jobs`, not by luck in the application.
UPGRADE_SQL = [
    """
    CREATE FUNCTION receiver_iso(ts timestamptz) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
      SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    $$
    """,
    """
    CREATE FUNCTION receiver_status_rank(status text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
      SELECT CASE status
        WHEN 'submitted' THEN 0 WHEN 'processing' THEN 2
        WHEN 'completed' THEN 3 WHEN 'failed' THEN 3 ELSE 1 END
    $$
    """,
    """
    COMMENT ON FUNCTION receiver_status_rank(text) IS
      'submitted < (unknown statuses) < processing < completed|failed'
    """,
    """
    CREATE FUNCTION receiver_status_advances(previous text, next text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
      SELECT previous IS NULL OR (
        previous NOT IN ('completed', 'failed')
        AND next IS DISTINCT FROM previous
        AND (next NOT IN ('submitted', 'processing')
             OR receiver_status_rank(next) > receiver_status_rank(previous)))
    $$
    """,
    """
    COMMENT ON FUNCTION receiver_status_advances(text, text) IS
      'Terminal states never move; an unknown status applies while the job is not terminal; '
      'known non-terminal statuses only move forward.'
    """,
    """
    CREATE FUNCTION receiver_event_type(status text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
      SELECT 'job.' || lower(regexp_replace(status, '[^A-Za-z0-9_]+', '_', 'g'))
    $$
    """,
    """
    CREATE FUNCTION receiver_envelope(event_id uuid, event_type text, job jobs) RETURNS jsonb
    LANGUAGE sql STABLE AS $$
      SELECT jsonb_build_object(
        'id', event_id::text,
        'type', event_type,
        'timestamp', receiver_iso(now()),
        'data', jsonb_build_object(
          'id', job.id, 'status', job.status, 'url', job.url, 'service', job.service,
          'type', job.type, 'created_at', receiver_iso(job.created_at),
          'completed_at', receiver_iso(job.completed_at), 'duration', job.duration,
          'width', job.width, 'height', job.height, 'metadata', job.metadata,
          'client_reference', job.client_reference, 'tags', job.tags,
          'credit_cost', job.credit_cost))
    $$
    """,
    """
    CREATE FUNCTION receiver_apply_job_event(
      p_job_id text, p_status text, p_source text, p_inbound_id bigint, p_payload jsonb,
      p_service text, p_url text, p_created_at timestamptz, p_completed_at timestamptz,
      p_duration double precision, p_width integer, p_height integer
    ) RETURNS uuid
    LANGUAGE plpgsql AS $$
    DECLARE
      v_previous text;
      v_applies boolean;
      v_event uuid;
      v_type text;
      v_job jobs%ROWTYPE;
      v_metadata jsonb := CASE WHEN jsonb_typeof(p_payload -> 'metadata') = 'object'
                               THEN p_payload -> 'metadata' END;
    BEGIN
      INSERT INTO jobs (id, service, status, url, duration, width, height, metadata,
                        created_at, completed_at)
      VALUES (p_job_id, p_service, p_status, p_url, p_duration, p_width, p_height, v_metadata,
              p_created_at, p_completed_at)
      ON CONFLICT (id) DO NOTHING
      RETURNING * INTO v_job;
      IF FOUND THEN
        v_applies := true;
      ELSE
        SELECT status INTO v_previous FROM jobs WHERE id = p_job_id FOR UPDATE;
        v_applies := receiver_status_advances(v_previous, p_status);
        IF v_applies THEN
          UPDATE jobs SET
            status = p_status,
            service = coalesce(p_service, service),
            url = coalesce(p_url, url),
            duration = coalesce(p_duration, duration),
            width = coalesce(p_width, width),
            height = coalesce(p_height, height),
            metadata = CASE WHEN v_metadata IS NULL THEN metadata
                            ELSE coalesce(metadata, '{}'::jsonb) || v_metadata END,
            created_at = coalesce(p_created_at, created_at),
            completed_at = coalesce(p_completed_at, completed_at),
            updated_at = now()
          WHERE id = p_job_id
          RETURNING * INTO v_job;
        END IF;
      END IF;
      IF v_applies THEN
        v_event := receiver_uuid7();
        v_type := receiver_event_type(p_status);
        INSERT INTO outbox_events (id, job_id, status, type, payload)
        VALUES (v_event, p_job_id, p_status, v_type, receiver_envelope(v_event, v_type, v_job))
        ON CONFLICT (job_id, status) DO NOTHING;
        IF FOUND THEN
          PERFORM pg_notify('receiver_outbox', v_event::text);
        ELSE
          v_event := NULL;
        END IF;
      END IF;
      INSERT INTO job_events (job_id, inbound_id, source, status, previous_status, applied,
                              outbox_event_id, payload, provider_created_at, provider_completed_at)
      VALUES (p_job_id, p_inbound_id, p_source, p_status, v_previous, v_applies,
              v_event, p_payload, p_created_at, p_completed_at);
      RETURN v_event;
    END
    $$
    """,
    """
    COMMENT ON FUNCTION receiver_apply_job_event(text, text, text, bigint, jsonb, text, text,
      timestamptz, timestamptz, double precision, integer, integer) IS
      'Record one reported status in job_events, move jobs through the state machine and '
      'enqueue at most one outbox event per (job, status). Returns the new event id or NULL.'
    """,
    """
    CREATE FUNCTION receiver_ingest(
      p_endpoint text, p_idempotency_key text, p_body_sha256 bytea, p_headers jsonb, p_body bytea,
      p_job_id text, p_status text, p_service text, p_url text,
      p_created_at timestamptz, p_completed_at timestamptz,
      p_duration double precision, p_width integer, p_height integer,
      OUT outcome text, OUT result_job_id text, OUT result_event_id uuid
    )
    LANGUAGE plpgsql AS $$
    DECLARE
      v_inbound bigint;
      v_same boolean;
    BEGIN
      INSERT INTO inbound_webhooks (endpoint, idempotency_key, body_sha256, job_id, status,
                                    headers, body)
      VALUES (p_endpoint, p_idempotency_key, p_body_sha256, p_job_id, p_status, p_headers, p_body)
      ON CONFLICT (endpoint, idempotency_key) DO NOTHING
      RETURNING id INTO v_inbound;
      IF v_inbound IS NULL THEN
        UPDATE inbound_webhooks AS w SET
          replay_count = w.replay_count + 1,
          last_replay_at = now(),
          conflict_count = w.conflict_count + (w.body_sha256 <> p_body_sha256)::integer
        WHERE w.endpoint = p_endpoint AND w.idempotency_key = p_idempotency_key
        RETURNING w.body_sha256 = p_body_sha256, w.job_id INTO v_same, result_job_id;
        outcome := CASE WHEN v_same IS FALSE THEN 'conflict' ELSE 'duplicate' END;
        RETURN;
      END IF;
      result_event_id := receiver_apply_job_event(
        p_job_id, p_status, 'webhook', v_inbound, convert_from(p_body, 'UTF8')::jsonb,
        p_service, p_url, p_created_at, p_completed_at, p_duration, p_width, p_height);
      result_job_id := p_job_id;
      outcome := 'accepted';
    END
    $$
    """,
    """
    COMMENT ON FUNCTION receiver_ingest(text, text, bytea, jsonb, bytea, text, text, text, text,
      timestamptz, timestamptz, double precision, integer, integer) IS
      'The whole webhook transaction in one call: idempotency, history, state machine, outbox.'
    """,
    """
    CREATE VIEW job_history AS
    SELECT e.job_id, e.id AS event_seq, e.received_at, e.source, e.status,
           e.previous_status, e.applied, e.outbox_event_id, o.type AS event_type,
           w.endpoint, w.idempotency_key, w.replay_count,
           e.provider_created_at, e.provider_completed_at,
           j.service, j.status AS current_status
    FROM job_events e
    JOIN jobs j ON j.id = e.job_id
    LEFT JOIN inbound_webhooks w ON w.id = e.inbound_id
    LEFT JOIN outbox_events o ON o.id = e.outbox_event_id
    """,
    """
    COMMENT ON VIEW job_history IS
      'Every reported status of every job, in arrival order, with whether it applied and the event it produced.'
    """,
    """
    CREATE VIEW job_latency AS
    SELECT j.id AS job_id, j.service, j.status,
           extract(epoch FROM j.completed_at - j.created_at)::double precision AS provider_seconds,
           extract(epoch FROM t.received_at - j.completed_at)::double precision
             AS receive_delay_seconds,
           j.created_at, j.completed_at, t.received_at
    FROM jobs j
    LEFT JOIN LATERAL (
      SELECT e.received_at FROM job_events e
      WHERE e.job_id = j.id AND e.applied AND e.status = j.status
      ORDER BY e.id LIMIT 1
    ) t ON true
    WHERE j.status IN ('completed', 'failed')
    """,
    """
    COMMENT ON VIEW job_latency IS
      'One row per finished job: provider time (completedAt - createdAt) and our receive delay '
      '(when we committed the terminal event - completedAt), in seconds.'
    """,
    """
    CREATE VIEW daily_usage AS
    SELECT (coalesce(j.created_at, j.first_seen_at) AT TIME ZONE 'UTC')::date AS day,
           j.service, j.status, count(*) AS jobs,
           coalesce(sum(j.credit_cost), 0)::bigint AS credits
    FROM jobs j
    GROUP BY 1, 2, 3
    """,
    """
    COMMENT ON VIEW daily_usage IS
      'Jobs and credits per UTC day of the provider createdAt (first seen when absent), service and status.'
    """,
]

DOWNGRADE_SQL = [
    "DROP VIEW IF EXISTS daily_usage",
    "DROP VIEW IF EXISTS job_latency",
    "DROP VIEW IF EXISTS job_history",
    "DROP FUNCTION IF EXISTS receiver_ingest(text, text, bytea, jsonb, bytea, text, text, text, text,"
    " timestamptz, timestamptz, double precision, integer, integer)",
    "DROP FUNCTION IF EXISTS receiver_apply_job_event(text, text, text, bigint, jsonb, text, text,"
    " timestamptz, timestamptz, double precision, integer, integer)",
    "DROP FUNCTION IF EXISTS receiver_envelope(uuid, text, jobs)",
    "DROP FUNCTION IF EXISTS receiver_event_type(text)",
    "DROP FUNCTION IF EXISTS receiver_status_advances(text, text)",
    "DROP FUNCTION IF EXISTS receiver_status_rank(text)",
    "DROP FUNCTION IF EXISTS receiver_iso(timestamptz)",
]

# Event ids are UUIDs ordered by time (version 7 layout), so the primary key index
# grows at its right edge instead of touching a random page per insert: random
# UUIDs cost a full-page image in the WAL for most inserts after a checkpoint.
UUID7 = """
CREATE FUNCTION receiver_uuid7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
  SELECT encode(
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              placing substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
              FROM 1 FOR 6),
      52, 1), 53, 1),
    'hex')::uuid
$$
"""
