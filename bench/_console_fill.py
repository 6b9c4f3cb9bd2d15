"""bench/console.py's data: a month of a busy receiver, written in set-based SQL.

Every row is derived from the job's number `i` through a hash (`pg_temp.u(i, k)`, uniform in
[0, 1)), so the mix is the same on every fill and no row is sent from Python. One job is:

- registered through the API (80 %: client reference, tags, input, credit cost) or first seen
  through its webhooks;
- a `processing` webhook, then its terminal one (`completed` 95 %, `failed` 5 %) 15 s to 10 min
  later; 0.5 % get a `queued` webhook first (a status the receiver does not know);
- the provider's faults: the processing webhook lost (1 %) or held back until after the terminal
  one (2 %, recorded as not applied), the terminal webhook lost and found by a poll 5 min later
  (2 %), a redelivery under a new idempotency key (8 %, not applied), the same delivery replayed
  1-3 times under its key (5 %, counted on the inbound row), 0.4 % of the registered never heard
  of again (stuck in `submitted`);
- one outbox event per status it reached, fanned out to the subscriptions whose filters match.

Deliveries are delivered (p50 ~40 ms, p99 ~1.2 s, a few after a retry or two) except:
`orders` refuses 0.3 % of events for good (HTTP 422, dead after 11 attempts), `analytics` was
down for 36 hours 12 days ago (every delivery of that window dead), `billing` answers 503 for
the last 40 minutes (pending, retrying), and the last 2 s are in flight. Every attempt has its
delivery_attempts row (at the retry schedule's steps), and webhook_outcomes holds the minutes'
counts: the accepted webhooks and replays above, forged signatures on `partner-eu` in 1 % of the
minutes, the odd invalid body.

`fill()` writes a block of jobs into a database migrated to head: `i` from `first` for `count`
jobs, spread evenly over [start, end). The main fill is one block of a month (indexes dropped
first and rebuilt after); a template reused later gets a second block for the time since.
Rows get explicit ids after the highest there, and the identity sequences are moved past them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import _run
import psycopg

# Bump when the data below changes: bench/console.py refills a template made by another version.
VERSION = 1

# The subscribers, in slot order: (name, URL, event types, services). bench/console.py adds them
# with `receiver subscribers add` (sealed secrets, as the console expects) and passes their ids.
SUBSCRIBERS: tuple[tuple[str, str, list[str] | None, list[str] | None], ...] = (
    ("orders", "https://orders.internal.example/hooks/doitong", ["job.completed", "job.failed"], None),
    ("analytics", "https://analytics.internal.example/ingest/jobs", None, ["hedra", "kling", "veo"]),
    ("billing", "https://billing.internal.example/webhooks/videos", ["job.completed"], ["veo", "runway", "sora"]),
)
ENDPOINTS = ("default", "partner-eu")  # `default` is DOITONG_WEBHOOK_SECRET's; `partner-eu` is added

_FUNCTIONS = [
    # Uniform in [0, 1), the same for the same (i, k) on every fill.
    """CREATE FUNCTION pg_temp.u(i bigint, k integer) RETURNS double precision
       LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
       $$ SELECT (hashint8(i * 64 + k) & 2147483647)::double precision / 2147483648.0 $$""",
    # receiver_uuid7() at a given time instead of the clock.
    """CREATE FUNCTION pg_temp.uuid7(ts timestamptz) RETURNS uuid LANGUAGE sql VOLATILE AS
       $$ SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
            placing substring(int8send((extract(epoch FROM ts) * 1000)::bigint) FROM 3) FROM 1 FOR 6),
            52, 1), 53, 1), 'hex')::uuid $$""",
    """CREATE FUNCTION pg_temp.iso(ts timestamptz) RETURNS text LANGUAGE sql STABLE AS
       $$ SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$""",
]

# One row per job: every decision about it, and which of its events happened by `end`.
_PLAN = """
CREATE TEMP TABLE plan AS
WITH r AS (
  SELECT i,
    %(start)s::timestamptz + ((i - %(first)s) + pg_temp.u(i, 0)) * %(step)s * interval '1 second' AS t0,
    CASE WHEN pg_temp.u(i, 1) < 0.45 THEN 'hedra' WHEN pg_temp.u(i, 1) < 0.70 THEN 'kling'
         WHEN pg_temp.u(i, 1) < 0.85 THEN 'veo' WHEN pg_temp.u(i, 1) < 0.95 THEN 'runway'
         ELSE 'sora' END AS service,
    pg_temp.u(i, 2) < 0.8 AS registered,
    (15 + 585 * pg_temp.u(i, 3) ^ 3) * interval '1 second' AS latency,
    CASE WHEN pg_temp.u(i, 4) < 0.05 THEN 'failed' ELSE 'completed' END AS outcome,
    pg_temp.u(i, 5) < 0.02 AS dropped,
    pg_temp.u(i, 6) < 0.02 AS reorder,
    pg_temp.u(i, 7) < 0.01 AS lost_proc,
    pg_temp.u(i, 8) < 0.08 AS redeliver,
    CASE WHEN pg_temp.u(i, 9) < 0.05 THEN 1 + floor(pg_temp.u(i, 12) * 3)::int ELSE 0 END AS replays,
    pg_temp.u(i, 10) < 0.004 AS stuck,
    pg_temp.u(i, 11) < 0.005 AS queued,
    CASE WHEN pg_temp.u(i, 13) < 0.1 THEN 'partner-eu' ELSE 'default' END AS endpoint
  FROM generate_series(%(first)s::bigint, %(first)s::bigint + %(count)s - 1) AS i
), t AS (
  SELECT r.*, t0 + latency AS t_term,
    registered AND stuck AS stuck_reg
  FROM r
), h AS (
  SELECT t.*,
    registered AS has_reg,
    queued AND NOT stuck_reg AND t0 + interval '1 second' <= %(end)s AS has_queued,
    NOT (lost_proc OR reorder OR stuck_reg) AND t0 + interval '2 seconds' <= %(end)s AS has_proc,
    NOT (dropped OR stuck_reg) AND t_term <= %(end)s AS has_term,
    -- reconciliation polls the jobs it knows of: registered, or seen through a webhook already
    dropped AND NOT stuck_reg AND (registered OR queued OR NOT (lost_proc OR reorder))
      AND t_term + interval '5 minutes' <= %(end)s AS has_poll,
    reorder AND NOT (dropped OR stuck_reg) AND t_term + interval '1 second' <= %(end)s AS has_reorder,
    redeliver AND NOT (dropped OR stuck_reg) AND t_term + interval '45 seconds' <= %(end)s AS has_redeliver
  FROM t
)
SELECT h.*,
  service || '_' || substr(md5('job' || i), 1, 24) AS id,
  CASE WHEN has_term OR has_poll THEN outcome WHEN has_proc THEN 'processing'
       WHEN has_queued THEN 'queued' WHEN has_reg THEN 'submitted' END AS status,
  CASE WHEN has_proc THEN 'processing' WHEN has_queued THEN 'queued' WHEN has_reg THEN 'submitted' END
    AS before_term,
  CASE WHEN has_queued THEN 'queued' WHEN has_reg THEN 'submitted' END AS before_proc,
  CASE WHEN has_reg THEN t0 WHEN has_queued THEN t0 + interval '1 second'
       WHEN has_proc THEN t0 + interval '2 seconds' WHEN has_term THEN t_term
       WHEN has_poll THEN t_term + interval '5 minutes' END AS first_seen,
  CASE WHEN has_poll THEN t_term + interval '5 minutes' WHEN has_term THEN t_term
       WHEN has_proc THEN t0 + interval '2 seconds' WHEN has_queued THEN t0 + interval '1 second'
       ELSE t0 END AS last_applied
