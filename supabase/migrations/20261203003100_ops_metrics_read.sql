-- The reads behind what people look at: ops_metrics() for /metrics (one call per scrape, every family from
-- it) and ops_metrics_history(hours) for the console's charts (from the minute rollup, so a long history
-- stays cheap). STABLE, SECURITY DEFINER, EXECUTE for service_role only, like the rest of the read API.

-- Every value /metrics shows, now:
-- {generated_at, system_enabled, buckets: [upper bounds, seconds],
--  kinds: [{kind, queued, ready, oldest_ready_age_seconds, running, live_workers, enabled,
--           breaker: {state, consecutive_failures, opens, reopen_at, last_error},
--           stalled: {reason, since, stalled_seconds, queued} | null,
--           succeeded, failed, retried, duration: {le: [cumulative counts per bound], count, sum}}],
--  workers: [{worker_id, host, kinds, concurrency, version, stopping, last_seen_at, seen_seconds_ago, running}],
--  running_by_worker: {worker_id: steps} (every worker with running steps, live or not),
--  heartbeat: {runs, failures, duration_ms_sum, late, age_seconds, last: {id, status, started_at, duration_ms} | null},
--  notifications: {outbox: {pending, sending, sent, dead}, retrying, sent_total, dead_total},
--  rollup: {rolled_until, lag_seconds}}
-- Counters (succeeded, failed, retried, duration, heartbeat runs/failures, notifications *_total) come from
-- the rollup's running totals and lag the clock by one to two minutes; everything else is read now.
create or replace function public.ops_metrics()
returns jsonb
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  with queue as (
    select s.kind, pg_catalog.count(*) as queued,
           pg_catalog.count(*) filter (where s.run_after <= pg_catalog.now()) as ready,
           pg_catalog.min(s.run_after) filter (where s.run_after <= pg_catalog.now()) as oldest_ready_at
      from public.ops_mission_steps s
     where s.status = 'queued'
     group by s.kind
  ), running as (
    select s.kind, s.reserved_by as worker_id, pg_catalog.count(*) as steps
      from public.ops_mission_steps s
     where s.status = 'running'
     group by s.kind, s.reserved_by
  ), live as (
    select w.* from ops_internal.live_workers() as w
  ), disabled as (
    select pg_catalog.substr(p.key, 8) as kind from public.ops_policy p
     where p.key like 'worker:%' and (p.value ->> 'enabled')::boolean is false
    union
    select g.key from pg_catalog.jsonb_each(coalesce(ops_internal.policy('step_kind_gates'), '{}'::jsonb)) as g
     where pg_catalog.jsonb_typeof(g.value) = 'object' and (g.value ->> 'enabled')::boolean is false
  ), kinds as (
    select q.kind from queue q
    union select r.kind from running r
    union select t.kind from public.ops_metrics_totals t
    union select b.kind from public.ops_kind_breakers b
    union select st.kind from public.ops_queue_stalls st
    union select d.kind from disabled d
    union select k.kind from live l cross join pg_catalog.unnest(l.kinds) as k(kind)
  ), state as (
    select s.* from public.ops_metrics_state s where s.id
  ), last_run as (
    select a.id, a.status, a.started_at, a.duration_ms from public.ops_action_runs a
     where a.action = 'heartbeat' order by a.started_at desc limit 1
  )
  select pg_catalog.jsonb_build_object(
    'generated_at', pg_catalog.now(),
    'system_enabled', ops_internal.system_enabled(),
    'buckets', pg_catalog.to_jsonb(ops_internal.metric_buckets()),
    'kinds', coalesce((
      select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'kind', k.kind,
               'queued', coalesce(q.queued, 0),
               'ready', coalesce(q.ready, 0),
               'oldest_ready_age_seconds',
                 pg_catalog.round(coalesce(extract(epoch from pg_catalog.now() - q.oldest_ready_at), 0), 3),
               'running', coalesce((select pg_catalog.sum(r.steps) from running r where r.kind = k.kind), 0),
               'live_workers', (select pg_catalog.count(*) from live l where k.kind = any (l.kinds)),
               'enabled', not exists (select 1 from disabled d where d.kind = k.kind),
               'breaker', pg_catalog.jsonb_build_object(
                 'state', coalesce(b.state, 'closed'), 'consecutive_failures', coalesce(b.consecutive_failures, 0),
                 'opens', coalesce(b.opens, 0), 'reopen_at', b.reopen_at, 'last_error', b.last_error),
               'stalled', case when st.kind is not null then pg_catalog.jsonb_build_object(
                 'reason', st.reason, 'since', st.since, 'queued', st.queued,
                 'stalled_seconds', pg_catalog.round(extract(epoch from pg_catalog.now() - st.since), 3)) end,
               'succeeded', coalesce(t.succeeded, 0),
               'failed', coalesce(t.failed, 0),
               'retried', coalesce(t.retried, 0),
               'duration', pg_catalog.jsonb_build_object(
                 'le', coalesce((select pg_catalog.jsonb_agg(c.running_total order by c.i)
                                   from (select u.i, pg_catalog.sum(u.n) over (order by u.i) as running_total
                                           from pg_catalog.unnest(t.duration_buckets) with ordinality as u(n, i)) as c
                                  where c.i <= pg_catalog.cardinality(ops_internal.metric_buckets())), '[]'::jsonb),
                 'count', coalesce((select pg_catalog.sum(u.n) from pg_catalog.unnest(t.duration_buckets) as u(n)), 0),
                 'sum', coalesce(t.duration_sum, 0)))
             order by k.kind)
        from kinds k
        left join queue q on q.kind = k.kind
        left join public.ops_kind_breakers b on b.kind = k.kind
        left join public.ops_queue_stalls st on st.kind = k.kind
        left join public.ops_metrics_totals t on t.kind = k.kind), '[]'::jsonb),
    'workers', coalesce((
      select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'worker_id', l.worker_id, 'host', l.host, 'kinds', l.kinds, 'concurrency', l.concurrency,
               'version', l.version, 'stopping', l.stopping, 'last_seen_at', l.last_seen_at,
               'seen_seconds_ago', pg_catalog.round(extract(epoch from pg_catalog.now() - l.last_seen_at), 3),
               'running', coalesce((select pg_catalog.sum(r.steps) from running r where r.worker_id = l.worker_id), 0))
             order by l.worker_id)
        from live l), '[]'::jsonb),
    'running_by_worker', coalesce((
      select pg_catalog.jsonb_object_agg(x.worker_id, x.steps)
        from (select r.worker_id, pg_catalog.sum(r.steps) as steps from running r group by r.worker_id) as x), '{}'::jsonb),
    'heartbeat', (
      select pg_catalog.jsonb_build_object(
               'runs', coalesce(st.heartbeats, 0),
               'failures', coalesce(st.heartbeat_failures, 0),
               'duration_ms_sum', coalesce(st.heartbeat_ms_sum, 0),
               'late', coalesce((select lr.started_at from last_run lr) < pg_catalog.now()
                         - pg_catalog.make_interval(secs => ops_internal.alert_setting('heartbeat_age_seconds')), true),
               'age_seconds', (select pg_catalog.round(extract(epoch from pg_catalog.now() - lr.started_at), 3)
                                 from last_run lr),
               'last', (select pg_catalog.jsonb_build_object('id', lr.id, 'status', lr.status,
                                 'started_at', lr.started_at, 'duration_ms', lr.duration_ms) from last_run lr))
        from (select 1) as one left join state st on true),
    'notifications', (
      select pg_catalog.jsonb_build_object(
               'outbox', pg_catalog.jsonb_build_object(
                 'pending', (select pg_catalog.count(*) from public.ops_notifications n where n.status = 'pending'),
                 'sending', (select pg_catalog.count(*) from public.ops_notifications n where n.status = 'sending'),
                 'sent', (select pg_catalog.count(*) from public.ops_notifications n where n.status = 'sent'),
                 'dead', (select pg_catalog.count(*) from public.ops_notifications n where n.status = 'dead')),
               'retrying', (select pg_catalog.count(*) from public.ops_notifications n
                             where n.status = 'pending' and n.attempts > 0),
               'sent_total', coalesce(st.notifications_sent, 0),
               'dead_total', coalesce(st.notifications_dead, 0))
        from (select 1) as one left join state st on true),
    'rollup', (
      select pg_catalog.jsonb_build_object(
               'rolled_until', st.rolled_until,
               'lag_seconds', pg_catalog.round(extract(epoch from pg_catalog.now() - st.rolled_until), 3))
        from (select 1) as one left join state st on true));
