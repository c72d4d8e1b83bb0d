-- Stall detection (pitfall P3: queued work piling up silently). Each heartbeat looks at every kind with
-- steps ready to run: how long the oldest has waited, whether a live worker serves the kind, whether the
-- kind is disabled. When the oldest has waited longer than alerts.queued_age_seconds (policy, default 900),
-- the kind is stalled: one 'queue:stalled' event per episode, with the reason (no_worker: no live worker
-- serves it; disabled: a person or the circuit breaker turned it off; workers_busy: workers serve it but
-- do not keep up), and one 'queue:recovered' when it clears. An episode's reason is kept up to date without
-- new events. ops_queue_stalls holds the open episodes; `agent-ops status` exits non-zero while any is open.

create table public.ops_queue_stalls (
  kind              text        primary key,
  reason            text        not null,
  since             timestamptz not null default now(),
  oldest_ready_at   timestamptz not null,
  queued            integer     not null,
  checked_at        timestamptz not null default now(),

  constraint ops_queue_stalls_kind_check check (kind ~ ops_internal.kind_pattern()),
  constraint ops_queue_stalls_reason_check check (reason in ('no_worker', 'disabled', 'workers_busy'))
);

comment on table public.ops_queue_stalls is
  'Open stall episodes, one per step kind: queued work waiting longer than alerts.queued_age_seconds.';

alter table public.ops_queue_stalls enable row level security;
revoke all on table public.ops_queue_stalls from public, anon, authenticated, service_role;
grant select on table public.ops_queue_stalls to service_role;

-- alerts: {"queued_age_seconds": 900, "heartbeat_age_seconds": 300}: when queued work counts as stalled, and
-- when the last heartbeat counts as late (the CLI's status exits non-zero on either).
create or replace function ops_internal.validate_policy_alerts(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(value, 'value', array['queued_age_seconds', 'heartbeat_age_seconds']);
  perform ops_internal.check_int_settings(value, array['queued_age_seconds', 'heartbeat_age_seconds'], 10, 604800);
end;
$$;

create or replace function ops_internal.alert_setting(name text)
returns integer
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce((ops_internal.policy('alerts') ->> name)::integer,
                  case name when 'queued_age_seconds' then 900 when 'heartbeat_age_seconds' then 300 end);
$$;

-- Per kind with ready work: its oldest ready step, how many are ready, and why it is not moving.
create or replace function ops_internal.queue_health()
returns table (kind text, oldest_ready_at timestamptz, queued bigint, reason text)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select q.kind, q.oldest_ready_at, q.queued,
         case
           when (p.value ->> 'enabled')::boolean is false
             or (ops_internal.policy('step_kind_gates') -> q.kind ->> 'enabled')::boolean is false then 'disabled'
           when not ops_internal.kind_served(q.kind) then 'no_worker'
           else 'workers_busy'
         end
    from (select s.kind, pg_catalog.min(s.run_after) as oldest_ready_at, pg_catalog.count(*) as queued
            from public.ops_mission_steps s
           where s.status = 'queued' and s.run_after <= pg_catalog.now()
           group by s.kind) as q
    left join public.ops_policy p on p.key = 'worker:' || q.kind;
$$;

-- The heartbeat's stall check: opens, updates and closes episodes; one event per opening and per closing.
create or replace function ops_internal.check_stalls()
returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  threshold interval := pg_catalog.make_interval(secs => ops_internal.alert_setting('queued_age_seconds'));
  health record;
  episode public.ops_queue_stalls;
  opened_now boolean;
  opened integer := 0;
  recovered integer := 0;
  stalled text[] := '{}'::text[];
begin
  for health in select h.* from ops_internal.queue_health() as h where h.oldest_ready_at < pg_catalog.now() - threshold
  loop
    stalled := stalled || health.kind;
    insert into public.ops_queue_stalls as q (kind, reason, oldest_ready_at, queued)
    values (health.kind, health.reason, health.oldest_ready_at, health.queued)
    on conflict (kind) do update
       set reason = excluded.reason, oldest_ready_at = excluded.oldest_ready_at, queued = excluded.queued,
           checked_at = pg_catalog.now()
    returning (q.xmax = 0) into opened_now;
    if opened_now then
      opened := opened + 1;
      perform ops_internal.emit_event('queue:stalled', 'system',
        pg_catalog.format('Queue stalled: %s %s step(s) of %s waiting since %s (%s)', health.queued,
          'ready', health.kind,
          pg_catalog.to_char(health.oldest_ready_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
          pg_catalog.replace(health.reason, '_', ' ')),
        pg_catalog.jsonb_build_object('kind', health.kind, 'reason', health.reason, 'queued', health.queued,
          'oldest_ready_at', health.oldest_ready_at,
          'age_seconds', pg_catalog.round(extract(epoch from pg_catalog.now() - health.oldest_ready_at))),
        array[health.kind, 'stalled', 'warning']);
    end if;
  end loop;

  for episode in
    delete from public.ops_queue_stalls q where q.kind <> all (stalled) returning q.*
  loop
    recovered := recovered + 1;
    perform ops_internal.emit_event('queue:recovered', 'system',
      pg_catalog.format('Queue recovered: %s moves again (stalled since %s)', episode.kind,
        pg_catalog.to_char(episode.since at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')),
      pg_catalog.jsonb_build_object('kind', episode.kind, 'reason', episode.reason, 'since', episode.since,
        'stalled_seconds', pg_catalog.round(extract(epoch from pg_catalog.now() - episode.since))),
      array[episode.kind, 'recovered']);
  end loop;
  return pg_catalog.jsonb_build_object('stalled', pg_catalog.cardinality(stalled), 'opened', opened,
    'recovered', recovered);
end;
$$;

select ops_internal.revoke_api_execute();