FROM h
"""

# One row per job event (k: 0 registration, 1 queued, 2 processing, 3 terminal webhook, 4 poll,
# 5 held-back processing, 6 redelivery under a new key), numbered in arrival order: the job
# event's id, the inbound row's id (webhooks) and the outbox seq (state changes).
_EVENTS = """
CREATE TEMP TABLE ev AS
SELECT e.*,
  row_number() OVER w AS ord,
  count(*) FILTER (WHERE e.webhook) OVER w AS webhook_ord,
  count(*) FILTER (WHERE e.announces) OVER w AS outbox_ord,
  CASE WHEN e.announces THEN pg_temp.uuid7(e.at) END AS event_id,
  CASE WHEN e.announces AND e.at <= %(end)s - interval '2 seconds'
       THEN e.at + (0.005 + 0.2 * pg_temp.u(e.i, 20 + e.k) ^ 4) * interval '1 second' END AS dispatched_at
FROM (
  SELECT p.i, p.id AS job_id, p.service, p.endpoint, p.outcome, x.k, x.source, x.status, x.at, x.applied,
         x.previous, x.webhook, x.announces
  FROM plan p CROSS JOIN LATERAL (VALUES
    (0, 'api', 'submitted', p.t0, true, NULL, false, false, p.has_reg),
    (1, 'webhook', 'queued', p.t0 + interval '1 second', true,
        CASE WHEN p.has_reg THEN 'submitted' END, true, true, p.has_queued),
    (2, 'webhook', 'processing', p.t0 + interval '2 seconds', true, p.before_proc, true, true, p.has_proc),
    (3, 'webhook', p.outcome, p.t_term, true, p.before_term, true, true, p.has_term),
    (4, 'poll', p.outcome, p.t_term + interval '5 minutes', true, p.before_term, false, true, p.has_poll),
    (5, 'webhook', 'processing', p.t_term + interval '1 second', false, p.outcome, true, false, p.has_reorder),
    (6, 'webhook', p.outcome, p.t_term + interval '45 seconds', false, p.outcome, true, false, p.has_redeliver)
  ) AS x(k, source, status, at, applied, previous, webhook, announces, present)
  WHERE x.present
) e
WINDOW w AS (ORDER BY e.at, e.i, e.k ROWS UNBOUNDED PRECEDING)
"""

_JOBS = """
INSERT INTO jobs (id, service, type, status, url, duration, width, height, metadata, created_at,
                  completed_at, first_seen_at, updated_at, client_reference, tags, credit_cost,
                  registered, input, registered_at, last_polled_at)
