-- Workers known to the database: who is running, what each serves, when each was last seen.
--
-- A row is written by every claim (at most once a second per worker) and by ops_worker_heartbeat, which a
-- worker calls while it has nothing to claim; ops_worker_sign_off removes it on a clean stop. A worker is
-- live while it was seen within workers.presence_seconds (policy, default 60); the heartbeat forgets the
-- rest, with a 'worker:lost' event, so a worker that died without signing off is noticed. Nothing depends
-- on a worker announcing itself: claims work the same for a worker with no row, and gates only look at
-- presence when gates.require_live_worker asks them to.

create table public.ops_workers (
  worker_id    text        primary key,
  host         text,
  kinds        text[]      not null default '{}',
  concurrency  integer,
  version      text,
  started_at   timestamptz not null default now(),
  last_seen_at timestamptz not null default now(),
  stopping     boolean     not null default false,

  constraint ops_workers_worker_id_check check (pg_catalog.char_length(worker_id) between 1 and 200),
  constraint ops_workers_host_check check (host is null or pg_catalog.char_length(host) between 1 and 255),
  constraint ops_workers_kinds_check check (pg_catalog.cardinality(kinds) <= 200),
  constraint ops_workers_concurrency_check check (concurrency is null or concurrency between 1 and 10000),
  constraint ops_workers_version_check check (version is null or pg_catalog.char_length(version) between 1 and 100)
);

comment on table public.ops_workers is
  'Worker presence: written by claims and ops_worker_heartbeat, removed by ops_worker_sign_off or, once a '
  'worker has not been seen for workers.presence_seconds, by the heartbeat.';

create index ops_workers_kinds_idx on public.ops_workers using gin (kinds);

alter table public.ops_workers enable row level security;
revoke all on table public.ops_workers from public, anon, authenticated, service_role;
grant select on table public.ops_workers to service_role;

-- workers: {"presence_seconds": 60}: how long after it was last seen a worker still counts as live.
create or replace function ops_internal.validate_policy_workers(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(value, 'value', array['presence_seconds']);
  perform ops_internal.get_int(value, 'value', 'presence_seconds', false, 5, 86400);
end;
$$;

create or replace function ops_internal.presence_interval()
returns interval
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.make_interval(
    secs => coalesce((ops_internal.policy('workers') ->> 'presence_seconds')::integer, 60));
$$;

-- The workers seen within the presence interval.
create or replace function ops_internal.live_workers()
returns setof public.ops_workers
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select w.* from public.ops_workers w where w.last_seen_at > pg_catalog.now() - ops_internal.presence_interval();
$$;

-- Whether some live worker serves `kind`.
create or replace function ops_internal.kind_served(kind text)
returns boolean
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select exists (select 1 from ops_internal.live_workers() w where kind_served.kind = any (w.kinds));
$$;

-- Seen now: a new worker joins (event), a known one is written at most once a second unless something it
-- announces changed. `kinds` null keeps the kinds it announced before.
create or replace function ops_internal.touch_worker(
  worker_id text, kinds text[] default null, host text default null, concurrency integer default null,
  version text default null, stopping boolean default null)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  joined boolean;
begin
  insert into public.ops_workers as w (worker_id, kinds, host, concurrency, version, stopping)
  values (touch_worker.worker_id, coalesce(touch_worker.kinds, '{}'), touch_worker.host, touch_worker.concurrency,
          touch_worker.version, coalesce(touch_worker.stopping, false))
  on conflict (worker_id) do update
     set last_seen_at = pg_catalog.now(),
         kinds = coalesce(touch_worker.kinds, w.kinds),
         host = coalesce(touch_worker.host, w.host),
         concurrency = coalesce(touch_worker.concurrency, w.concurrency),
         version = coalesce(touch_worker.version, w.version),
         stopping = coalesce(touch_worker.stopping, w.stopping)
   where w.last_seen_at < pg_catalog.now() - interval '1 second'
      or w.kinds is distinct from coalesce(touch_worker.kinds, w.kinds)
      or w.host is distinct from coalesce(touch_worker.host, w.host)
      or w.concurrency is distinct from coalesce(touch_worker.concurrency, w.concurrency)
      or w.version is distinct from coalesce(touch_worker.version, w.version)
      or w.stopping is distinct from coalesce(touch_worker.stopping, w.stopping)
  returning (w.xmax = 0) into joined;
  if joined then
    perform ops_internal.emit_event('worker:joined', 'system',
      pg_catalog.format('Worker %s joined (%s)', touch_worker.worker_id,
        pg_catalog.array_to_string(coalesce(touch_worker.kinds, '{}'), ', ')),
      pg_catalog.jsonb_build_object('worker_id', touch_worker.worker_id, 'host', touch_worker.host,
        'kinds', coalesce(touch_worker.kinds, '{}'), 'concurrency', touch_worker.concurrency,
        'version', touch_worker.version),
      array['worker']);
  end if;
end;
$$;

-- One worker as the read API shows it, with what it runs now.
create or replace function ops_internal.worker_json(worker public.ops_workers)
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'worker_id', worker.worker_id, 'host', worker.host, 'kinds', worker.kinds,
    'concurrency', worker.concurrency, 'version', worker.version, 'started_at', worker.started_at,
    'last_seen_at', worker.last_seen_at, 'stopping', worker.stopping,
    'live', worker.last_seen_at > pg_catalog.now() - ops_internal.presence_interval(),
    'running', coalesce((select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                  'step_id', s.id, 'mission_id', s.mission_id, 'kind', s.kind, 'attempt', s.attempt,
                  'started_at', s.reserved_at) order by s.reserved_at)
                  from public.ops_mission_steps s
                 where s.status = 'running' and s.reserved_by = worker.worker_id), '[]'::jsonb));
