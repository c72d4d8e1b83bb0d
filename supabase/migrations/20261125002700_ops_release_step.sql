-- Giving a running step back (graceful worker shutdown): the attempt is recorded as a retryable failure
-- with the reason, and the step is queued again at once for another worker. The interrupted attempt does
-- not count against max_attempts, so a deploy never fails a step for good. Fenced by attempt like every
-- other report, and a repeat of the same release succeeds again (duplicate).

create or replace function public.ops_release_step(step_id bigint, attempt integer, reason text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  why text := pg_catalog.left(ops_internal.check_text(ops_release_step.reason, 'reason', null), 1000);
  step public.ops_mission_steps;
begin
  step := ops_internal.lock_step(ops_release_step.step_id, ops_release_step.attempt);
  if step.status = 'queued' and step.attempt = ops_release_step.attempt and step.reserved_by is null
     and step.last_error = why then
    return pg_catalog.jsonb_build_object('step_id', step.id, 'attempt', step.attempt, 'status', 'queued',
      'mission_id', step.mission_id, 'duplicate', true);
  end if;
  if step.status <> 'running' or step.attempt <> ops_release_step.attempt then
    perform ops_internal.stale_attempt(step, ops_release_step.attempt);
  end if;
  if step.max_attempts >= 100 then
    perform ops_internal.conflict(pg_catalog.format('step %s cannot be released: it has used 100 attempts', step.id));
  end if;
  update public.ops_mission_steps s
     set status = 'queued', last_error = why, run_after = pg_catalog.now(), max_attempts = s.max_attempts + 1,
         reserved_by = null, reserved_at = null, heartbeat_at = null, lease_expires_at = null
   where s.id = step.id;
  return pg_catalog.jsonb_build_object('step_id', step.id, 'attempt', step.attempt, 'status', 'queued',
    'mission_id', step.mission_id, 'duplicate', false);
end;
$$;

revoke execute on function public.ops_release_step(bigint, integer, text) from public, anon, authenticated;
grant execute on function public.ops_release_step(bigint, integer, text) to service_role;
