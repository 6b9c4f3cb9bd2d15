-- Operational events: events the receiver emits about itself, through the same outbox, signing
-- and retries as job events, as they are at the latest migration.
--
--   operational.subscriber_disabled, operational.circuit_opened, operational.circuit_closed,
--   operational.delivery_dead        subject subscriber:<id>
--   operational.endpoint_forged_signatures   subject endpoint:<name>
--   operational.jobs_stale           subject jobs
--
-- The Python side is receiver/outbound/operational.py (the type names, emit(), the
-- forged-signature flush and the stale-jobs check). Who receives them is decided here, in
-- receiver_delivers(), which the fan-out and replay (receiver/outbound/outbox.py) call: only a
-- subscription that names the type (or `operational.*`) gets one, never one without a filter,
-- and never one about itself. A delivery of an operational event keeps order on the line
-- `operational:<subject>` (deliveries.job_id), as job events do on their job.


-- Who receives what ------------------------------------------------------------------------------

-- An IMMUTABLE SQL function, inlined into the fan-out's join. coalesce: `x = ANY(NULL)` is NULL,
-- and a caller testing `NOT receiver_delivers(...)` must get true for "no", not NULL.
CREATE FUNCTION receiver_delivers(
  subscription_id text, event_types text[], services text[],
  event_type text, event_subject text, event_service text
) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT coalesce(CASE
    WHEN event_type LIKE 'operational.%' THEN
      -- Asked for by name only, and never about the subscriber itself: a subscriber whose
      -- deliveries fail must not be sent the news of its own failures (they would fail too).
      (event_type = ANY(event_types) OR 'operational.*' = ANY(event_types))
      AND event_subject IS DISTINCT FROM 'subscriber:' || subscription_id
    ELSE
      (event_types IS NULL OR event_type = ANY(event_types) OR 'job.*' = ANY(event_types))
      AND (services IS NULL OR event_service = ANY(services))
    END, false)
$$;
COMMENT ON FUNCTION receiver_delivers(text, text[], text[], text, text, text) IS
  'Whether a subscription receives an event: job events by its filters (none: all), operational events only when named (or operational.*), never one about itself.';


-- Emitting ---------------------------------------------------------------------------------------

-- In the caller's transaction, so the event exists exactly when what it reports was committed.
-- ck_outbox_events_about refuses an unknown type or a missing subject. The NOTIFY is affordable
-- here (unlike in receiver_ingest): operational events are rare.
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
$$;
COMMENT ON FUNCTION receiver_operational_event(text, text, jsonb) IS
  'Enqueue an operational event (type operational.*, subject subscriber:<id>, endpoint:<name> or jobs) in the caller''s transaction. Returns its id.';

-- A trigger rather than a step in the publisher's write-back: every statement that makes a
-- delivery dead (a failed last attempt, a 410, anything added later) emits, in its own
-- transaction. Only deliveries of job events: a dead operational delivery emitting another
-- operational event could go round for ever.
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
$$;
COMMENT ON FUNCTION receiver_delivery_died() IS
  'Trigger: a delivery of a job event became dead; emits operational.delivery_dead (never for an operational event: no loop).';

-- The WHEN clause is evaluated without calling the function: the claim's and write-back's
-- updates of every other row pay a comparison, nothing more.
CREATE TRIGGER deliveries_dead AFTER UPDATE OF state ON deliveries
FOR EACH ROW WHEN (NEW.state = 'dead' AND OLD.state <> 'dead')
EXECUTE FUNCTION receiver_delivery_died();


-- The release before 0010 ------------------------------------------------------------------------

-- Code before migration 0010 fans out and replays by copying outbox_events.job_id into
-- deliveries.job_id and matching on event_types alone: for an operational event that is a
-- NOT NULL violation (the whole fan-out batch fails, for as long as such a publisher runs) and
-- a delivery to every subscriber without a filter. During a rolling deploy this trigger gives
-- those rows the line current code gives them and applies receiver_delivers(), skipping the
-- subscriptions that did not ask. Current code never inserts a NULL job_id. Drop it in the
-- release after the one that added it (see "Changing a function" in state_machine.sql).
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
$$;
COMMENT ON FUNCTION receiver_delivery_line() IS
  'Trigger, for code before 0010 that copies outbox_events.job_id into deliveries: gives an operational event its line, or skips the row when the subscription did not ask for it.';

CREATE TRIGGER deliveries_operational_line BEFORE INSERT ON deliveries
FOR EACH ROW WHEN (NEW.job_id IS NULL)
EXECUTE FUNCTION receiver_delivery_line();
