-- Views for people: what you query with psql to answer questions about jobs (README, "The data,
-- for people writing SQL"). Nothing in the receiver reads them, so they may favour clarity.


CREATE VIEW job_history AS
SELECT e.job_id, e.id AS event_seq, e.received_at, e.source, e.status,
       e.previous_status, e.applied, e.outbox_event_id, o.type AS event_type,
       w.endpoint, w.idempotency_key, w.replay_count,
       e.provider_created_at, e.provider_completed_at,
       j.service, j.status AS current_status
FROM job_events e
JOIN jobs j ON j.id = e.job_id
LEFT JOIN inbound_webhooks w ON w.id = e.inbound_id
LEFT JOIN outbox_events o ON o.id = e.outbox_event_id;
COMMENT ON VIEW job_history IS
  'Every reported status of every job, in arrival order, with whether it applied and the event it produced.';

-- received_at is when the terminal status first applied: a replay of it later, or a second
-- terminal report that did not apply, says nothing about how late the provider was.
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
WHERE receiver_status_terminal(j.status);
COMMENT ON VIEW job_latency IS
  'One row per finished job: provider time (completedAt - createdAt) and our receive delay (when we committed the terminal event - completedAt), in seconds.';

-- Jobs without a provider createdAt (a registration whose webhooks have not come yet) are
-- counted on the day we first saw them rather than dropped.
CREATE VIEW daily_usage AS
SELECT (coalesce(j.created_at, j.first_seen_at) AT TIME ZONE 'UTC')::date AS day,
       j.service, j.status, count(*) AS jobs,
       coalesce(sum(j.credit_cost), 0)::bigint AS credits
FROM jobs j
GROUP BY 1, 2, 3;
COMMENT ON VIEW daily_usage IS
  'Jobs and credits per UTC day of the provider createdAt (first seen when absent), service and status.';
