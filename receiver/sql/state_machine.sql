-- The job state machine and the transactions that drive it, as they are at the latest migration.
--
-- It lives in SQL so that concurrent deliveries for one job are serialised by the row lock on
-- `jobs`, not by luck in the application, and so that a webhook is one round trip: the
-- handler makes one call, receiver_ingest(), on an autocommit connection.
--
--   submitted < (a status we do not know) < processing < completed | failed
--
-- A terminal status (completed, failed) never changes again, and the first one wins. A late or
-- out-of-order report is kept in job_events with applied = false and changes nothing else.
--
-- Changing a function: running processes call these by name and argument list, and during a
-- rolling deploy the previous release's processes keep running against the new schema until
-- they are replaced (README, "Upgrading"). So:
--   * A change that keeps the name, the arguments, the result columns and the meaning of each
--     (a fix, a faster body) is a CREATE OR REPLACE in a new migration.
--   * A change to the arguments, the result or what a caller may rely on gets a new versioned
--     name (receiver_ingest_v2, ...) created beside the old one, which stays until the release
--     after the one whose code stopped calling it; that release's migration drops it.
--   * Never drop or change a function the previous release calls in the same migration that
--     adds its replacement. (Migration 0003 did, before this rule: it replaced receiver_ingest
--     and receiver_apply_job_event under their names.)
-- The functions below are those of the latest migration; the Python calls them from
-- receiver/inbound/ingest.py, receiver/jobs/registration.py and receiver/jobs/reconcile.py.


-- Statuses ---------------------------------------------------------------------------------------

