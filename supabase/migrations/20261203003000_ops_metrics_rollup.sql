-- Metrics: a minute rollup written by the heartbeat, behind the console's charts and the counters of /metrics.
--
-- The heartbeat's `metrics` task (ops_internal.rollup_metrics, replacing the stub of
-- 20261203001500_ops_heartbeat_unattended.sql) does three things, each bounded:
--   1. It closes the minutes that ended at least a minute ago (so reports still committing are in), from
--      where the last run stopped (ops_metrics_state.rolled_until), as many as hold fewer than 20,000 events
--      (at least one minute, at most a day; the count is an ordered scan of the created_at index that stops
--      there, so a backlog after an outage is worked off over several runs, never in one that could time
--      out and be retried for ever): per kind, the steps that succeeded, failed for good and went back to
--      the queue (step:succeeded / step:failed / step:retrying events, read through the (type, created_at)
--      index) with a histogram of the final attempt's run time (reserved_at to finished_at) in the buckets
--      of ops_internal.metric_buckets();
--      for the whole loop, the heartbeats (count, failures, longest and total duration, from ops_action_runs)
--      and the notifications sent and dead-lettered (sent_at, dead_at of ops_notifications). Each closed
--      minute is added once to the running totals (ops_metrics_totals per kind, ops_metrics_state for the
--      loop), which are never pruned, so the counters /metrics shows only grow. A run that fails rolls back
--      as a whole and the next one closes the same minutes: a minute is counted exactly once.
--   2. It samples the queue depth per kind into the current minute's row (the deepest seen in the minute).
--   3. It prunes rows older than ops_internal.metrics_retention() (8 days), at most 5,000 a run.
-- A first run, or one after the heartbeat stopped for more than a day, starts a day back: counters do not
-- cover history older than that. Charts and counters lag the clock by one to two minutes.

create table public.ops_metrics_minutely (
  minute           timestamptz      not null,
  kind             text             not null,
  succeeded        integer          not null default 0,
  failed           integer          not null default 0,
  retried          integer          not null default 0,
  queued           integer,
  duration_buckets integer[]        not null default '{}',
  duration_sum     double precision not null default 0,

  constraint ops_metrics_minutely_pkey primary key (minute, kind),
  constraint ops_metrics_minutely_kind_check check (kind ~ ops_internal.kind_pattern()),
  constraint ops_metrics_minutely_counts_check
    check (succeeded >= 0 and failed >= 0 and retried >= 0 and (queued is null or queued >= 0))
);

comment on table public.ops_metrics_minutely is
  'Per minute and step kind: steps succeeded, failed, retried, the run-time histogram of the finished ones '
  '(closed by the heartbeat once the minute is over) and the deepest queue the heartbeat saw in the minute.';
comment on column public.ops_metrics_minutely.queued is
  'The deepest queue (queued steps of the kind) the heartbeat sampled in this minute; null: none sampled.';
comment on column public.ops_metrics_minutely.duration_buckets is
  'Steps that finished in the minute, counted per bucket of ops_internal.metric_buckets() (not cumulative; '
  'the last element counts those above the largest bound).';

create table public.ops_metrics_system_minutely (
  minute             timestamptz primary key,
  heartbeats         integer not null default 0,
  heartbeat_failures integer not null default 0,
  heartbeat_ms_max   integer,
  heartbeat_ms_sum   bigint  not null default 0,
  notifications_sent integer not null default 0,
  notifications_dead integer not null default 0
);

comment on table public.ops_metrics_system_minutely is
  'Per closed minute, for the whole loop: heartbeats run, failed, their longest and total duration, and '
  'notifications sent and dead-lettered. One row for every closed minute, so a minute without heartbeats shows.';

create table public.ops_metrics_totals (
  kind             text             primary key,
  succeeded        bigint           not null default 0,
  failed           bigint           not null default 0,
  retried          bigint           not null default 0,
  duration_buckets bigint[]         not null default '{}',
  duration_sum     double precision not null default 0,
  updated_at       timestamptz      not null default now(),

  constraint ops_metrics_totals_kind_check check (kind ~ ops_internal.kind_pattern())
);

