"""job_minutes: the jobs of each minute by service and status, kept by triggers on jobs

The console's overview shows the jobs first seen in the last hour (or day) by status and
service, refreshed every 5 s. Counting them from `jobs` visits each of the window's jobs (rows
that fresh have no visibility-map bits, so no index-only scan helps): ~3 s of a core once an hour
holds 3.6 million jobs, and ingest's p99 tripled while the overview was open (bench/console.py).
job_minutes holds the same answer a minute at a time; the overview sums 60 or 1,440 minutes.

- receiver_count_job() (AFTER INSERT OR DELETE, and AFTER UPDATE of status, service or
  first_seen_at when one of them changes): -1 where the job was, +1 where it is, in rows of the
  writing backend's own, so that concurrent webhooks never wait on a shared counter row.
- receiver_fold_job_minutes(): past minutes' rows into one per key (writer 0), by the serve
  process once a minute (receiver/jobs/minutes.py).

The backfill counts the jobs first seen in the last 25 hours (the console's longest window and
an hour more; older minutes are not read). CREATE TRIGGER locks jobs against writes until this
migration's transaction commits, so no job written meanwhile is missed or counted twice: ingest
waits for the backfill, an index range of 25 hours of jobs (seconds at a million jobs a day).

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

TABLE = """
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

CREATE FUNCTION receiver_fold_job_minutes(p_before timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  v_folded bigint;
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
  SELECT coalesce(sum(rows), 0) INTO v_folded FROM summed;
  RETURN v_folded;
END
$$;
COMMENT ON FUNCTION receiver_fold_job_minutes(timestamptz) IS
  'Fold the per-backend job_minutes rows of minutes before p_before into writer 0; returns the rows folded.';
"""

BACKFILL = """
INSERT INTO job_minutes (minute, service, status, writer, jobs)
SELECT date_trunc('minute', first_seen_at), coalesce(service, ''), status, 0, count(*)
FROM jobs
WHERE first_seen_at >= date_trunc('minute', now() - interval '25 hours')
GROUP BY 1, 2, 3
"""

DOWNGRADE = (
    "DROP TRIGGER jobs_recounted ON jobs",
    "DROP TRIGGER jobs_counted ON jobs",
    "DROP FUNCTION receiver_fold_job_minutes(timestamptz)",
    "DROP FUNCTION receiver_count_job()",
    "DROP TABLE job_minutes",
)


def upgrade() -> None:
    op.execute(TABLE)
    op.execute(FUNCTIONS)
    op.execute(BACKFILL)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
