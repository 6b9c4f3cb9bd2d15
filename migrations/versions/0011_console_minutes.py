"""job_minutes and attempt_minutes: the console's per-minute counts, kept by triggers

The console's overview shows the jobs first seen in the last hour (or day) by status and
service, and each subscriber's attempts, success rate and p50/p99 send time, refreshed every
5 s. Counting them from `jobs` and `delivery_attempts` visits each of the window's rows (rows
that fresh have no visibility-map bits, so no index-only scan helps): ~3 s of a core once an hour
holds 3.6 million jobs, and ingest's p99 tripled while the overview was open (bench/console.py);
percentiles over an hour of attempts sort every one of them. These tables hold the same answers
a minute at a time; a window sums 60 or 1,440 minutes.

- receiver_count_job() (AFTER INSERT OR DELETE on jobs, and AFTER UPDATE of status, service or
  first_seen_at when one of them changes): -1 where the job was, +1 where it is.
- receiver_count_attempts() (AFTER INSERT on delivery_attempts, once per statement, with the
  statement's rows as a transition table): attempts and delivered by minute, subscriber and
  send-time bucket (receiver_latency_bucket(): ten a decade).
- Both write rows of the writing backend's own, so concurrent webhooks or publishers never wait
  on a shared counter row; receiver_fold_minutes() folds past minutes' rows into one per key
  (writer 0), run by the serve process once a minute (receiver/core/minutes.py).

The backfill counts the last 25 hours (the console's longest window and an hour more; older
minutes are not read): jobs through ix_jobs_first_seen_at_id, attempts per subscriber through
ix_delivery_attempts_subscription_id. CREATE TRIGGER locks each table against writes until this
migration's transaction commits, so nothing written meanwhile is missed or counted twice: ingest
and publishers wait for the backfill (seconds at a million jobs a day).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 16:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLES = """
CREATE TABLE job_minutes (
  minute timestamptz NOT NULL,
  service text NOT NULL,
  status text NOT NULL,
  writer integer NOT NULL,
  jobs bigint NOT NULL,
  CONSTRAINT pk_job_minutes PRIMARY KEY (minute, service, status, writer)
);
CREATE INDEX ix_job_minutes_unfolded ON job_minutes (minute) WHERE writer <> 0;
COMMENT ON TABLE job_minutes IS 'Jobs by the minute they were first seen, service and status, kept by triggers on jobs.';
COMMENT ON COLUMN job_minutes.minute IS 'the minute the jobs were first seen in';
COMMENT ON COLUMN job_minutes.service IS 'their service ('''' when a job has none)';
COMMENT ON COLUMN job_minutes.status IS 'their status now';
COMMENT ON COLUMN job_minutes.writer IS 'the backend (pid) that counted them, 0 once folded';
COMMENT ON COLUMN job_minutes.jobs IS 'how many (a sum over writers; one writer''s row may be negative)';

CREATE TABLE attempt_minutes (
  minute timestamptz NOT NULL,
  subscription_id text NOT NULL,
  bucket smallint NOT NULL,
  writer integer NOT NULL,
  attempts bigint NOT NULL,
  delivered bigint NOT NULL,
  CONSTRAINT pk_attempt_minutes PRIMARY KEY (minute, subscription_id, bucket, writer)
);
CREATE INDEX ix_attempt_minutes_unfolded ON attempt_minutes (minute) WHERE writer <> 0;
COMMENT ON TABLE attempt_minutes IS 'Delivery attempts by the minute they started, subscriber and send time, kept by a trigger on delivery_attempts.';
COMMENT ON COLUMN attempt_minutes.minute IS 'the minute the attempts started in';
COMMENT ON COLUMN attempt_minutes.subscription_id IS 'their subscriber';
COMMENT ON COLUMN attempt_minutes.bucket IS 'their send time, receiver_latency_bucket(duration_ms): 0 under 1 ms, b from 10^((b-1)/10) to 10^(b/10) ms, -1 not timed';
COMMENT ON COLUMN attempt_minutes.writer IS 'the backend (pid) that counted them, 0 once folded';
COMMENT ON COLUMN attempt_minutes.attempts IS 'how many';
COMMENT ON COLUMN attempt_minutes.delivered IS 'how many of them delivered';
"""

# As receiver/sql/state_machine.sql has them, explained there.
FUNCTIONS = """
CREATE FUNCTION receiver_count_job() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    INSERT INTO job_minutes AS m (minute, service, status, writer, jobs)
    VALUES (date_trunc('minute', OLD.first_seen_at), coalesce(OLD.service, ''), OLD.status,
            pg_backend_pid(), -1)
    ON CONFLICT (minute, service, status, writer) DO UPDATE SET jobs = m.jobs - 1;
  END IF;
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO job_minutes AS m (minute, service, status, writer, jobs)
    VALUES (date_trunc('minute', NEW.first_seen_at), coalesce(NEW.service, ''), NEW.status,
            pg_backend_pid(), 1)
    ON CONFLICT (minute, service, status, writer) DO UPDATE SET jobs = m.jobs + 1;
  END IF;
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION receiver_count_job() IS
  'Trigger: move a written job''s count in job_minutes (-1 where it was, +1 where it is), in rows of this backend''s own.';

CREATE TRIGGER jobs_counted AFTER INSERT OR DELETE ON jobs
FOR EACH ROW EXECUTE FUNCTION receiver_count_job();
CREATE TRIGGER jobs_recounted AFTER UPDATE OF status, service, first_seen_at ON jobs
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.service IS DISTINCT FROM NEW.service
                   OR OLD.first_seen_at IS DISTINCT FROM NEW.first_seen_at)
EXECUTE FUNCTION receiver_count_job();

CREATE FUNCTION receiver_latency_bucket(ms integer) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN ms IS NULL THEN -1
              WHEN ms < 1 THEN 0
              ELSE 1 + floor(10 * log(ms::numeric))::smallint END
$$;
COMMENT ON FUNCTION receiver_latency_bucket(integer) IS
  'The attempt_minutes bucket of a send time in milliseconds: 0 under 1 ms, b from 10^((b-1)/10) to 10^(b/10) ms, -1 for none.';

CREATE FUNCTION receiver_count_attempts() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO attempt_minutes AS m (minute, subscription_id, bucket, writer, attempts, delivered)
  SELECT date_trunc('minute', a.at), a.subscription_id, receiver_latency_bucket(a.duration_ms),
         pg_backend_pid(), count(*), count(*) FILTER (WHERE a.outcome = 'delivered')
  FROM added a
  GROUP BY 1, 2, 3
  ON CONFLICT (minute, subscription_id, bucket, writer) DO UPDATE
    SET attempts = m.attempts + EXCLUDED.attempts, delivered = m.delivered + EXCLUDED.delivered;
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION receiver_count_attempts() IS
  'Trigger: count a statement''s new delivery attempts in attempt_minutes, in rows of this backend''s own.';

CREATE TRIGGER delivery_attempts_counted AFTER INSERT ON delivery_attempts
REFERENCING NEW TABLE AS added
FOR EACH STATEMENT EXECUTE FUNCTION receiver_count_attempts();

CREATE FUNCTION receiver_fold_minutes(p_before timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  v_jobs bigint;
  v_attempts bigint;
BEGIN
  IF NOT pg_try_advisory_xact_lock(4611686018427388011) THEN
    RETURN 0;
  END IF;
  WITH picked AS (
    SELECT minute, service, status, writer FROM job_minutes
    WHERE writer <> 0 AND minute < p_before
    FOR UPDATE SKIP LOCKED
  ), moved AS (
    DELETE FROM job_minutes m USING picked p
    WHERE m.minute = p.minute AND m.service = p.service AND m.status = p.status AND m.writer = p.writer
    RETURNING m.minute, m.service, m.status, m.jobs
  ), summed AS (
    SELECT minute, service, status, sum(jobs) AS jobs, count(*) AS rows FROM moved GROUP BY 1, 2, 3
  ), added AS (
    INSERT INTO job_minutes AS m (minute, service, status, writer, jobs)
    SELECT minute, service, status, 0, jobs FROM summed
    ON CONFLICT (minute, service, status, writer) DO UPDATE SET jobs = m.jobs + EXCLUDED.jobs
  )
  SELECT coalesce(sum(rows), 0) INTO v_jobs FROM summed;
  WITH picked AS (
    SELECT minute, subscription_id, bucket, writer FROM attempt_minutes
    WHERE writer <> 0 AND minute < p_before
    FOR UPDATE SKIP LOCKED
  ), moved AS (
    DELETE FROM attempt_minutes m USING picked p
    WHERE m.minute = p.minute AND m.subscription_id = p.subscription_id AND m.bucket = p.bucket
      AND m.writer = p.writer
    RETURNING m.minute, m.subscription_id, m.bucket, m.attempts, m.delivered
  ), summed AS (
    SELECT minute, subscription_id, bucket, sum(attempts) AS attempts, sum(delivered) AS delivered,
           count(*) AS rows
    FROM moved GROUP BY 1, 2, 3
  ), added AS (
    INSERT INTO attempt_minutes AS m (minute, subscription_id, bucket, writer, attempts, delivered)
    SELECT minute, subscription_id, bucket, 0, attempts, delivered FROM summed
    ON CONFLICT (minute, subscription_id, bucket, writer) DO UPDATE
      SET attempts = m.attempts + EXCLUDED.attempts, delivered = m.delivered + EXCLUDED.delivered
  )
  SELECT coalesce(sum(rows), 0) INTO v_attempts FROM summed;
  RETURN v_jobs + v_attempts;
END
$$;
COMMENT ON FUNCTION receiver_fold_minutes(timestamptz) IS
  'Fold the per-backend job_minutes and attempt_minutes rows of minutes before p_before into writer 0; returns the rows folded.';
"""

BACKFILL = (
    """
    INSERT INTO job_minutes (minute, service, status, writer, jobs)
    SELECT date_trunc('minute', first_seen_at), coalesce(service, ''), status, 0, count(*)
    FROM jobs
    WHERE first_seen_at >= date_trunc('minute', now() - interval '25 hours')
    GROUP BY 1, 2, 3
    """,
    """
    INSERT INTO attempt_minutes (minute, subscription_id, bucket, writer, attempts, delivered)
    SELECT date_trunc('minute', a.at), a.subscription_id, receiver_latency_bucket(a.duration_ms), 0,
           count(*), count(*) FILTER (WHERE a.outcome = 'delivered')
    FROM subscriptions s
    JOIN delivery_attempts a
      ON a.subscription_id = s.id AND a.at >= date_trunc('minute', now() - interval '25 hours')
    GROUP BY 1, 2, 3
    """,
)

DOWNGRADE = (
    "DROP TRIGGER delivery_attempts_counted ON delivery_attempts",
    "DROP TRIGGER jobs_recounted ON jobs",
    "DROP TRIGGER jobs_counted ON jobs",
    "DROP FUNCTION receiver_fold_minutes(timestamptz)",
    "DROP FUNCTION receiver_count_attempts()",
    "DROP FUNCTION receiver_latency_bucket(integer)",
    "DROP FUNCTION receiver_count_job()",
    "DROP TABLE attempt_minutes",
    "DROP TABLE job_minutes",
)


def upgrade() -> None:
    op.execute(TABLES)
    op.execute(FUNCTIONS)
    for statement in BACKFILL:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
