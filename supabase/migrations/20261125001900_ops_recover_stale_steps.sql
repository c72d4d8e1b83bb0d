-- Stale recovery (seed pitfall 4): a running step whose lease expired (the worker crashed, restarted or
-- lost its network) is treated as a failed attempt with last_error 'Stale: no progress for N minutes':
-- back to the queue with backoff while attempts remain, otherwise failed and its mission finalized.
-- Capped batch; SKIP LOCKED, so recovery never waits on a worker or blocks one; and the UPDATE re-checks
-- status, attempt and lease, so a step that completed or was extended meanwhile is never overwritten
-- (the River #1302 class of bug). Each recovered step also gets a 'step:recovered' event.
-- Afterwards, active missions whose steps are all finished are finalized (a safety net, idempotent).

create or replace function public.ops_recover_stale_steps()
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  batch integer := ops_internal.heartbeat_setting('recovery_batch');
  candidate record;
  step public.ops_mission_steps;
  stale_minutes integer;
  message text;
  requeued integer := 0;
  failed integer := 0;
  finalized integer := 0;
  mission public.ops_missions;
begin
  for candidate in
    select s.id, s.mission_id from public.ops_mission_steps s
     where s.status = 'running' and s.lease_expires_at < pg_catalog.now()
     order by s.lease_expires_at
     limit batch
  loop
    perform 1 from public.ops_missions m where m.id = candidate.mission_id for update skip locked;
    continue when not found;
    select s.* into step from public.ops_mission_steps s
     where s.id = candidate.id and s.status = 'running' and s.lease_expires_at < pg_catalog.now()
       for update skip locked;
    continue when not found;

    stale_minutes := pg_catalog.floor(extract(epoch from pg_catalog.now() - coalesce(step.heartbeat_at, step.reserved_at)) / 60);
    message := pg_catalog.format('Stale: no progress for %s minutes', stale_minutes);
    perform ops_internal.mark_mission_running(step.mission_id);
    if step.attempt < step.max_attempts then
      update public.ops_mission_steps s
         set status = 'queued', last_error = message,
             run_after = pg_catalog.now() + ops_internal.retry_delay(s.kind, s.attempt),
             reserved_by = null, reserved_at = null, heartbeat_at = null, lease_expires_at = null
       where s.id = step.id and s.status = 'running' and s.attempt = step.attempt;
      requeued := requeued + 1;
    else
      update public.ops_mission_steps s
         set status = 'failed', last_error = message, finished_at = pg_catalog.now(), lease_expires_at = null
       where s.id = step.id and s.status = 'running' and s.attempt = step.attempt;
      if (ops_internal.finalize_mission(step.mission_id)).status = 'failed' then
        finalized := finalized + 1;
      end if;
      failed := failed + 1;
    end if;
    perform ops_internal.emit_event(
      'step:recovered',
      (select m.agent_id from public.ops_missions m where m.id = step.mission_id),
      pg_catalog.format('Step #%s (%s) recovered: %s', step.id, step.kind, message),
      pg_catalog.jsonb_build_object('step_id', step.id, 'mission_id', step.mission_id, 'kind', step.kind,
        'attempt', step.attempt, 'worker_id', step.reserved_by, 'stale_minutes', stale_minutes,
        'outcome', case when step.attempt < step.max_attempts then 'requeued' else 'failed' end),
      array[step.kind, 'recovery', 'warning'],
      mission_id => step.mission_id,
      step_id => step.id);
  end loop;

  for candidate in
    select m.id from public.ops_missions m
     where m.status in ('approved', 'running')
       and not exists (select 1 from public.ops_mission_steps s
                        where s.mission_id = m.id and s.status in ('pending', 'queued', 'running'))
     limit batch
  loop
    perform 1 from public.ops_missions m where m.id = candidate.id for update skip locked;
    continue when not found;
    mission := ops_internal.finalize_mission(candidate.id);
    if mission.status in ('succeeded', 'failed') then
      finalized := finalized + 1;
    end if;
  end loop;

  return pg_catalog.jsonb_build_object('recovered', requeued + failed, 'requeued', requeued, 'failed', failed,
    'missions_finalized', finalized);
end;
$$;

revoke execute on function public.ops_recover_stale_steps() from public, anon, authenticated;
grant execute on function public.ops_recover_stale_steps() to service_role;
