"""operational events: outbox events about the receiver itself

- outbox_events takes events that are not about a job: `job_id` and `status` may be NULL, and a
  new `subject` names what such an event is about (`subscriber:<id>`, `endpoint:<name>`,
  `jobs`). A CHECK keeps the two kinds apart: a `job.*` event has a job and a status (so the
  per-(job, status) guard still covers every one of them), an `operational.*` event has a
  subject and is one of the known types.
- receiver_delivers(): who receives what. Job events by the subscription's filters (none: all
  of them); operational events only when the subscription names the type or `operational.*`,
  and never one about the subscription itself.
- receiver_operational_event(): writes one, with the usual envelope, in the caller's transaction.
- deliveries_dead (trigger): a delivery of a job event that becomes `dead`, by whatever
  statement, emits `operational.delivery_dead` in the same transaction.
- deliveries_operational_line (trigger): deliveries.job_id is NOT NULL and is the line a
  subscriber's deliveries keep order in; the previous release's fan-out and replay copy
  outbox_events.job_id into it. For an operational event that would be NULL (a failed
  fan-out for every publisher still on 0005-0009 code), so the trigger fills in its line and
  applies receiver_delivers(), which that code does not know. Drop it once no release before
  0010 runs.
- operational_marks: when a once-per-window operational event was last emitted, so that
  several processes emit it once between them.

Forged-signature bursts are counted from webhook_outcomes (0006, outcome `unauthorized`), which
each server process already adds its counts to; no table of their own.

The CHECK is added NOT VALID, and validated after that transaction has committed: validating
in it would scan outbox_events under the exclusive lock ALTER TABLE holds, stopping ingest for
the whole scan. VALIDATE CONSTRAINT takes a lock that lets reads and writes go on. Every row
before this revision is a job event, which satisfies it.

Downgrade deletes operational events (and their deliveries) before job_id is NOT NULL again.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 12:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TYPES = (
    "operational.subscriber_disabled",
    "operational.circuit_opened",
    "operational.circuit_closed",
    "operational.delivery_dead",
    "operational.endpoint_forged_signatures",
    "operational.jobs_stale",
)

UPGRADE = (
    "ALTER TABLE outbox_events ALTER COLUMN job_id DROP NOT NULL",
    "ALTER TABLE outbox_events ALTER COLUMN status DROP NOT NULL",
    "ALTER TABLE outbox_events ADD COLUMN subject text",
    f"""
    ALTER TABLE outbox_events ADD CONSTRAINT ck_outbox_events_about CHECK (
      CASE WHEN type LIKE 'job.%' THEN job_id IS NOT NULL AND status IS NOT NULL AND subject IS NULL
           ELSE type IN ({", ".join(f"'{t}'" for t in TYPES)})
                AND job_id IS NULL AND status IS NULL AND subject IS NOT NULL
      END) NOT VALID
    """,
    "COMMENT ON TABLE outbox_events IS"
    " 'Transactional outbox: one event per real job state change, and the receiver''s operational events.'",
    "COMMENT ON COLUMN outbox_events.job_id IS 'the job whose state changed (NULL: an operational event)'",
    "COMMENT ON COLUMN outbox_events.status IS 'the job status this event announces (NULL: an operational event)'",
    "COMMENT ON COLUMN outbox_events.type IS"
    " 'job.processing, job.completed, job.failed, ...; operational.* for events about the receiver'",
    "COMMENT ON COLUMN outbox_events.subject IS"
    " 'what an operational event is about: subscriber:<id>, endpoint:<name> or jobs (NULL: a job event)'",
    "COMMENT ON COLUMN deliveries.job_id IS"
    " 'the event''s job, or operational:<subject> (deliveries per subscriber and line go in order)'",
    """
    CREATE TABLE operational_marks (
      type text NOT NULL,
      subject text NOT NULL,
      emitted_at timestamptz NOT NULL,
      covered_until timestamptz,
      CONSTRAINT pk_operational_marks PRIMARY KEY (type, subject)
    )
    """,
    "COMMENT ON TABLE operational_marks IS"
    " 'When an operational event emitted at most once per window was last emitted, across every process.'",
    "COMMENT ON COLUMN operational_marks.type IS 'the operational event type'",
    "COMMENT ON COLUMN operational_marks.subject IS 'what it was about, as outbox_events.subject'",
    "COMMENT ON COLUMN operational_marks.emitted_at IS 'when it was last emitted'",
    "COMMENT ON COLUMN operational_marks.covered_until IS"
    " 'what the last one covered (jobs_stale: the last change of the newest job it reported)'",
    """
    CREATE FUNCTION receiver_delivers(
      subscription_id text, event_types text[], services text[],
      event_type text, event_subject text, event_service text
    ) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
      SELECT coalesce(CASE
        WHEN event_type LIKE 'operational.%' THEN
          (event_type = ANY(event_types) OR 'operational.*' = ANY(event_types))
          AND event_subject IS DISTINCT FROM 'subscriber:' || subscription_id
        ELSE
          (event_types IS NULL OR event_type = ANY(event_types) OR 'job.*' = ANY(event_types))
          AND (services IS NULL OR event_service = ANY(services))
        END, false)
    $$
    """,
    """
    COMMENT ON FUNCTION receiver_delivers(text, text[], text[], text, text, text) IS
      'Whether a subscription receives an event: job events by its filters (none: all), operational events only when named (or operational.*), never one about itself.'
    """,
    """
    CREATE FUNCTION receiver_operational_event(p_type text, p_subject text, p_data jsonb) RETURNS uuid
    LANGUAGE plpgsql AS $$
    DECLARE
      v_event uuid := receiver_uuid7();
    BEGIN
      INSERT INTO outbox_events (id, type, subject, payload)
      VALUES (v_event, p_type, p_subject,
              jsonb_build_object('id', v_event::text, 'type', p_type, 'timestamp', receiver_iso(now()),
                                 'data', p_data));
      PERFORM pg_notify('receiver_outbox', '');
      RETURN v_event;
    END
    $$
    """,
    """
    COMMENT ON FUNCTION receiver_operational_event(text, text, jsonb) IS
      'Enqueue an operational event (type operational.*, subject subscriber:<id>, endpoint:<name> or jobs) in the caller''s transaction. Returns its id.'
    """,
    """
    CREATE FUNCTION receiver_delivery_died() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM receiver_operational_event(
        'operational.delivery_dead', 'subscriber:' || s.id,
        jsonb_build_object(
          'subscriber_id', s.id, 'kind', s.kind, 'url', s.url,
          'event_id', o.id::text, 'event_type', o.type, 'job_id', o.job_id,
          'attempts', NEW.attempts, 'last_status', NEW.last_status, 'last_error', NEW.last_error))
      FROM outbox_events o, subscriptions s
      WHERE o.id = NEW.event_id AND s.id = NEW.subscription_id AND o.job_id IS NOT NULL;
      RETURN NULL;
    END
    $$
    """,
    """
    COMMENT ON FUNCTION receiver_delivery_died() IS
      'Trigger: a delivery of a job event became dead; emits operational.delivery_dead (never for an operational event: no loop).'
    """,
    """
    CREATE TRIGGER deliveries_dead AFTER UPDATE OF state ON deliveries
    FOR EACH ROW WHEN (NEW.state = 'dead' AND OLD.state <> 'dead')
    EXECUTE FUNCTION receiver_delivery_died()
    """,
    """
    CREATE FUNCTION receiver_delivery_line() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
      v_subject text;
      v_wanted boolean;
    BEGIN
      SELECT o.subject, receiver_delivers(s.id, s.event_types, s.services, o.type, o.subject, NULL)
      INTO v_subject, v_wanted
      FROM outbox_events o, subscriptions s
      WHERE o.id = NEW.event_id AND s.id = NEW.subscription_id;
      IF v_subject IS NULL OR NOT v_wanted THEN
        RETURN NULL;
      END IF;
      NEW.job_id := 'operational:' || v_subject;
      RETURN NEW;
    END
    $$
    """,
    """
    COMMENT ON FUNCTION receiver_delivery_line() IS
      'Trigger, for code before 0010 that copies outbox_events.job_id into deliveries: gives an operational event its line, or skips the row when the subscription did not ask for it.'
    """,
    """
    CREATE TRIGGER deliveries_operational_line BEFORE INSERT ON deliveries
    FOR EACH ROW WHEN (NEW.job_id IS NULL)
    EXECUTE FUNCTION receiver_delivery_line()
    """,
)

DOWNGRADE = (
    "DROP TRIGGER deliveries_operational_line ON deliveries",
    "DROP FUNCTION receiver_delivery_line()",
    "DROP TRIGGER deliveries_dead ON deliveries",
    "DROP FUNCTION receiver_delivery_died()",
    "DROP FUNCTION receiver_operational_event(text, text, jsonb)",
    "DROP FUNCTION receiver_delivers(text, text[], text[], text, text, text)",
    "DROP TABLE operational_marks",
    "DELETE FROM outbox_events WHERE job_id IS NULL",  # their deliveries go with them (ON DELETE CASCADE)
    "ALTER TABLE outbox_events DROP CONSTRAINT ck_outbox_events_about",
    "ALTER TABLE outbox_events DROP COLUMN subject",
    "ALTER TABLE outbox_events ALTER COLUMN status SET NOT NULL",
    "ALTER TABLE outbox_events ALTER COLUMN job_id SET NOT NULL",
    "COMMENT ON TABLE outbox_events IS 'Transactional outbox: one event per real job state change.'",
    "COMMENT ON COLUMN outbox_events.job_id IS 'the job whose state changed'",
    "COMMENT ON COLUMN outbox_events.status IS 'the job status this event announces'",
    "COMMENT ON COLUMN outbox_events.type IS 'job.processing, job.completed, job.failed, ...'",
    "COMMENT ON COLUMN deliveries.job_id IS 'the event''s job (deliveries per subscriber and job go in order)'",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE outbox_events VALIDATE CONSTRAINT ck_outbox_events_about")


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
