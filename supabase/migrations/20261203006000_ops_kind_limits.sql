-- Fleet-wide limits per step kind, enforced when a step is claimed (worker_policy.kinds.<kind>):
--   max_running  steps of the kind running at once across every worker (0 holds the kind)
--   per_minute   steps of the kind handed out in any 60-second window (a sliding log, not a token bucket:
--                a full bucket plus its refill would allow up to twice the rate inside one window)
-- A claimer of a limited kind takes the kind's advisory lock ('kind_limit:<kind>', kinds in sorted order, so
-- claimers never deadlock) and holds it until its claim commits; under it the running steps and the window
-- are counted, so no number of concurrent claimers can exceed either limit. Unlimited kinds take no lock and
-- read nothing more than before. Limited steps stay queued and are claimed as soon as capacity frees.
--
-- The per-kind settings are only meaningful per kind: worker_policy.max_running at the top level is refused.
-- worker_policy.enabled is accepted as the articles' "does the control plane execute" flag; here the control
-- plane never executes steps (workers do), so it may only be false.

create or replace function ops_internal.validate_worker_settings(value jsonb, path text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  base bigint;
  cap bigint;
  per_kind boolean := path <> 'value';
begin
  perform ops_internal.require_object(value, path);
  perform ops_internal.check_keys(value, path, array['lease_seconds', 'max_attempts', 'backoff_base_seconds',
    'backoff_max_seconds', 'circuit_breaker_threshold', 'timeout_seconds', 'breaker_cooldown_seconds',
    'breaker_cooldown_max_seconds']
    || case when per_kind then array['max_running', 'per_minute'] else array['enabled'] end);
  perform ops_internal.get_int(value, path, 'lease_seconds', false, 1, 86400);
  perform ops_internal.get_int(value, path, 'max_attempts', false, 1, 100);
  base := ops_internal.get_int(value, path, 'backoff_base_seconds', false, 0, 86400);
  cap := ops_internal.get_int(value, path, 'backoff_max_seconds', false, 0, 604800);
  perform ops_internal.get_int(value, path, 'circuit_breaker_threshold', false, 1, 1000);
  perform ops_internal.get_int(value, path, 'timeout_seconds', false, 1, 604800);
  if base is not null and cap is not null and cap < base then
    perform ops_internal.invalid(path || '.backoff_max_seconds must be at least backoff_base_seconds');
  end if;
  base := ops_internal.get_int(value, path, 'breaker_cooldown_seconds', false, 1, 604800);
  cap := ops_internal.get_int(value, path, 'breaker_cooldown_max_seconds', false, 1, 2592000);
  if base is not null and cap is not null and cap < base then
    perform ops_internal.invalid(path || '.breaker_cooldown_max_seconds must be at least breaker_cooldown_seconds');
  end if;
  if per_kind then
    perform ops_internal.get_int(value, path, 'max_running', false, 0, 10000);
    perform ops_internal.get_int(value, path, 'per_minute', false, 0, 10000);
  elsif ops_internal.get_bool(value, path, 'enabled') then
    perform ops_internal.invalid(path || '.enabled must be false: the control plane never executes steps, '
      || 'workers do (max_running and per_minute are set per kind, in value.kinds.<kind>)');
  end if;
end;
$$;

-- The top-level keys a value.kinds entry may hold but the top level may not get a message that says where.
create or replace function ops_internal.validate_policy_worker_policy(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  k text;
begin
  foreach k in array array['max_running', 'per_minute'] loop
    if value ? k then
      perform ops_internal.invalid(pg_catalog.format('value.%s is set per kind: value.kinds.<kind>.%s', k, k));
    end if;
  end loop;
  perform ops_internal.validate_worker_settings(value - 'kinds', 'value');
  if ops_internal.get_object(value, 'value', 'kinds') is not null then
    perform ops_internal.check_map_keys(value -> 'kinds', 'value.kinds', ops_internal.kind_pattern());
    for k in select pg_catalog.jsonb_object_keys(value -> 'kinds') loop
      perform ops_internal.validate_worker_settings(value -> 'kinds' -> k, 'value.kinds.' || k);
    end loop;
  end if;
end;
$$;

-- The sliding log of the rate limit: when each of the kind's last hand-outs happened (at most per_minute
-- entries, none older than a minute once the kind is claimed again).
create table public.ops_kind_claims (
  kind       text          primary key,
  claimed_at timestamptz[] not null default '{}',

  constraint ops_kind_claims_kind_check check (kind ~ ops_internal.kind_pattern())
);

comment on table public.ops_kind_claims is
  'Rate-limit log per step kind (worker_policy.kinds.<kind>.per_minute): the times of the hand-outs in the last minute.';

alter table public.ops_kind_claims enable row level security;
revoke all on table public.ops_kind_claims from public, anon, authenticated, service_role;
grant select on table public.ops_kind_claims to service_role;

-- The kinds among `kinds` with a max_running or per_minute, sorted (the lock order).
create or replace function ops_internal.limited_kinds(worker_policy jsonb, kinds text[])
returns text[]
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(pg_catalog.array_agg(k order by k), '{}')
    from (select distinct k from pg_catalog.unnest(kinds) as k
           where worker_policy -> 'kinds' -> k ?| array['max_running', 'per_minute']) as l;
$$;

-- How many steps of a limited kind one claim may take now, and the time to stamp them with. Takes the kind's
-- lock first: it is held until the claim commits, so the counts below cannot go stale before the claim lands.
-- A claim that must not wait (agent_ops.claim_nowait = on: ops_report_and_claim, whose reports would hold
-- their finished steps' slots while it queued behind other claimers) only tries the lock: busy, the kind
-- gets 0 this time and agent_ops.claim_busy is set, so the caller can claim again once its reports are in.
create or replace function ops_internal.kind_allowance(kind text, worker_policy jsonb, out allowed integer, out at timestamptz)
returns record
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  max_running integer := (worker_policy -> 'kinds' -> kind_allowance.kind ->> 'max_running')::integer;
  per_minute integer := (worker_policy -> 'kinds' -> kind_allowance.kind ->> 'per_minute')::integer;
  running integer;
  recent integer;
begin
  if pg_catalog.current_setting('agent_ops.claim_nowait', true) = 'on' then
    if not pg_catalog.pg_try_advisory_xact_lock(
             pg_catalog.hashtextextended('agent-ops:kind_limit:' || kind_allowance.kind, 0)) then
      perform pg_catalog.set_config('agent_ops.claim_busy', 'on', true);
      allowed := 0;
      at := pg_catalog.clock_timestamp();
      return;
    end if;
  else
    perform ops_internal.lock('kind_limit:' || kind_allowance.kind);
  end if;
  -- After the lock: the statement's snapshot sees every claim committed by the lock's previous holders.
  at := pg_catalog.clock_timestamp();
  allowed := 100;
  if max_running is not null then
    select pg_catalog.count(*) into running from public.ops_mission_steps s
     where s.status = 'running' and s.kind = kind_allowance.kind;
    allowed := least(allowed, max_running - running);
  end if;
  if per_minute is not null then
    select pg_catalog.count(*) into recent
      from public.ops_kind_claims c, pg_catalog.unnest(c.claimed_at) as t
     where c.kind = kind_allowance.kind and t > at - interval '1 minute';
    allowed := least(allowed, per_minute - recent);
  end if;
  allowed := greatest(allowed, 0);
end;
$$;

-- Log `taken` hand-outs of a rate-limited kind at `at`, dropping entries older than a minute.
create or replace function ops_internal.note_kind_claims(kind text, taken integer, at timestamptz)
returns void
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  insert into public.ops_kind_claims as c (kind, claimed_at)
  values (note_kind_claims.kind, pg_catalog.array_fill(note_kind_claims.at, array[note_kind_claims.taken]))
  on conflict (kind) do update
     set claimed_at = array(select t from pg_catalog.unnest(c.claimed_at) as t
                             where t > note_kind_claims.at - interval '1 minute' order by t)
                      || excluded.claimed_at;
$$;

select ops_internal.revoke_api_execute();
