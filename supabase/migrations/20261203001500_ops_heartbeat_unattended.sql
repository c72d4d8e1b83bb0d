-- The heartbeat for unattended operation, and the status that shows it.
--
-- Tasks, in order, each isolated (one failing task never stops the others) and bounded by its own budget or
-- batch: recovery (stale and timed-out steps) -> workers (forget the lost) -> stalls (queue:stalled /
-- queue:recovered) -> triggers -> reactions (both wait while the kill switch is off) -> notifications (fill
-- the outbox) -> metrics (the minute rollup behind the charts) -> retention. The task list is data: a new
-- task is a line in ops_internal.heartbeat_tasks(). Single-flight as before; one ops_action_runs row per run.
--
-- ops_status() adds the live workers with what each runs, the open stall episodes, the circuit breakers'
-- state, the last heartbeat's age and an `alerts` summary (what `agent-ops status` exits non-zero on).

-- Filled by later migrations (the outbox and the metrics rollup); until then they do nothing.
create or replace function ops_internal.enqueue_notifications()
returns jsonb
language sql
set search_path = pg_catalog, pg_temp
as $$
  select '{}'::jsonb;
$$;

create or replace function ops_internal.rollup_metrics()
returns jsonb
language sql
set search_path = pg_catalog, pg_temp
as $$
  select '{}'::jsonb;
$$;

-- The heartbeat's tasks: name, the call that runs it, and whether it waits while the kill switch is off.
create or replace function ops_internal.heartbeat_tasks()
returns table (task text, call text, needs_system boolean)
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  values ('recovery', 'public.ops_recover_stale_steps()', false),
         ('workers', 'ops_internal.forget_lost_workers()', false),
         ('stalls', 'ops_internal.check_stalls()', false),
         ('triggers', 'public.ops_evaluate_triggers()', true),
         ('reactions', 'public.ops_process_reactions()', true),
         ('notifications', 'ops_internal.enqueue_notifications()', false),
         ('metrics', 'ops_internal.rollup_metrics()', false),
         ('retention', 'ops_internal.prune_history()', false);
$$;

-- One task in a subtransaction of its own: {"result": ...} or {"error": message}.
create or replace function ops_internal.run_heartbeat_task(call text)
returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  result jsonb;
begin
  execute 'select ' || call into result;
  return pg_catalog.jsonb_build_object('result', result);
exception when others then
  return pg_catalog.jsonb_build_object('error', sqlerrm);
end;
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_heartbeat()
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  enabled boolean;
  task record;
  outcome jsonb;
  result jsonb := '{}'::jsonb;
  errors jsonb := '[]'::jsonb;
  run_id bigint;
  duration integer;
begin
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended('agent-ops:heartbeat', 0)) then
    return '{"skipped": "busy"}'::jsonb;
  end if;
  enabled := ops_internal.system_enabled();

  for task in select t.* from ops_internal.heartbeat_tasks() as t loop
    if task.needs_system and not enabled then
      result := result || pg_catalog.jsonb_build_object(task.task, '{"skipped": "system disabled"}'::jsonb);
      continue;
    end if;
    outcome := ops_internal.run_heartbeat_task(task.call);
    if outcome ? 'error' then
      errors := errors || pg_catalog.jsonb_build_object('task', task.task, 'error', outcome ->> 'error');
      continue;
    end if;
    result := result || pg_catalog.jsonb_build_object(task.task, outcome -> 'result');
    -- A task may report errors of its own (a trigger rule that failed) without failing as a whole.
    errors := errors || coalesce((select pg_catalog.jsonb_agg(e || pg_catalog.jsonb_build_object('task', task.task))
                                    from pg_catalog.jsonb_array_elements(
                                      case when pg_catalog.jsonb_typeof(outcome -> 'result' -> 'errors') = 'array'
                                           then outcome -> 'result' -> 'errors' else '[]'::jsonb end) e), '[]'::jsonb);
  end loop;

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