$$;

-- Workers no longer seen are forgotten, each with a warning event: it stopped without signing off.
create or replace function ops_internal.forget_lost_workers()
returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  lost public.ops_workers;
  forgotten integer := 0;
begin
  for lost in
    delete from public.ops_workers w where w.last_seen_at <= pg_catalog.now() - ops_internal.presence_interval()
    returning w.*
  loop
    perform ops_internal.emit_event('worker:lost', 'system',
      pg_catalog.format('Worker %s lost: not seen since %s', lost.worker_id,
        pg_catalog.to_char(lost.last_seen_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')),
      pg_catalog.jsonb_build_object('worker_id', lost.worker_id, 'host', lost.host, 'kinds', lost.kinds,
        'last_seen_at', lost.last_seen_at),
      array['worker', 'warning']);
    forgotten := forgotten + 1;
  end loop;
  return pg_catalog.jsonb_build_object('lost', forgotten);
end;
$$;

select ops_internal.revoke_api_execute();

-- A worker's presence while it has nothing to claim (claims refresh it too). Input:
-- {worker_id, host?, kinds?, concurrency?, version?, stopping?}; returns the worker as ops_list_workers shows it.
create or replace function public.ops_worker_heartbeat(worker jsonb)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  who text;
  touched public.ops_workers;
begin
  perform ops_internal.require_object(ops_worker_heartbeat.worker, 'worker');
  perform ops_internal.check_keys(worker, 'worker', array['worker_id', 'host', 'kinds', 'concurrency', 'version',
    'stopping']);
  who := ops_internal.get_text(worker, 'worker', 'worker_id', true, null, 200);
  perform ops_internal.touch_worker(
    who,
    ops_internal.get_text_array(worker, 'worker', 'kinds', false, ops_internal.kind_pattern(), 200),
    ops_internal.get_text(worker, 'worker', 'host', false, null, 255),
    ops_internal.get_int(worker, 'worker', 'concurrency', false, 1, 10000)::integer,
    ops_internal.get_text(worker, 'worker', 'version', false, null, 100),
    ops_internal.get_bool(worker, 'worker', 'stopping'));
  select w.* into touched from public.ops_workers w where w.worker_id = who;
  return ops_internal.worker_json(touched);
end;
$$;

revoke execute on function public.ops_worker_heartbeat(jsonb) from public, anon, authenticated;
grant execute on function public.ops_worker_heartbeat(jsonb) to service_role;

-- A clean stop: the worker leaves the list at once ('worker:left'). Signing off twice is harmless.
create or replace function public.ops_worker_sign_off(worker_id text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  who text := ops_internal.check_text(ops_worker_sign_off.worker_id, 'worker_id', 200);
  gone public.ops_workers;
begin
  delete from public.ops_workers w where w.worker_id = who returning w.* into gone;
  if found then
    perform ops_internal.emit_event('worker:left', 'system', pg_catalog.format('Worker %s signed off', who),
      pg_catalog.jsonb_build_object('worker_id', who, 'host', gone.host, 'kinds', gone.kinds), array['worker']);
  end if;
  return pg_catalog.jsonb_build_object('worker_id', who, 'signed_off', found);
end;
$$;

revoke execute on function public.ops_worker_sign_off(text) from public, anon, authenticated;
grant execute on function public.ops_worker_sign_off(text) to service_role;

-- Every known worker (live first, then by id), with its kinds and the steps it runs now.
create or replace function public.ops_list_workers()
returns jsonb
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(pg_catalog.jsonb_agg(ops_internal.worker_json(w)
           order by w.last_seen_at > pg_catalog.now() - ops_internal.presence_interval() desc, w.worker_id), '[]'::jsonb)
    from public.ops_workers w;
$$;

revoke execute on function public.ops_list_workers() from public, anon, authenticated;
grant execute on function public.ops_list_workers() to service_role;