-- The one place the terminal statuses are written. It is an IMMUTABLE SQL function, so the
-- planner inlines it: callers pay nothing, and the reconciler's `NOT receiver_status_terminal(status)`
-- still matches the partial index ix_jobs_unfinished (tables.sql).
CREATE FUNCTION receiver_status_terminal(status text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT status IN ('completed', 'failed')
$$;
COMMENT ON FUNCTION receiver_status_terminal(text) IS
  'completed and failed: a job in one of them never moves again, and reconciliation stops asking about it.';

CREATE FUNCTION receiver_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN receiver_status_terminal(status) THEN 3
    WHEN status = 'processing' THEN 2
    WHEN status = 'submitted' THEN 0
    ELSE 1 END
$$;
COMMENT ON FUNCTION receiver_status_rank(text) IS
  'submitted < (unknown statuses) < processing < completed|failed';

-- Whether a report of `next` moves a job that is at `previous` (NULL: the job is new).
-- Unknown statuses are not ranked against each other: any of them applies while the job is
-- not terminal, so a provider that adds `queued` is not silently ignored.
CREATE FUNCTION receiver_status_advances(previous text, next text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT previous IS NULL OR (
    NOT receiver_status_terminal(previous)
    AND next IS DISTINCT FROM previous
    AND (next NOT IN ('submitted', 'processing')
         OR receiver_status_rank(next) > receiver_status_rank(previous)))
$$;
COMMENT ON FUNCTION receiver_status_advances(text, text) IS
  'Terminal states never move; an unknown status applies while the job is not terminal; known non-terminal statuses only move forward.';

-- job.<status>, with anything outside [A-Za-z0-9_] folded to `_`, so an undocumented status
-- still makes a type subscribers can filter on.
CREATE FUNCTION receiver_event_type(status text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT 'job.' || lower(regexp_replace(status, '[^A-Za-z0-9_]+', '_', 'g'))
$$;


-- The outbox envelope ----------------------------------------------------------------------------

-- Timestamps in the envelope: UTC, milliseconds, `Z`, whatever the session's time zone.
CREATE FUNCTION receiver_iso(ts timestamptz) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- The document every sink sends, built from the job row as it is after the change, so a
-- subscriber never has to read our database.
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
$$;


-- Applying a reported status ---------------------------------------------------------------------

-- Shared by webhooks (through receiver_ingest) and reconciliation (source 'poll'), so a status
-- found by polling is indistinguishable downstream from one a webhook brought.
--
-- There is no NOTIFY here: NOTIFY takes a database-wide lock at commit, so every webhook
-- transaction that notified committed one at a time (receiver_ingest: ~2,950 tps with it,
-- ~5,300 without, measured with bench/ingest.py and pgbench). The server sends one coalesced
-- NOTIFY after its commits instead (receiver/core/notify.py); publishers also poll.
--
-- p_traceparent/p_tracestate: the W3C trace context of the span that reported the status
-- (the webhook's ingest span, a reconciliation poll), kept with the event so that its
-- deliveries continue that trace; NULL when tracing is off.
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
  -- A job we have never seen: the first report creates it, whatever its status.
  INSERT INTO jobs (id, service, status, url, duration, width, height, metadata,
                    created_at, completed_at)
  VALUES (p_job_id, p_service, p_status, p_url, p_duration, p_width, p_height, v_metadata,
          p_created_at, p_completed_at)
  ON CONFLICT (id) DO NOTHING
  RETURNING * INTO v_job;
  IF FOUND THEN
    v_applies := true;
  ELSE
    -- The row lock: a concurrent report for the same job waits here until this transaction
    -- commits, then reads the status this one wrote. This is what makes fifty racing
    -- deliveries produce one event.
    SELECT status INTO v_previous FROM jobs WHERE id = p_job_id FOR UPDATE;
    v_applies := receiver_status_advances(v_previous, p_status);
    IF v_applies THEN
      -- Fields a report leaves out keep what an earlier report said; metadata objects merge.
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
    -- At most one event per (job, status): a status the job held before (an unknown one
    -- reported twice with something in between) applies again but announces nothing new.
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
$$;
COMMENT ON FUNCTION receiver_apply_job_event(text, text, text, bigint, jsonb, jsonb, text, text,
  timestamptz, timestamptz, double precision, integer, integer, text, text) IS
  'Record one reported status in job_events, move jobs through the state machine and enqueue at most one outbox event per (job, status). Returns the new event id or NULL.';


-- The webhook transaction ------------------------------------------------------------------------

-- Everything a verified webhook does, in one call: record the delivery once per idempotency
-- key, or count the replay (and whether its body differed) and stop; otherwise apply the
-- status. `outcome` is accepted, duplicate or conflict; result_registered tells the handler
-- whether the job was registered through us (a metric counts those that were not), and
-- result_status the job's status after it (a trace tells an out-of-order webhook by it).
-- The trace context is the ingest span's, when tracing is on (receiver_apply_job_event()).
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
    -- A replay: it changes nothing but the counters. The job id answered is the first
    -- delivery's, even when a conflicting replay named another.
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
$$;
COMMENT ON FUNCTION receiver_ingest(text, text, bytea, jsonb, bytea, text, text, text, text, jsonb,
  timestamptz, timestamptz, double precision, integer, integer, text, text) IS
  'The whole webhook transaction in one call: idempotency, history, state machine, outbox.';


-- Registration -----------------------------------------------------------------------------------

-- Registration merges into whatever webhooks already created: it fills in what only we know
-- (client reference, tags, credit cost, input) and never touches the status, so a job
-- registered after its `completed` webhook stays completed. `created` is true when the row is
-- new (xmax = 0: no earlier version of the row was updated by this statement).
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
$$;
COMMENT ON FUNCTION receiver_register_job(text, text, text, text, jsonb, integer, jsonb) IS
  'Register a job submitted through us, or merge the registration into a job its webhooks created first.';


-- Per-minute counts for the console (job_minutes, attempt_minutes) ---------------------------------

-- Every job row that is written, whoever writes it (a webhook, a reconciliation poll, a
-- registration, an operator's SQL), moves its count in job_minutes: -1 where it was, +1 where it
-- is. The rows are the backend's own (writer = pg_backend_pid(): a backend runs one transaction
-- at a time), so the upsert never waits for another transaction, and a rollback takes its counts
-- back with it. The UPDATE trigger's WHEN skips the updates that move nothing (a registration
-- merged into a job, metadata, last_polled_at) without calling the function.
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

-- Ten buckets a decade: 1 ms is bucket 1, 10 ms 11, 100 ms 21, 1 s 31, 10 s 41. numeric, not
-- double precision: log(1000::float8) * 10 is 29.999..., which would put 1 s in bucket 30.
CREATE FUNCTION receiver_latency_bucket(ms integer) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN ms IS NULL THEN -1
              WHEN ms < 1 THEN 0
              ELSE 1 + floor(10 * log(ms::numeric))::smallint END
$$;
COMMENT ON FUNCTION receiver_latency_bucket(integer) IS
  'The attempt_minutes bucket of a send time in milliseconds: 0 under 1 ms, b from 10^((b-1)/10) to 10^(b/10) ms, -1 for none.';

-- The publisher writes a batch of attempts in one statement (outbox.COMPLETE): once per statement,
-- the batch is counted by minute, subscriber and bucket into the backend's own rows.
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

-- Folds the backends' rows of minutes before p_before into one row per key, writer 0, so that
-- reading a day sums a row per key and minute, not one per backend. It takes only the rows no
-- transaction holds (SKIP LOCKED: it never waits for a webhook or a publisher, and they never
-- wait for it longer than this statement), and one process folds at a time (the advisory lock;
-- another returns 0 at once). Returns the rows folded.
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