SELECT id, service, CASE WHEN registered THEN 'AVATAR' END, status,
  CASE WHEN status = 'completed' THEN 'https://cdn.doitong.example/outputs/' || id || '.mp4' END,
  CASE WHEN status = 'completed' THEN round((4 + 56 * pg_temp.u(i, 14))::numeric, 2)::double precision END,
  CASE WHEN status = 'completed' THEN 1280 END,
  CASE WHEN status = 'completed' THEN 720 END,
  CASE WHEN status = 'completed'
         THEN jsonb_build_object('duration', round((4 + 56 * pg_temp.u(i, 14))::numeric, 2),
                                 'width', 1280, 'height', 720)
       WHEN status <> 'submitted' THEN '{"duration": null, "width": null, "height": null}'::jsonb END,
  CASE WHEN status <> 'submitted' THEN t0 END,
  CASE WHEN status IN ('completed', 'failed') THEN t_term END,
  first_seen, last_applied,
  CASE WHEN registered THEN 'order-' || (1000000 + (i * 7919) %% 9000000) END,
  CASE WHEN registered THEN jsonb_strip_nulls(jsonb_build_object(
    'env', CASE WHEN pg_temp.u(i, 15) < 0.9 THEN 'production' ELSE 'staging' END,
    'team', (ARRAY['growth', 'studio', 'support', 'sales', 'education', 'partners'])
            [1 + floor(pg_temp.u(i, 16) * 6)::int],
    'campaign', CASE WHEN pg_temp.u(i, 17) < 0.8 THEN 'c' || floor(pg_temp.u(i, 18) * 250)::int END)) END,
  CASE WHEN registered THEN 5 + floor(pg_temp.u(i, 19) * 95)::int END,
  registered,
  CASE WHEN registered THEN jsonb_build_object(
    'text', 'Hello! This is a short update about your order, recorded for you by our studio team.',
    'avatarId', 'av_' || (1 + i %% 40),
    'voice', 'en-US-' || (ARRAY['Aria', 'Guy', 'Jenny', 'Davis'])[1 + (i %% 4)::int]) END,
  CASE WHEN registered THEN t0 END,
  CASE WHEN has_poll THEN t_term + interval '5 minutes' END