comment on table public.ops_metrics_totals is
  'Running totals per step kind of every closed minute: the counters and histograms of /metrics. Never pruned.';

create table public.ops_metrics_state (
  id                 boolean     primary key default true,
  rolled_until       timestamptz,
  heartbeats         bigint      not null default 0,
  heartbeat_failures bigint      not null default 0,
  heartbeat_ms_sum   bigint      not null default 0,
  notifications_sent bigint      not null default 0,
  notifications_dead bigint      not null default 0,
  updated_at         timestamptz not null default now(),

  constraint ops_metrics_state_one_row check (id)
);

comment on table public.ops_metrics_state is
  'One row: where the rollup stopped (every minute before rolled_until is closed) and the loop''s running totals.';

insert into public.ops_metrics_state default values;

alter table public.ops_metrics_minutely enable row level security;
alter table public.ops_metrics_system_minutely enable row level security;
alter table public.ops_metrics_totals enable row level security;
alter table public.ops_metrics_state enable row level security;
revoke all on table public.ops_metrics_minutely, public.ops_metrics_system_minutely, public.ops_metrics_totals,
  public.ops_metrics_state from public, anon, authenticated, service_role;
grant select on table public.ops_metrics_minutely, public.ops_metrics_system_minutely, public.ops_metrics_totals,
  public.ops_metrics_state to service_role;

-- Upper bounds (seconds) of the step run-time histogram; one more bucket counts everything above the last.
create or replace function ops_internal.metric_buckets()
returns double precision[]
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select array[0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600]::double precision[];
$$;

-- The bucket (1-based) a run time of `seconds` falls in: the first whose bound it does not exceed.
create or replace function ops_internal.metric_bucket(seconds double precision)
returns integer
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select 1 + (select pg_catalog.count(*)::integer from pg_catalog.unnest(ops_internal.metric_buckets()) as b(bound)
               where b.bound < metric_bucket.seconds);
$$;

-- Element-wise sum of two bucket arrays (the shorter padded with zeros).
create or replace function ops_internal.add_counts(a bigint[], b bigint[])
returns bigint[]
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(pg_catalog.array_agg(coalesce(u.x, 0) + coalesce(u.y, 0) order by u.i), '{}')
    from rows from (pg_catalog.unnest(a), pg_catalog.unnest(b)) with ordinality as u(x, y, i);
$$;

create or replace function ops_internal.metrics_retention()
returns interval
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select interval '8 days';
$$;

-- The rollup as of `at` (the heartbeat passes now(); tests pass a later time to close the current minute).
create or replace function ops_internal.rollup_metrics_at(at timestamptz)
returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  state public.ops_metrics_state;
  -- Minutes before this one are closed: each ended at least a minute before `at`.
  cutoff timestamptz := pg_catalog.date_trunc('minute', at, 'UTC') - interval '1 minute';
  from_minute timestamptz;
  until_minute timestamptz;
  busy_minute timestamptz;
  buckets integer := pg_catalog.cardinality(ops_internal.metric_buckets()) + 1;
  closed integer := 0;
  kinds integer := 0;
  sampled integer := 0;
  pruned integer := 0;
  pruned_system integer := 0;
