-- Mission finalization (invariant 3) and cancellation.
-- Finalization looks at all steps (seed pitfall 5): any failed -> mission failed and its remaining steps
-- cancelled; all succeeded -> succeeded; otherwise nothing changes. It locks the mission row first, so
-- calls racing from a worker and the heartbeat serialize and exactly one of them writes the terminal
-- status (and so exactly one terminal event); the others see it final and change nothing.
--
-- Lock order, everywhere: mission row, then its step rows. Claims are the one exception and never wait
-- for a mission lock (they skip a locked mission), so the order cannot cycle.

create or replace function ops_internal.finalize_mission(mission_id bigint)
returns public.ops_missions
language plpgsql
set search_path = ''
as $$
declare
  mission public.ops_missions;
  failed_step public.ops_mission_steps;
  open_steps bigint;
begin
  select m.* into mission from public.ops_missions m where m.id = finalize_mission.mission_id for update;
  if not found or mission.status in ('succeeded', 'failed', 'cancelled') then
    return mission;
  end if;

  select s.* into failed_step from public.ops_mission_steps s
   where s.mission_id = mission.id and s.status = 'failed' order by s.position limit 1;
  if found then
    update public.ops_mission_steps s
       set status = 'cancelled', finished_at = pg_catalog.now(),
           last_error = pg_catalog.format('cancelled: step %s (%s) failed', failed_step.position, failed_step.kind)
     where s.mission_id = mission.id and s.status in ('pending', 'queued', 'running');
    update public.ops_missions m
       set status = 'failed', finalized_at = pg_catalog.now(),
           failure_reason = pg_catalog.format('step %s (%s) failed: %s', failed_step.position, failed_step.kind,
             pg_catalog.left(coalesce(failed_step.last_error, 'no error given'), 500))
     where m.id = mission.id
    returning m.* into mission;
    return mission;
  end if;

  select pg_catalog.count(*) into open_steps from public.ops_mission_steps s
   where s.mission_id = mission.id and s.status <> 'succeeded';
  if open_steps = 0 then
    update public.ops_missions m
       set status = 'succeeded', finalized_at = pg_catalog.now(), started_at = coalesce(m.started_at, pg_catalog.now())
     where m.id = mission.id
    returning m.* into mission;
  end if;
  return mission;
end;
$$;

create or replace function ops_internal.mission_result(mission public.ops_missions)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select pg_catalog.jsonb_build_object(
    'mission_id', mission.id,
    'status', mission.status,
    'finalized', mission.status in ('succeeded', 'failed', 'cancelled'),
    'finalized_at', mission.finalized_at,
    'reason', mission.failure_reason);
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_finalize_mission(mission_id bigint)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  mission public.ops_missions;
begin
  if ops_finalize_mission.mission_id is null then
    perform ops_internal.invalid('mission_id is required');
  end if;
  mission := ops_internal.finalize_mission(ops_finalize_mission.mission_id);
  if mission.id is null then
    perform ops_internal.not_found(pg_catalog.format('mission %s not found', ops_finalize_mission.mission_id));
  end if;
  return ops_internal.mission_result(mission);
end;
$$;

revoke execute on function public.ops_finalize_mission(bigint) from public, anon, authenticated;
grant execute on function public.ops_finalize_mission(bigint) to service_role;

create or replace function public.ops_cancel_mission(mission_id bigint, reason text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  why text := ops_internal.check_text(ops_cancel_mission.reason, 'reason', 1000);
  mission public.ops_missions;
  cancelled_steps bigint;
begin
  if ops_cancel_mission.mission_id is null then
    perform ops_internal.invalid('mission_id is required');
  end if;
  select m.* into mission from public.ops_missions m where m.id = ops_cancel_mission.mission_id for update;
  if not found then
    perform ops_internal.not_found(pg_catalog.format('mission %s not found', ops_cancel_mission.mission_id));
  end if;
  if mission.status in ('succeeded', 'failed', 'cancelled') then
    perform ops_internal.conflict(pg_catalog.format('mission %s is already %s', mission.id, mission.status),
      'only approved or running missions can be cancelled');
  end if;
  update public.ops_mission_steps s
     set status = 'cancelled', finished_at = pg_catalog.now(), last_error = 'cancelled: ' || why
   where s.mission_id = mission.id and s.status in ('pending', 'queued', 'running');
  get diagnostics cancelled_steps = row_count;
  update public.ops_missions m
     set status = 'cancelled', failure_reason = why, finalized_at = pg_catalog.now()
   where m.id = mission.id
  returning m.* into mission;
  return ops_internal.mission_result(mission) || pg_catalog.jsonb_build_object('cancelled_steps', cancelled_steps);
end;
$$;

revoke execute on function public.ops_cancel_mission(bigint, text) from public, anon, authenticated;
grant execute on function public.ops_cancel_mission(bigint, text) to service_role;