FROM plan
WHERE first_seen IS NOT NULL
"""

_INBOUND = """
INSERT INTO inbound_webhooks (id, endpoint, idempotency_key, body_sha256, job_id, status, headers, body,
                              received_at, replay_count, last_replay_at, conflict_count)
SELECT %(inbound_base)s + w.webhook_ord, w.endpoint, 'x-doitong-delivery:' || w.delivery, sha256(w.body),
  w.job_id, w.status,
  jsonb_build_object('host', 'hooks.example.com', 'user-agent', 'Doitong-Webhooks/1.4',
    'content-type', 'application/json', 'content-length', length(w.body)::text,
    'x-doitong-signature', 'sha256=' || md5(w.delivery) || md5(w.job_id),
    'x-doitong-delivery', w.delivery, 'x-forwarded-for', '203.0.113.' || (w.i %% 250)),
  w.body, w.at, w.replays, w.last_replay_at, CASE WHEN w.replays = 3 AND w.i %% 7 = 0 THEN 1 ELSE 0 END
FROM (
  SELECT ev.*, md5('delivery' || ev.i || ':' || ev.k) AS delivery,
    CASE WHEN ev.k = 3 AND ev.at + interval '10 minutes' <= %(end)s THEN p.replays ELSE 0 END AS replays,
    CASE WHEN ev.k = 3 AND p.replays > 0 AND ev.at + interval '10 minutes' <= %(end)s
         THEN ev.at + interval '10 minutes' END AS last_replay_at,
    convert_to(format(
      '{"id":"%%s","status":"%%s","url":%%s,"service":"%%s","createdAt":"%%s","completedAt":%%s,'
      '"metadata":{"duration":%%s,"width":%%s,"height":%%s}}',
      ev.job_id, ev.status,
      CASE WHEN ev.status = 'completed' THEN '"https://cdn.doitong.example/outputs/' || ev.job_id || '.mp4"'
           ELSE 'null' END,
      ev.service, pg_temp.iso(p.t0),
      CASE WHEN ev.status IN ('completed', 'failed') THEN '"' || pg_temp.iso(p.t_term) || '"' ELSE 'null' END,
      CASE WHEN ev.status = 'completed' THEN round((4 + 56 * pg_temp.u(ev.i, 14))::numeric, 2)::text ELSE 'null' END,
      CASE WHEN ev.status = 'completed' THEN '1280' ELSE 'null' END,
      CASE WHEN ev.status = 'completed' THEN '720' ELSE 'null' END), 'UTF8') AS body
  FROM ev JOIN plan p ON p.i = ev.i
  WHERE ev.webhook
) w
"""

_OUTBOX = """
INSERT INTO outbox_events (id, seq, job_id, status, type, payload, created_at, dispatched_at)
SELECT ev.event_id, %(outbox_base)s + ev.outbox_ord, ev.job_id, ev.status, 'job.' || ev.status,
  jsonb_build_object('id', ev.event_id::text, 'type', 'job.' || ev.status, 'timestamp', pg_temp.iso(ev.at),
    'data', jsonb_build_object(
      'id', ev.job_id, 'status', ev.status,
      'url', CASE WHEN ev.status = 'completed' THEN j.url END,
      'service', j.service, 'type', j.type, 'created_at', pg_temp.iso(j.created_at),
      'completed_at', CASE WHEN ev.status IN ('completed', 'failed') THEN pg_temp.iso(j.completed_at) END,
      'duration', CASE WHEN ev.status = 'completed' THEN j.duration END,
      'width', CASE WHEN ev.status = 'completed' THEN j.width END,
      'height', CASE WHEN ev.status = 'completed' THEN j.height END,
      'metadata', CASE WHEN ev.status = 'completed' THEN j.metadata
                       ELSE '{"duration": null, "width": null, "height": null}'::jsonb END,
      'client_reference', j.client_reference, 'tags', j.tags, 'credit_cost', j.credit_cost)),
  ev.at, ev.dispatched_at
FROM ev JOIN jobs j ON j.id = ev.job_id
WHERE ev.announces
"""

_JOB_EVENTS = """
INSERT INTO job_events (id, job_id, inbound_id, source, status, previous_status, applied, outbox_event_id,
                        payload, provider_created_at, provider_completed_at, received_at)