begin
  select s.* into state from public.ops_metrics_state s where s.id for update;
  if not found then
    insert into public.ops_metrics_state default values returning * into state;
  end if;
  from_minute := greatest(coalesce(state.rolled_until, cutoff - interval '1 day'), cutoff - interval '1 day');
  -- The minute of the 20,001st event from there, if there is one: close the minutes before it.
  select pg_catalog.date_trunc('minute', x.created_at, 'UTC') into busy_minute
    from (select e.created_at from public.ops_agent_events e where e.created_at >= from_minute
           order by e.created_at offset 20000 limit 1) as x;
  until_minute := least(cutoff, greatest(coalesce(busy_minute, cutoff), from_minute + interval '1 minute'));

  if until_minute > from_minute then
    closed := (extract(epoch from until_minute - from_minute) / 60)::integer;

    with finished as (
      select pg_catalog.date_trunc('minute', e.created_at, 'UTC') as minute,
             e.payload ->> 'kind' as kind,
             e.type,
             case when e.type <> 'step:retrying' and s.reserved_at is not null and s.finished_at is not null
                  then greatest(0, extract(epoch from s.finished_at - s.reserved_at))::double precision end as seconds
        from public.ops_agent_events e
        left join public.ops_mission_steps s on s.id = e.step_id
       where e.type in ('step:succeeded', 'step:failed', 'step:retrying')
         and e.created_at >= from_minute and e.created_at < until_minute
         and e.payload ->> 'kind' ~ ops_internal.kind_pattern()
    ), histogram as (
      select f.minute, f.kind, ops_internal.metric_bucket(f.seconds) as bucket, pg_catalog.count(*)::integer as n
        from finished f
       where f.seconds is not null
       group by f.minute, f.kind, ops_internal.metric_bucket(f.seconds)
    ), per_minute as (
      select f.minute, f.kind,
             pg_catalog.count(*) filter (where f.type = 'step:succeeded')::integer as succeeded,
             pg_catalog.count(*) filter (where f.type = 'step:failed')::integer as failed,
             pg_catalog.count(*) filter (where f.type = 'step:retrying')::integer as retried,
             coalesce(pg_catalog.sum(f.seconds), 0) as duration_sum
        from finished f
       group by f.minute, f.kind
    )
    insert into public.ops_metrics_minutely as m
      (minute, kind, succeeded, failed, retried, duration_buckets, duration_sum)
    select p.minute, p.kind, p.succeeded, p.failed, p.retried,
           array(select coalesce((select h.n from histogram h
                                   where h.minute = p.minute and h.kind = p.kind and h.bucket = i.i), 0)
                   from pg_catalog.generate_series(1, buckets) as i(i) order by i.i),
           p.duration_sum
      from per_minute p
    on conflict (minute, kind) do update
       set succeeded = excluded.succeeded, failed = excluded.failed, retried = excluded.retried,
           duration_buckets = excluded.duration_buckets, duration_sum = excluded.duration_sum;

    insert into public.ops_metrics_totals as t (kind, succeeded, failed, retried, duration_buckets, duration_sum)
    select m.kind, pg_catalog.sum(m.succeeded), pg_catalog.sum(m.failed), pg_catalog.sum(m.retried),
           array(select pg_catalog.sum(u.n)::bigint
                   from public.ops_metrics_minutely x
                  cross join pg_catalog.unnest(x.duration_buckets) with ordinality as u(n, i)
                  where x.kind = m.kind and x.minute >= from_minute and x.minute < until_minute
                  group by u.i order by u.i),
           pg_catalog.sum(m.duration_sum)
      from public.ops_metrics_minutely m
     where m.minute >= from_minute and m.minute < until_minute
       and (m.succeeded > 0 or m.failed > 0 or m.retried > 0)
     group by m.kind
    on conflict (kind) do update
       set succeeded = t.succeeded + excluded.succeeded, failed = t.failed + excluded.failed,
           retried = t.retried + excluded.retried,
           duration_buckets = ops_internal.add_counts(t.duration_buckets, excluded.duration_buckets),
           duration_sum = t.duration_sum + excluded.duration_sum, updated_at = pg_catalog.now();
    get diagnostics kinds = row_count;

    insert into public.ops_metrics_system_minutely as s
      (minute, heartbeats, heartbeat_failures, heartbeat_ms_max, heartbeat_ms_sum, notifications_sent,
       notifications_dead)
    select g.minute, coalesce(h.runs, 0), coalesce(h.failures, 0), h.ms_max, coalesce(h.ms_sum, 0),
           coalesce(sent.n, 0), coalesce(dead.n, 0)
      from pg_catalog.generate_series(from_minute, until_minute - interval '1 minute', interval '1 minute') as g(minute)
      left join (select pg_catalog.date_trunc('minute', a.started_at, 'UTC') as minute,
                        pg_catalog.count(*)::integer as runs,
                        pg_catalog.count(*) filter (where a.status = 'failed')::integer as failures,
                        pg_catalog.max(a.duration_ms) as ms_max,
                        coalesce(pg_catalog.sum(a.duration_ms), 0)::bigint as ms_sum
                   from public.ops_action_runs a
                  where a.action = 'heartbeat' and a.started_at >= from_minute and a.started_at < until_minute
                  group by 1) as h on h.minute = g.minute
      left join (select pg_catalog.date_trunc('minute', n.sent_at, 'UTC') as minute, pg_catalog.count(*)::integer as n
                   from public.ops_notifications n
                  where n.status = 'sent' and n.sent_at >= from_minute and n.sent_at < until_minute
                  group by 1) as sent on sent.minute = g.minute
      left join (select pg_catalog.date_trunc('minute', n.dead_at, 'UTC') as minute, pg_catalog.count(*)::integer as n
                   from public.ops_notifications n
                  where n.status = 'dead' and n.dead_at >= from_minute and n.dead_at < until_minute
                  group by 1) as dead on dead.minute = g.minute
    on conflict (minute) do update
       set heartbeats = excluded.heartbeats, heartbeat_failures = excluded.heartbeat_failures,
           heartbeat_ms_max = excluded.heartbeat_ms_max, heartbeat_ms_sum = excluded.heartbeat_ms_sum,
           notifications_sent = excluded.notifications_sent, notifications_dead = excluded.notifications_dead;

    update public.ops_metrics_state as st
       set rolled_until = until_minute,
           heartbeats = st.heartbeats + x.heartbeats,
           heartbeat_failures = st.heartbeat_failures + x.heartbeat_failures,
           heartbeat_ms_sum = st.heartbeat_ms_sum + x.heartbeat_ms_sum,
           notifications_sent = st.notifications_sent + x.notifications_sent,
           notifications_dead = st.notifications_dead + x.notifications_dead,
           updated_at = pg_catalog.now()
      from (select coalesce(pg_catalog.sum(s.heartbeats), 0) as heartbeats,
                   coalesce(pg_catalog.sum(s.heartbeat_failures), 0) as heartbeat_failures,
                   coalesce(pg_catalog.sum(s.heartbeat_ms_sum), 0) as heartbeat_ms_sum,
                   coalesce(pg_catalog.sum(s.notifications_sent), 0) as notifications_sent,
                   coalesce(pg_catalog.sum(s.notifications_dead), 0) as notifications_dead
              from public.ops_metrics_system_minutely s
             where s.minute >= from_minute and s.minute < until_minute) as x
     where st.id;
  end if;

  -- The queue now, into the current minute: the deepest seen in the minute wins.
  insert into public.ops_metrics_minutely as m (minute, kind, queued)
  select pg_catalog.date_trunc('minute', at, 'UTC'), s.kind, pg_catalog.count(*)::integer
    from public.ops_mission_steps s
   where s.status = 'queued'
   group by s.kind
  on conflict (minute, kind) do update
     set queued = greatest(coalesce(m.queued, 0), excluded.queued);
  get diagnostics sampled = row_count;

  delete from public.ops_metrics_minutely m
   where (m.minute, m.kind) in (select x.minute, x.kind from public.ops_metrics_minutely x
                                 where x.minute < at - ops_internal.metrics_retention()
                                 order by x.minute limit 5000);
  get diagnostics pruned = row_count;
  delete from public.ops_metrics_system_minutely m
   where m.minute in (select x.minute from public.ops_metrics_system_minutely x
                       where x.minute < at - ops_internal.metrics_retention()
                       order by x.minute limit 5000);
  get diagnostics pruned_system = row_count;

  return pg_catalog.jsonb_build_object(
    'closed_minutes', closed,
    'kinds', kinds,
    'rolled_until', coalesce(case when closed > 0 then until_minute end, state.rolled_until),
    'queue_sampled', sampled,
    'pruned', pruned + pruned_system);
end;
$$;

-- The heartbeat's `metrics` task (the stub of 20261203001500_ops_heartbeat_unattended.sql, filled in).
create or replace function ops_internal.rollup_metrics()
returns jsonb
language sql
set search_path = pg_catalog, pg_temp
as $$
  select ops_internal.rollup_metrics_at(pg_catalog.now());
$$;

select ops_internal.revoke_api_execute();
