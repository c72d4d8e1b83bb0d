-- The gates, one function per rule, and two new ones: a kind that cannot run is refused at the gate.
--
-- ops_internal.gate_reason() asks each gate in order and stops at the first refusal (invariant 4: the same
-- chain for every approval, automatic or human):
--   system kill switch -> per-agent daily proposal limit -> disabled kinds -> kinds with no live worker
--   (only with gates.require_live_worker) -> daily quota per kind -> max active missions.
-- A kind is disabled by step_kind_gates.<kind>.enabled = false or by worker:<kind> (a person, or the circuit
-- breaker): proposals for it are rejected with that reason instead of piling up behind it in the queue.
-- Whether a kind no live worker serves is refused too is a choice (gates.require_live_worker, default off:
-- workers may rightly start later); when off the proposal is accepted and the stall alert covers it.
-- The counting gates keep their locks and order (agent, kinds sorted, missions), so none can deadlock.

create or replace function ops_internal.validate_policy_gates(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(value, 'value', array['require_live_worker']);
  perform ops_internal.get_bool(value, 'value', 'require_live_worker');
end;
$$;

create or replace function ops_internal.gate_system()
returns text
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select 'system disabled by policy (system.enabled = false)'
         || coalesce(': ' || (ops_internal.policy('system') ->> 'reason'), '')
   where not ops_internal.system_enabled();
$$;

create or replace function ops_internal.gate_daily_proposals(agent_id text)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  daily jsonb := ops_internal.policy('daily_proposal_limit');
  quota bigint := coalesce((daily -> 'per_agent' ->> gate_daily_proposals.agent_id)::bigint, (daily ->> 'limit')::bigint);
  used bigint;
begin
  if quota is null then
    return null;
  end if;
  for attempt in 1..2 loop
    select pg_catalog.count(*) into used
      from public.ops_mission_proposals p
     where p.agent_id = gate_daily_proposals.agent_id and p.created_at >= ops_internal.utc_day_start()
       and p.status <> 'rejected';
    exit when attempt = 2 or not ops_internal.near_quota(used, 1, quota, 1);
    perform ops_internal.lock('daily_proposals:' || gate_daily_proposals.agent_id);  -- then count again
  end loop;
  if used >= quota then
    return pg_catalog.format('daily proposal limit reached for %s (%s/%s)', gate_daily_proposals.agent_id, used, quota);
  end if;
  return null;
end;
$$;

create or replace function ops_internal.gate_kinds_enabled(kinds text[])
returns text
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(
    (select pg_catalog.format('step kind %s is disabled by policy (step_kind_gates.%s.enabled = false)', k, k)
       from pg_catalog.unnest(kinds) as k
      where (ops_internal.policy('step_kind_gates') -> k ->> 'enabled')::boolean is false
      order by k limit 1),
    (select pg_catalog.format('step kind %s is disabled (worker:%s): %s', k, k,
              coalesce(p.value ->> 'reason', 'no reason given'))
       from pg_catalog.unnest(kinds) as k
       join public.ops_policy p on p.key = 'worker:' || k
      where (p.value ->> 'enabled')::boolean is false
      order by k limit 1));
$$;

create or replace function ops_internal.gate_live_workers(kinds text[])
returns text
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.format('no live worker serves step kind %s (gates.require_live_worker)', k)
    from pg_catalog.unnest(kinds) as k
   where coalesce((ops_internal.policy('gates') ->> 'require_live_worker')::boolean, false)
     and not ops_internal.kind_served(k)
   order by k limit 1;
$$;

create or replace function ops_internal.gate_kind_quotas(kinds text[])
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  gates jsonb := ops_internal.policy('step_kind_gates');
  day_start timestamptz := ops_internal.utc_day_start();
  gated_kind text;
  quota bigint;
  used bigint;
  wanted bigint;
begin
  for gated_kind in
    select distinct k from pg_catalog.unnest(kinds) as k where gates -> k ? 'daily_limit' order by 1
  loop
    quota := (gates -> gated_kind ->> 'daily_limit')::bigint;
    select pg_catalog.count(*) into wanted from pg_catalog.unnest(kinds) as k where k = gated_kind;
    for attempt in 1..2 loop
      select pg_catalog.count(*) into used
        from public.ops_mission_steps s
        join public.ops_missions m on m.id = s.mission_id
       where s.kind = gated_kind and s.created_at >= day_start and m.status <> 'cancelled';
      -- A proposal holds at most 50 steps.
      exit when attempt = 2 or not ops_internal.near_quota(used, wanted, quota, 50);
      perform ops_internal.lock('step_kind_quota:' || gated_kind);  -- then count again
    end loop;
    if used + wanted > quota then
      return pg_catalog.format('daily quota for %s reached (%s/%s used today, this proposal needs %s)',
        gated_kind, used, quota, wanted);
    end if;
  end loop;
  return null;
end;
$$;

create or replace function ops_internal.gate_active_missions()
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  quota bigint := (ops_internal.policy('max_active_missions') ->> 'limit')::bigint;
  used bigint;
begin
  if quota is null then
    return null;
  end if;
  for attempt in 1..2 loop
    select pg_catalog.count(*) into used from public.ops_missions m where m.status in ('approved', 'running');
    exit when attempt = 2 or not ops_internal.near_quota(used, 1, quota, 1);
    perform ops_internal.lock('active_missions');  -- then count again
  end loop;
  if used >= quota then
    return pg_catalog.format('too many active missions (%s/%s)', used, quota);
  end if;
  return null;
end;
$$;

-- The first refusal in gate order, or null when every gate passes. COALESCE stops at the first non-null, so
-- a refused proposal takes no quota lock after the gate that refused it.
create or replace function ops_internal.gate_reason(
  agent_id text, kinds text[], new_proposal boolean, creates_mission boolean)
returns text
language sql
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(
    ops_internal.gate_system(),
    case when new_proposal then ops_internal.gate_daily_proposals(agent_id) end,
    ops_internal.gate_kinds_enabled(kinds),
    ops_internal.gate_live_workers(kinds),
    ops_internal.gate_kind_quotas(kinds),
    case when creates_mission then ops_internal.gate_active_missions() end);
$$;

select ops_internal.revoke_api_execute();
