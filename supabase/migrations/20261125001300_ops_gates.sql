-- Gates (invariant 4): checked before any approval, automatic or human, in the seed's order:
-- kill switch -> per-agent daily proposal limit -> cap gates per step kind -> max active missions.
-- Every counted quota is serialized by a transaction-scoped advisory lock on that quota, taken before the
-- count and held to commit, so concurrent proposals see each other's rows: 100 proposals racing for a
-- quota of 5 accept exactly 5. Locks are always taken in the same order (agent, kinds sorted, missions),
-- so two proposals can never deadlock on them. Far from a limit the lock is skipped (see
-- ops_internal.near_quota): otherwise one lock per gate would serialize all intake.

-- Whether concurrent transactions could still carry `used` past `quota`: each adds at most `per_tx` rows,
-- and no more transactions can be in flight than connections (plus prepared transactions).
create or replace function ops_internal.near_quota(used bigint, wanted bigint, quota bigint, per_tx bigint)
returns boolean
language sql
stable
set search_path = ''
as $$
  select used + wanted + per_tx * (pg_catalog.current_setting('max_connections')::bigint
                                   + pg_catalog.current_setting('max_prepared_transactions')::bigint) > quota;
$$;

create or replace function ops_internal.gate_reason(
  agent_id text, kinds text[], new_proposal boolean, creates_mission boolean)
returns text
language plpgsql
set search_path = ''
as $$
declare
  gates jsonb := ops_internal.policy('step_kind_gates');
  daily jsonb := ops_internal.policy('daily_proposal_limit');
  day_start timestamptz := ops_internal.utc_day_start();
  quota bigint;
  used bigint;
  wanted bigint;
  gated_kind text;
begin
  if not ops_internal.system_enabled() then
    return 'system disabled by policy (system.enabled = false)'
      || coalesce(': ' || (ops_internal.policy('system') ->> 'reason'), '');
  end if;

  if new_proposal then
    quota := coalesce((daily -> 'per_agent' ->> gate_reason.agent_id)::bigint, (daily ->> 'limit')::bigint);
    if quota is not null then
      for attempt in 1..2 loop
        select pg_catalog.count(*) into used
          from public.ops_mission_proposals p
         where p.agent_id = gate_reason.agent_id and p.created_at >= day_start and p.status <> 'rejected';
        exit when attempt = 2 or not ops_internal.near_quota(used, 1, quota, 1);
        perform ops_internal.lock('daily_proposals:' || gate_reason.agent_id);  -- then count again
      end loop;
      if used >= quota then
        return pg_catalog.format('daily proposal limit reached for %s (%s/%s)', gate_reason.agent_id, used, quota);
      end if;
    end if;
  end if;

  for gated_kind in
    select distinct k from pg_catalog.unnest(kinds) as k where gates ? k order by 1
  loop
    if (gates -> gated_kind ->> 'enabled')::boolean is false then
      return pg_catalog.format('step kind %s is disabled by policy (step_kind_gates.%s.enabled = false)',
        gated_kind, gated_kind);
    end if;
    quota := (gates -> gated_kind ->> 'daily_limit')::bigint;
    if quota is not null then
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
    end if;
  end loop;

  if creates_mission then
    quota := (ops_internal.policy('max_active_missions') ->> 'limit')::bigint;
    if quota is not null then
      for attempt in 1..2 loop
        select pg_catalog.count(*) into used from public.ops_missions m where m.status in ('approved', 'running');
        exit when attempt = 2 or not ops_internal.near_quota(used, 1, quota, 1);
        perform ops_internal.lock('active_missions');  -- then count again
      end loop;
      if used >= quota then
        return pg_catalog.format('too many active missions (%s/%s)', used, quota);
      end if;
    end if;
  end if;
  return null;
end;
$$;

-- Why a proposal needs a human, or null when policy auto-approves it.
create or replace function ops_internal.needs_human(kinds text[], source text)
returns text
language plpgsql
stable
set search_path = ''
as $$
declare
  policy jsonb := ops_internal.policy('auto_approve');
  manual_kind text;
begin
  if not coalesce((policy ->> 'enabled')::boolean, false) then
    return 'auto-approve is off (auto_approve.enabled)';
  end if;
  select k into manual_kind from pg_catalog.unnest(kinds) as k
   where not coalesce(policy -> 'allowed_step_kinds', '[]'::jsonb) ? k
   order by k limit 1;
  if manual_kind is not null then
    return pg_catalog.format('step kind %s needs a human (not in auto_approve.allowed_step_kinds)', manual_kind);
  end if;
  if policy ? 'allowed_sources' and not (policy -> 'allowed_sources') ? source then
    return pg_catalog.format('source %s needs a human (not in auto_approve.allowed_sources)', source);
  end if;
  return null;
end;
$$;

select ops_internal.revoke_api_execute();