$$;

revoke execute on function public.ops_metrics() from public, anon, authenticated;
grant execute on function public.ops_metrics() to service_role;

-- The console's charts: the last `hours` (1 to 192) as one value per minute, oldest first, ending with the
-- current minute: {from, minutes, step_seconds: 60, rolled_until,
--   queued: {kind: [deepest queue seen in the minute, 0 when not sampled]} (kinds with a queue in the window),
--   succeeded, failed, retried: [steps per minute, all kinds; null for minutes not closed yet],
--   heartbeats, heartbeat_failures: [per minute; null for minutes not closed yet],
--   heartbeat_ms_max: [longest heartbeat of the minute; null when none ran or not closed yet]}.
create or replace function public.ops_metrics_history(hours integer default 24)
returns jsonb
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  last_minute timestamptz := pg_catalog.date_trunc('minute', pg_catalog.now(), 'UTC');
  first_minute timestamptz;
  closed_until timestamptz;
begin
  if ops_metrics_history.hours is null or ops_metrics_history.hours not between 1 and 192 then
    perform ops_internal.invalid('hours must be from 1 to 192');
  end if;
  first_minute := last_minute - pg_catalog.make_interval(mins => ops_metrics_history.hours * 60 - 1);
  select s.rolled_until into closed_until from public.ops_metrics_state s where s.id;

  return (
    with minutes as (
      select g.minute, g.minute < coalesce(closed_until, '-infinity'::timestamptz) as closed
        from pg_catalog.generate_series(first_minute, last_minute, interval '1 minute') as g(minute)
    ), steps as (
      select m.minute, pg_catalog.sum(m.succeeded) as succeeded, pg_catalog.sum(m.failed) as failed,
             pg_catalog.sum(m.retried) as retried
        from public.ops_metrics_minutely m
       where m.minute >= first_minute and m.minute <= last_minute
       group by m.minute
    ), queued_kinds as (
      select distinct m.kind from public.ops_metrics_minutely m
       where m.minute >= first_minute and m.minute <= last_minute and m.queued > 0
    )
    select pg_catalog.jsonb_build_object(
      'from', first_minute,
      'minutes', ops_metrics_history.hours * 60,
      'step_seconds', 60,
      'rolled_until', closed_until,
      'queued', coalesce((
        select pg_catalog.jsonb_object_agg(q.kind, q.series)
          from (select k.kind, pg_catalog.jsonb_agg(coalesce(m.queued, 0) order by g.minute) as series
                  from queued_kinds k
                 cross join minutes g
                  left join public.ops_metrics_minutely m on m.minute = g.minute and m.kind = k.kind
                 group by k.kind) as q), '{}'::jsonb),
      'succeeded', (select pg_catalog.jsonb_agg(case when g.closed then coalesce(s.succeeded, 0) end order by g.minute)
                      from minutes g left join steps s on s.minute = g.minute),
      'failed', (select pg_catalog.jsonb_agg(case when g.closed then coalesce(s.failed, 0) end order by g.minute)
                   from minutes g left join steps s on s.minute = g.minute),
      'retried', (select pg_catalog.jsonb_agg(case when g.closed then coalesce(s.retried, 0) end order by g.minute)
                    from minutes g left join steps s on s.minute = g.minute),
      'heartbeats', (select pg_catalog.jsonb_agg(case when g.closed then coalesce(y.heartbeats, 0) end order by g.minute)
                       from minutes g left join public.ops_metrics_system_minutely y on y.minute = g.minute),
      'heartbeat_failures', (select pg_catalog.jsonb_agg(case when g.closed then coalesce(y.heartbeat_failures, 0) end
                                                         order by g.minute)
                               from minutes g left join public.ops_metrics_system_minutely y on y.minute = g.minute),
      'heartbeat_ms_max', (select pg_catalog.jsonb_agg(y.heartbeat_ms_max order by g.minute)
                             from minutes g left join public.ops_metrics_system_minutely y on y.minute = g.minute))
      from (select 1) as one);
end;
$$;

revoke execute on function public.ops_metrics_history(integer) from public, anon, authenticated;
grant execute on function public.ops_metrics_history(integer) to service_role;
