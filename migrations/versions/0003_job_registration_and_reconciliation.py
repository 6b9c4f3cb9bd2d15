"""job registration and reconciliation: jobs.input, registered_at, last_polled_at, receiver_register_job()

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 20:55:17.391971
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column(
            "input",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="what was asked of the provider, when registered (text, avatar, voice, ...)",
        ),
    )
    op.add_column(
        "jobs",
        sa.Column(
            "registered_at", sa.DateTime(timezone=True), nullable=True, comment="when the job was registered through us"
        ),
    )
    op.add_column(
        "jobs",
        sa.Column(
            "last_polled_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="when reconciliation last asked the provider about this job",
        ),
    )
    op.create_index("ix_jobs_first_seen_at_id", "jobs", ["first_seen_at", "id"], unique=False)
    op.create_index(
        "ix_jobs_unfinished",
        "jobs",
        ["updated_at"],
        unique=False,
        postgresql_where=sa.text("status NOT IN ('completed', 'failed')"),
    )
    op.alter_column(
        "job_events",
        "payload",
        nullable=True,
        comment="the reported document (webhooks: NULL, the raw body is inbound_webhooks.body)",
        existing_type=postgresql.JSONB(astext_type=sa.Text()),
        existing_comment="the reported document as received",
    )
    for statement in INGEST_UPGRADE:
        op.execute(statement)
    op.execute(REGISTER)
    op.execute(REGISTER_COMMENT)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS receiver_register_job(text, text, text, text, jsonb, integer, jsonb)")
    for statement in INGEST_DOWNGRADE:
        op.execute(statement)
    op.execute(
        "UPDATE job_events e SET payload = convert_from(w.body, 'UTF8')::jsonb FROM inbound_webhooks w"
        " WHERE e.payload IS NULL AND w.id = e.inbound_id AND w.body IS NOT NULL"
    )
    op.execute("UPDATE job_events SET payload = '{}'::jsonb WHERE payload IS NULL")
    op.alter_column(
        "job_events",
        "payload",
        nullable=False,
        comment="the reported document as received",
        existing_type=postgresql.JSONB(astext_type=sa.Text()),
    )
    op.drop_index(
        "ix_jobs_unfinished", table_name="jobs", postgresql_where=sa.text("status NOT IN ('completed', 'failed')")
    )
    op.drop_index("ix_jobs_first_seen_at_id", table_name="jobs")
    op.drop_column("jobs", "last_polled_at")
    op.drop_column("jobs", "registered_at")
    op.drop_column("jobs", "input")


# Registration merges into whatever webhooks already created: it fills in what
# only we know (client reference, tags, credit cost, input) and never touches
# the status, so a job registered after its `completed` webhook stays completed.
REGISTER = """
CREATE FUNCTION receiver_register_job(
  p_id text, p_service text, p_type text, p_client_reference text, p_tags jsonb,
  p_credit_cost integer, p_input jsonb,
  OUT created boolean, OUT status text
)
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO jobs AS j (id, service, type, status, client_reference, tags, credit_cost, input,
                         registered, registered_at)
  VALUES (p_id, p_service, p_type, 'submitted', p_client_reference, p_tags, p_credit_cost, p_input,
          true, now())
  ON CONFLICT (id) DO UPDATE SET
    registered = true,
    registered_at = coalesce(j.registered_at, now()),
    service = coalesce(j.service, EXCLUDED.service),
    type = coalesce(EXCLUDED.type, j.type),
    client_reference = coalesce(EXCLUDED.client_reference, j.client_reference),
    tags = coalesce(EXCLUDED.tags, j.tags),
    credit_cost = coalesce(EXCLUDED.credit_cost, j.credit_cost),
    input = coalesce(EXCLUDED.input, j.input),
    updated_at = now()
  RETURNING (xmax = 0), j.status INTO created, status;
  IF created THEN
    INSERT INTO job_events (job_id, source, status, previous_status, applied, payload)
    VALUES (p_id, 'api', 'submitted', NULL, true,
            jsonb_build_object('client_reference', p_client_reference, 'tags', p_tags,
                               'credit_cost', p_credit_cost));
  END IF;
END
$$
"""

REGISTER_COMMENT = """
COMMENT ON FUNCTION receiver_register_job(text, text, text, text, jsonb, integer, jsonb) IS
  'Register a job submitted through us, or merge the registration into a job its webhooks created first.'
