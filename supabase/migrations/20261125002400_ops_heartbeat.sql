-- The heartbeat: stale recovery -> triggers -> reactions -> retention, each in its own exception block so
-- one failure does not stop the others, each within its budget or batch cap. One ops_action_runs row per
-- run records per-task counts, errors and duration; the same JSON is returned.
-- Single-flight: a transaction-scoped advisory lock; a concurrent call returns {"skipped": "busy"} at once.
-- With the kill switch off, triggers and reactions wait (queued reactions stay queued), while recovery
-- and retention keep the tables healthy.
-- The heartbeat never executes steps (seed pitfall 1): workers are the only executors.

create or replace function public.ops_heartbeat()
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  enabled boolean;
  result jsonb := '{}'::jsonb;
  errors jsonb := '[]'::jsonb;
  run_id bigint;
  duration integer;
begin
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended('agent-ops:heartbeat', 0)) then
    return '{"skipped": "busy"}'::jsonb;
  end if;
  enabled := ops_internal.system_enabled();

  begin
    result := result || pg_catalog.jsonb_build_object('recovery', public.ops_recover_stale_steps());
  exception when others then
    errors := errors || pg_catalog.jsonb_build_object('task', 'recovery', 'error', sqlerrm);
  end;

  if enabled then
    begin
      result := result || pg_catalog.jsonb_build_object('triggers', public.ops_evaluate_triggers());
      errors := errors || coalesce((select pg_catalog.jsonb_agg(e || '{"task": "triggers"}'::jsonb)
                                      from pg_catalog.jsonb_array_elements(result -> 'triggers' -> 'errors') e), '[]'::jsonb);
    exception when others then
      errors := errors || pg_catalog.jsonb_build_object('task', 'triggers', 'error', sqlerrm);
    end;
    begin
      result := result || pg_catalog.jsonb_build_object('reactions', public.ops_process_reactions());
    exception when others then
      errors := errors || pg_catalog.jsonb_build_object('task', 'reactions', 'error', sqlerrm);
    end;
  else
    result := result || '{"triggers": {"skipped": "system disabled"}, "reactions": {"skipped": "system disabled"}}'::jsonb;
  end if;

  begin
    result := result || pg_catalog.jsonb_build_object('retention', ops_internal.prune_history());
  exception when others then
    errors := errors || pg_catalog.jsonb_build_object('task', 'retention', 'error', sqlerrm);
  end;

  duration := pg_catalog.floor(extract(epoch from pg_catalog.clock_timestamp() - started) * 1000);
  result := result || pg_catalog.jsonb_build_object('ok', pg_catalog.jsonb_array_length(errors) = 0,
    'system_enabled', enabled, 'errors', errors, 'duration_ms', duration, 'started_at', started);
  insert into public.ops_action_runs (action, status, result, error, duration_ms, started_at, finished_at)
  values ('heartbeat',
          case when pg_catalog.jsonb_array_length(errors) = 0 then 'succeeded' else 'failed' end,
          result,
          case when pg_catalog.jsonb_array_length(errors) > 0 then
            (select pg_catalog.string_agg((e ->> 'task') || coalesce(' ' || (e ->> 'rule'), '') || ': ' || (e ->> 'error'), '; ')
               from pg_catalog.jsonb_array_elements(errors) e) end,
          duration, started, pg_catalog.clock_timestamp())
  returning id into run_id;
  if pg_catalog.jsonb_array_length(errors) > 0 then
    perform ops_internal.emit_event('heartbeat:failed', 'system',
      pg_catalog.format('Heartbeat #%s had %s error(s)', run_id, pg_catalog.jsonb_array_length(errors)),
      pg_catalog.jsonb_build_object('run_id', run_id, 'errors', errors), array['warning']);
  end if;
  return result || pg_catalog.jsonb_build_object('run_id', run_id);
end;
$$;

revoke execute on function public.ops_heartbeat() from public, anon, authenticated;
grant execute on function public.ops_heartbeat() to service_role;
