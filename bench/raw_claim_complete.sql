-- The raw ceiling for P1: the least a Postgres queue can do per job — claim one row with
-- FOR UPDATE SKIP LOCKED, then mark it done. No events, no dependencies, no missions.
WITH claimed AS (
  SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET status = 'running', locked_by = 'pgbench', locked_at = now()
  FROM claimed WHERE jobs.id = claimed.id
RETURNING jobs.id AS job_id \gset
UPDATE jobs SET status = 'done', finished_at = now() WHERE id = :job_id;