"""


# Measured with bench/ingest.py and pgbench: NOTIFY takes a database-wide lock at
# commit, so every webhook transaction that notified committed one at a time
# (receiver_ingest: ~2,950 tps with NOTIFY, ~5,300 without). The server now sends
# one coalesced NOTIFY after its commits (receiver/notify.py); the wake-up is a
# hint, the publisher's poll interval covers any that is missed. Webhook events
# no longer copy the body into job_events.payload: it is inbound_webhooks.body.
_APPLY_V2 = """
CREATE FUNCTION receiver_apply_job_event(
  p_job_id text, p_status text, p_source text, p_inbound_id bigint, p_payload jsonb,
  p_metadata jsonb, p_service text, p_url text, p_created_at timestamptz,
  p_completed_at timestamptz, p_duration double precision, p_width integer, p_height integer
) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
  v_previous text;
  v_applies boolean;
  v_event uuid;
  v_type text;
  v_job jobs%ROWTYPE;
  v_metadata jsonb := CASE WHEN jsonb_typeof(p_metadata) = 'object' THEN p_metadata END;
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
    IF NOT FOUND THEN
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
"""

_INGEST_V2 = """
CREATE FUNCTION receiver_ingest(
  p_endpoint text, p_idempotency_key text, p_body_sha256 bytea, p_headers jsonb, p_body bytea,
  p_job_id text, p_status text, p_service text, p_url text, p_metadata jsonb,
  p_created_at timestamptz, p_completed_at timestamptz,
  p_duration double precision, p_width integer, p_height integer,
  OUT outcome text, OUT result_job_id text, OUT result_event_id uuid, OUT result_registered boolean
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
    p_job_id, p_status, 'webhook', v_inbound, NULL, p_metadata,
    p_service, p_url, p_created_at, p_completed_at, p_duration, p_width, p_height);
  SELECT registered INTO result_registered FROM jobs WHERE id = p_job_id;
  result_job_id := p_job_id;
  outcome := 'accepted';
END
$$
"""

_OLD_INGEST_SIGNATURE = (
    "receiver_ingest(text, text, bytea, jsonb, bytea, text, text, text, text,"
    " timestamptz, timestamptz, double precision, integer, integer)"
)
_OLD_APPLY_SIGNATURE = (
    "receiver_apply_job_event(text, text, text, bigint, jsonb, text, text,"
    " timestamptz, timestamptz, double precision, integer, integer)"
)
_NEW_INGEST_SIGNATURE = (
    "receiver_ingest(text, text, bytea, jsonb, bytea, text, text, text, text, jsonb,"
    " timestamptz, timestamptz, double precision, integer, integer)"
)
_NEW_APPLY_SIGNATURE = (
    "receiver_apply_job_event(text, text, text, bigint, jsonb, jsonb, text, text,"
    " timestamptz, timestamptz, double precision, integer, integer)"
)

INGEST_UPGRADE = [
    f"DROP FUNCTION {_OLD_INGEST_SIGNATURE}",
    f"DROP FUNCTION {_OLD_APPLY_SIGNATURE}",
    _APPLY_V2,
    f"COMMENT ON FUNCTION {_NEW_APPLY_SIGNATURE} IS "
    "'Record one reported status in job_events, move jobs through the state machine and "
    "enqueue at most one outbox event per (job, status). Returns the new event id or NULL.'",
    _INGEST_V2,
    f"COMMENT ON FUNCTION {_NEW_INGEST_SIGNATURE} IS "
    "'The whole webhook transaction in one call: idempotency, history, state machine, outbox.'",
]

# Downgrade restores revision 0002's functions (with NOTIFY in the transaction).
_APPLY_V1 = (
    _APPLY_V2.replace("p_payload jsonb,\n  p_metadata jsonb,", "p_payload jsonb,")
    .replace(
        "v_metadata jsonb := CASE WHEN jsonb_typeof(p_metadata) = 'object' THEN p_metadata END;",
        "v_metadata jsonb := CASE WHEN jsonb_typeof(p_payload -> 'metadata') = 'object'\n"
        "                           THEN p_payload -> 'metadata' END;",
    )
    .replace(
        "    IF NOT FOUND THEN\n      v_event := NULL;\n    END IF;",
        "    IF FOUND THEN\n      PERFORM pg_notify('receiver_outbox', v_event::text);\n"
        "    ELSE\n      v_event := NULL;\n    END IF;",
    )
)
_INGEST_V1 = (
    _INGEST_V2.replace("p_url text, p_metadata jsonb,", "p_url text,")
    .replace(", OUT result_registered boolean", "")
    .replace(
        "p_job_id, p_status, 'webhook', v_inbound, NULL, p_metadata,",
        "p_job_id, p_status, 'webhook', v_inbound, convert_from(p_body, 'UTF8')::jsonb,",
    )
    .replace("  SELECT registered INTO result_registered FROM jobs WHERE id = p_job_id;\n", "")
)

INGEST_DOWNGRADE = [
    f"DROP FUNCTION {_NEW_INGEST_SIGNATURE}",
    f"DROP FUNCTION {_NEW_APPLY_SIGNATURE}",
    _APPLY_V1,
    _INGEST_V1,
]