SELECT %(events_base)s + ev.ord, ev.job_id,
  CASE WHEN ev.webhook THEN %(inbound_base)s + ev.webhook_ord END,
  ev.source, ev.status, ev.previous, ev.applied, ev.event_id,
  CASE WHEN ev.source = 'api' THEN jsonb_build_object('client_reference', j.client_reference, 'tags', j.tags,
                                                     'credit_cost', j.credit_cost)
       WHEN ev.source = 'poll' THEN jsonb_build_object('id', ev.job_id, 'status', ev.status, 'url', j.url,
                                                      'createdAt', pg_temp.iso(j.created_at)) END,
  CASE WHEN ev.source <> 'api' THEN j.created_at END,
  CASE WHEN ev.status IN ('completed', 'failed') THEN j.completed_at END,
  ev.at
FROM ev JOIN jobs j ON j.id = ev.job_id
"""

# Per (event, subscriber): u(seq * 4 + slot, k) decides; `age` is how long before `end` it was fanned out.
_DELIVERIES = """
INSERT INTO deliveries (id, event_id, subscription_id, job_id, event_seq, state, attempts, next_attempt_at,
                        last_attempt_at, last_status, last_error, created_at, delivered_at)
SELECT %(deliveries_base)s + row_number() OVER (ORDER BY d.seq, d.slot), d.event_id, d.subscription_id, d.job_id,
  d.seq, d.state,
  CASE d.fate WHEN 'in_flight' THEN 0 WHEN 'refused' THEN 11 WHEN 'outage' THEN 11
              WHEN 'refusing' THEN 6 WHEN 'failing' THEN d.failing_attempts ELSE d.ok_attempts END,
  CASE d.fate WHEN 'in_flight' THEN d.created_at
              WHEN 'refusing' THEN d.created_at + interval '2 days 4 hours'
              WHEN 'failing' THEN %(end)s + interval '1 minute'
              ELSE d.last_attempt_at END,
  CASE WHEN d.fate <> 'in_flight' THEN d.last_attempt_at END,
  CASE d.fate WHEN 'in_flight' THEN NULL WHEN 'refused' THEN 422 WHEN 'refusing' THEN 422 WHEN 'outage' THEN NULL
              WHEN 'failing' THEN 503 ELSE 200 END,
  CASE d.fate WHEN 'refused' THEN 'HTTP 422' WHEN 'refusing' THEN 'HTTP 422' WHEN 'failing' THEN 'HTTP 503'
              WHEN 'outage' THEN 'Cannot connect to host analytics.internal.example:443 [Connection refused]' END,
  d.created_at,
  CASE WHEN d.state = 'delivered' THEN d.last_attempt_at + d.latency END
