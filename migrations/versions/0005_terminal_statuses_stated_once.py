"""terminal statuses stated once: receiver_status_terminal() is what the state machine, job_latency and reconciliation ask

`completed` and `failed` were spelled out in receiver_status_rank(), receiver_status_advances(),
the job_latency view and the reconciler's claim. They are now written in one function; the
others call it. It is an IMMUTABLE SQL function, so the planner inlines it: the reconciler's
`NOT receiver_status_terminal(status)` becomes `status <> ALL ('{completed,failed}')` and still
matches the partial index ix_jobs_unfinished, whose predicate stays written out (an index built
on a function would go silently stale if the function were ever replaced).

Same names, arguments and results as before: processes still running revision 0004's code keep
working on this schema (see "Upgrading" in the README).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 10:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TERMINAL = """
CREATE FUNCTION receiver_status_terminal(status text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT status IN ('completed', 'failed')
$$
"""

TERMINAL_COMMENT = """
COMMENT ON FUNCTION receiver_status_terminal(text) IS
  'completed and failed: a job in one of them never moves again, and reconciliation stops asking about it.'
"""

RANK = """
CREATE OR REPLACE FUNCTION receiver_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN receiver_status_terminal(status) THEN 3
    WHEN status = 'processing' THEN 2
    WHEN status = 'submitted' THEN 0
    ELSE 1 END
$$
"""

ADVANCES = """
CREATE OR REPLACE FUNCTION receiver_status_advances(previous text, next text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT previous IS NULL OR (
    NOT receiver_status_terminal(previous)
    AND next IS DISTINCT FROM previous
    AND (next NOT IN ('submitted', 'processing')
         OR receiver_status_rank(next) > receiver_status_rank(previous)))
$$
"""

JOB_LATENCY = """
CREATE OR REPLACE VIEW job_latency AS
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
WHERE receiver_status_terminal(j.status)
"""

# Revision 0004's definitions, written out: a downgrade must not depend on what this module says now.
RANK_0004 = """
CREATE OR REPLACE FUNCTION receiver_status_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE status
    WHEN 'submitted' THEN 0 WHEN 'processing' THEN 2
    WHEN 'completed' THEN 3 WHEN 'failed' THEN 3 ELSE 1 END
$$
"""

ADVANCES_0004 = """
CREATE OR REPLACE FUNCTION receiver_status_advances(previous text, next text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT previous IS NULL OR (
    previous NOT IN ('completed', 'failed')
    AND next IS DISTINCT FROM previous
    AND (next NOT IN ('submitted', 'processing')
         OR receiver_status_rank(next) > receiver_status_rank(previous)))
$$
"""

JOB_LATENCY_0004 = JOB_LATENCY.replace(
    "WHERE receiver_status_terminal(j.status)", "WHERE j.status IN ('completed', 'failed')"
)


def upgrade() -> None:
    for statement in (TERMINAL, TERMINAL_COMMENT, RANK, ADVANCES, JOB_LATENCY):
        op.execute(statement)


def downgrade() -> None:
    for statement in (JOB_LATENCY_0004, ADVANCES_0004, RANK_0004):
        op.execute(statement)
    op.execute("DROP FUNCTION receiver_status_terminal(text)")
