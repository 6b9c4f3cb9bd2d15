"""trace context: the W3C traceparent/tracestate kept with each outbox event, and replayed_at on deliveries (#12)

- outbox_events.traceparent, outbox_events.tracestate: the context of the span that created the
  event (the webhook's ingest span, a reconciliation poll), so that every delivery attempt
  continues that trace, whichever publisher sends it and however late. NULL when tracing is off.
- deliveries.replayed_at: when a replay queued the delivery again; its attempts then start a new
  trace, linked to the event's.
- receiver_apply_job_event() and receiver_ingest() take the context as two more arguments, with
  DEFAULT NULL, and receiver_ingest() also answers the job's status after it (result_status), so
  a trace can tell an out-of-order webhook from a new state.

Processes of revision 0007 keep working on this schema: their calls, with the arguments they
know, reach the new functions through the defaults, and they read the results by name. New
columns are nullable without a default: adding them rewrites nothing.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 12:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_OLD_APPLY_SIGNATURE = (
    "receiver_apply_job_event(text, text, text, bigint, jsonb, jsonb, text, text,"
    " timestamptz, timestamptz, double precision, integer, integer)"
)
_OLD_INGEST_SIGNATURE = (
    "receiver_ingest(text, text, bytea, jsonb, bytea, text, text, text, text, jsonb,"
    " timestamptz, timestamptz, double precision, integer, integer)"
)
_NEW_APPLY_SIGNATURE = (
    "receiver_apply_job_event(text, text, text, bigint, jsonb, jsonb, text, text,"
    " timestamptz, timestamptz, double precision, integer, integer, text, text)"
)
_NEW_INGEST_SIGNATURE = (
    "receiver_ingest(text, text, bytea, jsonb, bytea, text, text, text, text, jsonb,"
    " timestamptz, timestamptz, double precision, integer, integer, text, text)"
)
_APPLY_COMMENT = (
    "'Record one reported status in job_events, move jobs through the state machine and "
    "enqueue at most one outbox event per (job, status). Returns the new event id or NULL.'"
)
_INGEST_COMMENT = "'The whole webhook transaction in one call: idempotency, history, state machine, outbox.'"

_APPLY = """
CREATE FUNCTION receiver_apply_job_event(
  p_job_id text, p_status text, p_source text, p_inbound_id bigint, p_payload jsonb,
  p_metadata jsonb, p_service text, p_url text, p_created_at timestamptz,
  p_completed_at timestamptz, p_duration double precision, p_width integer, p_height integer,
  p_traceparent text DEFAULT NULL, p_tracestate text DEFAULT NULL
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
    INSERT INTO outbox_events (id, job_id, status, type, payload, traceparent, tracestate)
    VALUES (v_event, p_job_id, p_status, v_type, receiver_envelope(v_event, v_type, v_job),
            p_traceparent, p_tracestate)
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

_INGEST = """
CREATE FUNCTION receiver_ingest(
  p_endpoint text, p_idempotency_key text, p_body_sha256 bytea, p_headers jsonb, p_body bytea,
  p_job_id text, p_status text, p_service text, p_url text, p_metadata jsonb,
  p_created_at timestamptz, p_completed_at timestamptz,
  p_duration double precision, p_width integer, p_height integer,
  p_traceparent text DEFAULT NULL, p_tracestate text DEFAULT NULL,
  OUT outcome text, OUT result_job_id text, OUT result_event_id uuid, OUT result_registered boolean,
  OUT result_status text
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
    p_service, p_url, p_created_at, p_completed_at, p_duration, p_width, p_height,
    p_traceparent, p_tracestate);
  SELECT registered, status INTO result_registered, result_status FROM jobs WHERE id = p_job_id;
  result_job_id := p_job_id;
  outcome := 'accepted';
END
$$
"""

# Revision 0003's functions, restored by the downgrade.
_OLD_APPLY = """
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

_OLD_INGEST = """
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

UPGRADE = (
    "ALTER TABLE outbox_events ADD COLUMN traceparent text, ADD COLUMN tracestate text",
    "COMMENT ON COLUMN outbox_events.traceparent IS 'W3C traceparent of the span that created it (ingest, poll);"
    " its deliveries continue that trace. NULL: tracing was off'",
    "COMMENT ON COLUMN outbox_events.tracestate IS 'W3C tracestate that came with traceparent, if any'",
    "ALTER TABLE deliveries ADD COLUMN replayed_at timestamptz",
    "COMMENT ON COLUMN deliveries.replayed_at IS 'when `receiver replay` (or the console) last queued it again;"
    " its attempts then start a new trace linked to the event''s'",
    # A new argument list is a new function: the old one goes first, or calls would be ambiguous.
    f"DROP FUNCTION {_OLD_INGEST_SIGNATURE}",
    f"DROP FUNCTION {_OLD_APPLY_SIGNATURE}",
    _APPLY,
    f"COMMENT ON FUNCTION {_NEW_APPLY_SIGNATURE} IS {_APPLY_COMMENT}",
    _INGEST,
    f"COMMENT ON FUNCTION {_NEW_INGEST_SIGNATURE} IS {_INGEST_COMMENT}",
)

DOWNGRADE = (
    f"DROP FUNCTION {_NEW_INGEST_SIGNATURE}",
    f"DROP FUNCTION {_NEW_APPLY_SIGNATURE}",
    _OLD_APPLY,
    f"COMMENT ON FUNCTION {_OLD_APPLY_SIGNATURE} IS {_APPLY_COMMENT}",
    _OLD_INGEST,
    f"COMMENT ON FUNCTION {_OLD_INGEST_SIGNATURE} IS {_INGEST_COMMENT}",
    "ALTER TABLE deliveries DROP COLUMN replayed_at",
    "ALTER TABLE outbox_events DROP COLUMN traceparent, DROP COLUMN tracestate",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