FROM (
  SELECT c.*,
    CASE c.fate WHEN 'delivered' THEN 'delivered' WHEN 'refused' THEN 'dead' WHEN 'outage' THEN 'dead'
                ELSE 'pending' END AS state,
    CASE c.fate
      WHEN 'refused' THEN c.created_at + interval '2 days 4 hours'
      WHEN 'outage' THEN c.created_at + interval '2 days 4 hours'
      WHEN 'refusing' THEN c.created_at + interval '1 hour 30 minutes'
      WHEN 'failing' THEN %(end)s - interval '20 seconds' * pg_temp.u(c.seq * 4 + c.slot, 3)
      WHEN 'delivered' THEN c.created_at + CASE c.ok_attempts WHEN 1 THEN interval '0' WHEN 2 THEN interval '5 seconds'
                                                               ELSE interval '35 seconds' END
    END AS last_attempt_at,
    (0.025 * exp(4 * pg_temp.u(c.seq * 4 + c.slot, 1) ^ 3)) * interval '1 second' AS latency
  FROM (
    SELECT e.event_id, e.seq, e.job_id, s.slot, s.id AS subscription_id, e.dispatched_at AS created_at,
      CASE
        WHEN e.dispatched_at > %(end)s - interval '2 seconds' THEN 'in_flight'
        WHEN s.slot = 1 AND pg_temp.u(e.seq * 4 + s.slot, 2) < 0.003 THEN
          CASE WHEN e.dispatched_at < %(end)s - interval '2 days 4 hours' THEN 'refused' ELSE 'refusing' END
        WHEN s.slot = 2 AND e.dispatched_at >= %(outage_start)s AND e.dispatched_at < %(outage_end)s THEN 'outage'
        WHEN s.slot = 3 AND e.dispatched_at >= %(end)s - interval '40 minutes' THEN 'failing'
        ELSE 'delivered'
      END AS fate,
      CASE WHEN pg_temp.u(e.seq * 4 + s.slot, 4) < 0.005 THEN 3
           WHEN pg_temp.u(e.seq * 4 + s.slot, 4) < 0.03 THEN 2 ELSE 1 END AS ok_attempts,
      -- attempts made so far when a 503 started answering: one per step of the schedule that has passed
      1 + (SELECT count(*) FROM unnest(ARRAY[5, 35, 155, 755]) AS step
           WHERE extract(epoch FROM %(end)s - e.dispatched_at) > step)::int AS failing_attempts
    FROM (SELECT ev.event_id, %(outbox_base)s + ev.outbox_ord AS seq, ev.job_id, ev.service, ev.status,
                 ev.dispatched_at
          FROM ev WHERE ev.announces AND ev.dispatched_at IS NOT NULL) e
    JOIN subs s ON (s.types IS NULL OR 'job.' || e.status = ANY (s.types))
               AND (s.services IS NULL OR e.service = ANY (s.services))
  ) c
) d
"""

# Every attempt of the deliveries above, at the retry schedule's steps (5s, 30s, 2m, 10m, 30m, 1h,
# 3h, 6h, 12h, 24h after the one before); the last one is what the delivery row says.
_ATTEMPTS = """
INSERT INTO delivery_attempts (delivery_id, subscription_id, attempt, at, duration_ms, outcome, status, error)
SELECT d.id, d.subscription_id, a.n,
  CASE WHEN a.n = d.attempts THEN d.last_attempt_at
       ELSE d.created_at + (ARRAY[0, 5, 35, 155, 755, 2555, 6155, 16955, 38555, 81755, 168155])[a.n]
                           * interval '1 second' END,
  CASE WHEN a.n = d.attempts AND d.state = 'delivered'
         THEN greatest(1, (extract(epoch FROM d.delivered_at - d.last_attempt_at) * 1000)::int)
       WHEN d.last_error LIKE 'Cannot connect%%' THEN 1 + (d.id %% 3)::int
       ELSE 20 + (d.id * 7 + a.n) %% 90 END,
  CASE WHEN a.n < d.attempts OR d.state = 'pending' THEN 'retrying' WHEN d.state = 'dead' THEN 'dead'
       ELSE 'delivered' END,
  CASE WHEN a.n = d.attempts OR d.state <> 'delivered' THEN d.last_status ELSE 502 END,
  CASE WHEN a.n = d.attempts OR d.state <> 'delivered' THEN d.last_error ELSE 'HTTP 502' END