create or replace function public.ops_status()
returns jsonb
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'system_enabled', ops_internal.system_enabled(),
    'proposals', pg_catalog.jsonb_build_object(
      'pending', (select pg_catalog.count(*) from public.ops_mission_proposals p where p.status = 'pending'),
      'today', coalesce((select pg_catalog.jsonb_object_agg(t.status, t.n) from (
         select p.status, pg_catalog.count(*) as n from public.ops_mission_proposals p
          where p.created_at >= ops_internal.utc_day_start() group by p.status) t), '{}'::jsonb)),
    'missions', pg_catalog.jsonb_build_object(
      'active', coalesce((select pg_catalog.jsonb_object_agg(t.status, t.n) from (
         select m.status, pg_catalog.count(*) as n from public.ops_missions m
          where m.status in ('approved', 'running') group by m.status) t), '{}'::jsonb),
      'finished_24h', coalesce((select pg_catalog.jsonb_object_agg(t.status, t.n) from (
         select m.status, pg_catalog.count(*) as n from public.ops_missions m
          where m.finalized_at >= pg_catalog.now() - interval '24 hours' group by m.status) t), '{}'::jsonb)),
    'queue', coalesce((select pg_catalog.jsonb_object_agg(t.kind, t.n) from (
       select s.kind, pg_catalog.count(*) as n from public.ops_mission_steps s where s.status = 'queued' group by s.kind) t),
       '{}'::jsonb),
    'running', coalesce((select pg_catalog.jsonb_object_agg(t.reserved_by, t.n) from (
       select s.reserved_by, pg_catalog.count(*) as n from public.ops_mission_steps s where s.status = 'running'
        group by s.reserved_by) t), '{}'::jsonb),
    'reactions_queued', (select pg_catalog.count(*) from public.ops_agent_reactions r where r.status = 'queued'),
    'circuit_breakers', coalesce((select pg_catalog.jsonb_object_agg(pg_catalog.substr(p.key, 8), p.value)
       from public.ops_policy p where p.key like 'worker:%' and (p.value ->> 'enabled')::boolean is false), '{}'::jsonb),
    'last_heartbeat', (select pg_catalog.jsonb_build_object('id', a.id, 'status', a.status, 'started_at', a.started_at,
       'duration_ms', a.duration_ms, 'error', a.error, 'result', a.result)
       from public.ops_action_runs a where a.action = 'heartbeat' order by a.started_at desc limit 1),
    'workers', (select coalesce(pg_catalog.jsonb_agg(ops_internal.worker_json(w) order by w.worker_id), '[]'::jsonb)
       from ops_internal.live_workers() w),
    'stalled', (select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('kind', q.kind, 'reason', q.reason,
       'since', q.since, 'queued', q.queued, 'oldest_ready_at', q.oldest_ready_at,
       'age_seconds', pg_catalog.round(extract(epoch from pg_catalog.now() - q.oldest_ready_at))) order by q.kind), '[]'::jsonb)
       from public.ops_queue_stalls q),
    'breakers', (select coalesce(pg_catalog.jsonb_object_agg(b.kind, pg_catalog.jsonb_build_object('state', b.state,
       'consecutive_failures', b.consecutive_failures, 'last_error', b.last_error, 'opened_at', b.opened_at,
       'reopen_at', b.reopen_at, 'opens', b.opens, 'probe_step_id', b.probe_step_id)), '{}'::jsonb)
       from public.ops_kind_breakers b where b.state <> 'closed' or b.consecutive_failures > 0),
    'heartbeat_age_seconds', (select pg_catalog.round(extract(epoch from pg_catalog.now() - pg_catalog.max(a.started_at)))
       from public.ops_action_runs a where a.action = 'heartbeat'),
    'alerts', pg_catalog.jsonb_build_object(
       'stalled_kinds', (select pg_catalog.count(*) from public.ops_queue_stalls),
       'open_breakers', (select pg_catalog.count(*) from public.ops_kind_breakers b where b.state <> 'closed'),
       'heartbeat_late', coalesce((select pg_catalog.max(a.started_at) from public.ops_action_runs a where a.action = 'heartbeat')
                                    < pg_catalog.now() - pg_catalog.make_interval(secs => ops_internal.alert_setting('heartbeat_age_seconds')),
                                  true),
       'queued_age_seconds', ops_internal.alert_setting('queued_age_seconds'),
       'heartbeat_age_seconds', ops_internal.alert_setting('heartbeat_age_seconds')),
    'recent_missions', (select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('id', m.id, 'agent_id', m.agent_id,
       'title', m.title, 'status', m.status, 'created_at', m.created_at, 'finalized_at', m.finalized_at) order by m.id desc), '[]'::jsonb)
       from (select x.* from public.ops_missions x order by x.id desc limit 10) m));
$$;

revoke execute on function public.ops_status() from public, anon, authenticated;
grant execute on function public.ops_status() to service_role;