FROM deliveries d CROSS JOIN LATERAL generate_series(1, d.attempts) AS a(n)
WHERE d.id > %(deliveries_base)s
ORDER BY d.last_attempt_at, d.id, a.n
"""

# What each server process adds up per minute: the accepted webhooks and the replays above, and
# what leaves no other row: forged signatures on the partner endpoint in a few minutes of the
# month, and the odd invalid body.
_OUTCOMES = """
INSERT INTO webhook_outcomes (minute, endpoint, outcome, requests)
SELECT minute, endpoint, outcome, sum(n)
FROM (
  SELECT date_trunc('minute', received_at) AS minute, endpoint, 'accepted' AS outcome, 1 AS n
  FROM inbound_webhooks WHERE id > %(inbound_base)s
  UNION ALL
  SELECT date_trunc('minute', last_replay_at), endpoint, 'duplicate', replay_count - conflict_count
  FROM inbound_webhooks WHERE id > %(inbound_base)s AND replay_count > conflict_count
  UNION ALL
  SELECT date_trunc('minute', last_replay_at), endpoint, 'conflict', conflict_count
  FROM inbound_webhooks WHERE id > %(inbound_base)s AND conflict_count > 0
  UNION ALL
  SELECT m, CASE WHEN pg_temp.u(x, 1) < 0.8 THEN 'partner-eu' ELSE 'default' END, 'unauthorized',
         1 + floor(40 * pg_temp.u(x, 2) ^ 3)::int
  FROM generate_series(date_trunc('minute', %(start)s::timestamptz), %(end)s, interval '1 minute') AS m,
       LATERAL (SELECT extract(epoch FROM m)::bigint / 60 AS x) AS k
  WHERE pg_temp.u(x, 0) < 0.01
  UNION ALL
  SELECT m, 'default', 'bad_request', 1
  FROM generate_series(date_trunc('minute', %(start)s::timestamptz), %(end)s, interval '1 minute') AS m,
       LATERAL (SELECT extract(epoch FROM m)::bigint / 60 AS x) AS k
  WHERE pg_temp.u(x, 3) < 0.004
) o
WHERE minute <= %(end)s
GROUP BY 1, 2, 3
ON CONFLICT (minute, endpoint, outcome) DO UPDATE SET requests = webhook_outcomes.requests + EXCLUDED.requests
"""

# The identity columns, moved past the ids given explicitly above.
_IDENTITIES = (("inbound_webhooks", "id"), ("job_events", "id"), ("outbox_events", "seq"), ("deliveries", "id"))


@dataclass
class Block:
    """Jobs `first`..`first + count - 1` over [start, end); the outage window is the main fill's."""

    first: int
    count: int
    start: datetime
    end: datetime
    outage_start: datetime
    outage_end: datetime


def fill(conn: psycopg.Connection[Any], block: Block, subscriber_ids: list[str]) -> dict[str, float]:
    """Write one block of jobs and everything that follows from them; returns seconds per step."""
    timings: dict[str, float] = {}

    def step(name: str, statement: str, params: dict[str, Any]) -> None:
        started = time.perf_counter()
        conn.execute(statement, params)
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started

    conn.execute("SET synchronous_commit = off")
    conn.execute("SET work_mem = '256MB'")
    conn.execute("SET maintenance_work_mem = '1GB'")
    for statement in _FUNCTIONS:
        conn.execute(statement.encode())
    conn.execute("DROP TABLE IF EXISTS pg_temp.plan, pg_temp.ev, pg_temp.subs")
    conn.execute("CREATE TEMP TABLE subs (slot integer, id text, types text[], services text[])")
    for slot, ((_, _, types, services), sub_id) in enumerate(zip(SUBSCRIBERS, subscriber_ids, strict=True), start=1):
        conn.execute("INSERT INTO subs VALUES (%s, %s, %s, %s)", (slot, sub_id, types, services))

    def base(table: str, column: str = "id") -> int:
        row = conn.execute(f"SELECT coalesce(max({column}), 0) FROM {table}").fetchone()
        assert row is not None
        return int(row[0])

    params: dict[str, Any] = {
        "first": block.first,
        "count": block.count,
        "start": block.start,
        "end": block.end,
        "step": (block.end - block.start).total_seconds() / block.count,
        "outage_start": block.outage_start,
        "outage_end": block.outage_end,
        "inbound_base": base("inbound_webhooks"),
        "events_base": base("job_events"),
        "outbox_base": base("outbox_events", "seq"),
        "deliveries_base": base("deliveries"),
    }
    step("plan", _PLAN, params)
    step("events", _EVENTS, params)
    conn.execute("ANALYZE pg_temp.plan")
    conn.execute("ANALYZE pg_temp.ev")
    for name, statement in (
        ("jobs", _JOBS),
        ("inbound_webhooks", _INBOUND),
        ("outbox_events", _OUTBOX),
        ("job_events", _JOB_EVENTS),
        ("deliveries", _DELIVERIES),
        ("delivery_attempts", _ATTEMPTS),
        ("webhook_outcomes", _OUTCOMES),
    ):
        _run.log(f"fill: {name}")
        step(name, statement, params)
    for table, column in _IDENTITIES:
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
            f"(SELECT coalesce(max({column}), 0) + 1 FROM {table}), false)"
        )
    conn.execute("DROP TABLE pg_temp.plan, pg_temp.ev, pg_temp.subs")
    return timings
