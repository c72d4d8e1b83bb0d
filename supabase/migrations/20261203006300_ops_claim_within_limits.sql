-- The claim within the fleet-wide limits (20261203006000) and the budgets (20261203006200).
--
-- A claim that touches no limited kind and no held agent takes the path it always took: one ordered scan per
-- kind, no lock, no extra read (the policy read also fetches `budgets`). Otherwise:
--   1. spending kinds: the 'spend' lock is taken shared, then the held agents are read; when the global budget
--      is exhausted the spending kinds are not claimed at all, else steps of held agents are skipped;
--   2. each limited kind, in sorted order: its lock, then how many steps it may still take (max_running minus
--      running, per_minute minus the last minute's hand-outs);
--   3. one scan over every wanted kind with those caps, so priority order holds across limited and unlimited
--      kinds alike; the hand-outs of rate-limited kinds are logged with the claim's time, which is also their
--      reserved_at.
-- Probes of open breakers go through the same caps; a probe's kind lock is only tried, never waited for
-- (a probe's kind is outside the sorted order of step 2).

-- claim_steps with per-kind caps (null: no cap), held agents for the spending kinds, and one claim time.
create or replace function ops_internal.claim_steps_within(
  worker text, kinds text[], caps integer[], batch integer, lease integer, worker_policy jsonb,
  held text[], spending text[], at timestamptz)
returns setof public.ops_mission_steps
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  with picked as (
    select c.id
      from unnest(kinds, caps) as k(kind, cap)  -- the multi-argument form is FROM syntax, not a function
     cross join lateral (
       select s.id, s.priority, s.run_after from public.ops_mission_steps s
        where s.status = 'queued' and s.kind = k.kind and s.run_after <= pg_catalog.now()
          and (pg_catalog.cardinality(held) = 0 or k.kind <> all (spending)
               or not exists (select 1 from public.ops_missions m
                               where m.id = s.mission_id and m.agent_id = any (held)))
        order by s.priority desc, s.run_after, s.id
        limit least(batch, coalesce(k.cap, batch))
        for update skip locked
     ) as c
     order by c.priority desc, c.run_after, c.id
     limit batch
  )
  update public.ops_mission_steps s
     set status = 'running', attempt = s.attempt + 1, reserved_by = worker, reserved_at = at,
         lease_renewed_at = at, started_at = coalesce(s.started_at, at),
         lease_expires_at = at + pg_catalog.make_interval(
           secs => coalesce(lease, ops_internal.worker_setting(worker_policy, s.kind, 'lease_seconds'))),
         deadline_at = at + pg_catalog.make_interval(
           secs => ops_internal.worker_setting(worker_policy, s.kind, 'timeout_seconds'))
    from picked
   where s.id = picked.id
  returning s.*;
$$;

-- Try-only variant of kind_allowance for probes: 0 when another claimer holds the kind's lock.
create or replace function ops_internal.probe_allowance(kind text, worker_policy jsonb)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended('agent-ops:kind_limit:' || kind, 0)) then
    return 0;
  end if;
  return (ops_internal.kind_allowance(kind, worker_policy)).allowed;  -- the lock is re-entrant
end;
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_claim_next_step(
  worker_id text,
  kinds text[] default null,
  max_steps integer default 1,
  lease_seconds integer default null)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  worker text := ops_internal.check_text(ops_claim_next_step.worker_id, 'worker_id', 200);
  asked text[] := ops_claim_next_step.kinds;
  wanted text[];
  batch integer := ops_claim_next_step.max_steps;
  lease integer := ops_claim_next_step.lease_seconds;
  bad_kind integer;
  enabled boolean;
  worker_policy jsonb;
  disabled text[];
  claimed jsonb;
  missions bigint[];
  taken integer;
  probe_kind text;
  probe public.ops_mission_steps;
  budgets jsonb;
  spending text[] := '{}'::text[];
  held text[] := '{}'::text[];
  limited text[];
  caps integer[];
  at timestamptz;
  got public.ops_mission_steps[];
begin
  if batch is null or batch not between 1 and 100 then
    perform ops_internal.invalid('max_steps must be from 1 to 100');
  end if;
  if lease is not null and lease not between 1 and 86400 then
    perform ops_internal.invalid('lease_seconds must be from 1 to 86400');
  end if;
  if asked is not null then
    if pg_catalog.cardinality(asked) > 200 then
      perform ops_internal.invalid('kinds must hold at most 200 kinds');
    end if;
    select u.n into bad_kind from pg_catalog.unnest(asked) with ordinality as u(k, n)
     where u.k is null or u.k !~ ops_internal.kind_pattern() order by u.n limit 1;
    if bad_kind is not null then
      perform ops_internal.invalid(pg_catalog.format('kinds[%s] must match %s', bad_kind - 1,
        ops_internal.kind_pattern()));
    end if;
  end if;

  -- Presence: a read first, so most claims write nothing for it.
  if not exists (select 1 from public.ops_workers w
                  where w.worker_id = worker and w.last_seen_at > pg_catalog.now() - interval '1 second'
                    and (asked is null or w.kinds = asked)) then
    perform ops_internal.touch_worker(worker, asked);
  end if;

  -- Everything the claim needs from the policy, in one read: the kill switch, leases, disabled kinds.
  select coalesce((pg_catalog.jsonb_object_agg(p.key, p.value) -> 'system' ->> 'enabled')::boolean, true),
         coalesce(pg_catalog.jsonb_object_agg(p.key, p.value) -> 'worker_policy', '{}'::jsonb),
         coalesce(pg_catalog.array_agg(pg_catalog.substr(p.key, 8))
                    filter (where p.key like 'worker:%' and (p.value ->> 'enabled')::boolean is false), '{}'),
         pg_catalog.jsonb_object_agg(p.key, p.value) -> 'budgets'
    into enabled, worker_policy, disabled, budgets
    from public.ops_policy p
   where p.key in ('system', 'worker_policy', 'budgets') or p.key like 'worker:%';
  if not enabled then
    return '[]'::jsonb;
  end if;

  -- An all-kinds claim first lists the queued kinds (a skip scan of the claim index).
  wanted := array(select distinct k from pg_catalog.unnest(coalesce(asked, ops_internal.queued_kinds())) as k
                   where k <> all (disabled));
  -- Budgets: the held agents, read under the shared 'spend' lock (reports that cross a budget take it
  -- exclusively, so this claim either sees the crossing or committed before it).
  if budgets is not null then
    spending := ops_internal.spending_kinds(budgets);
    if wanted && spending or exists (select 1 from public.ops_kind_breakers b
                                      where b.state <> 'closed' and b.kind = any (spending)) then
      perform pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtextextended('agent-ops:spend', 0));
      held := ops_internal.held_agents(budgets);
      if '*' = any (held) then
        wanted := array(select k from pg_catalog.unnest(wanted) as k where k <> all (spending));
      end if;
    end if;
  end if;
  -- Most deployments set no limits: skip the lookup when no kind has settings at all.
  limited := case when coalesce(worker_policy -> 'kinds', '{}'::jsonb) = '{}'::jsonb then '{}'::text[]
                  else ops_internal.limited_kinds(worker_policy, wanted) end;

  if pg_catalog.cardinality(limited) = 0 and pg_catalog.cardinality(held) = 0 then
    select coalesce(pg_catalog.jsonb_agg(ops_internal.claimed_step(c) order by c.priority desc, c.run_after, c.id),
                    '[]'::jsonb),
           coalesce(pg_catalog.array_agg(distinct c.mission_id), '{}'),
           pg_catalog.count(*)
      into claimed, missions, taken
      from ops_internal.claim_steps(worker, wanted, batch, lease, worker_policy) as c
     where pg_catalog.cardinality(wanted) > 0;
  else
    -- Locks in sorted order (limited is sorted), then the caps, then one claim time for every hand-out.
    caps := array(select case when k = any (limited) then 0 end from pg_catalog.unnest(wanted) as k);
    for i in 1 .. pg_catalog.cardinality(limited) loop
      caps[pg_catalog.array_position(wanted, limited[i])] :=
        (ops_internal.kind_allowance(limited[i], worker_policy)).allowed;
    end loop;
    at := pg_catalog.clock_timestamp();
    got := array(select c from ops_internal.claim_steps_within(worker, wanted, caps, batch, lease, worker_policy,
                                                               held, spending, at) as c);
    perform ops_internal.note_kind_claims(g.kind, pg_catalog.count(*)::integer, at)
       from pg_catalog.unnest(got) as g
      where worker_policy -> 'kinds' -> g.kind ? 'per_minute'
      group by g.kind;
    select coalesce(pg_catalog.jsonb_agg(ops_internal.claimed_step(g) order by g.priority desc, g.run_after, g.id),
                    '[]'::jsonb),
           coalesce(pg_catalog.array_agg(distinct g.mission_id), '{}'),
           pg_catalog.count(*)
      into claimed, missions, taken
      from pg_catalog.unnest(got) as g;
  end if;

  -- Half-open: one probe step per open breaker whose cool-down has passed and whose last probe is not running.
  -- The breaker row is locked (SKIP LOCKED), so two claimers never probe the same kind at once.
  if taken < batch and exists (select 1 from public.ops_kind_breakers b where b.state <> 'closed') then
    for probe_kind in
      select b.kind from public.ops_kind_breakers b
       where b.state <> 'closed' and b.reopen_at <= pg_catalog.now()
         and (asked is null or b.kind = any (asked))
         and not exists (select 1 from public.ops_mission_steps s
                          where s.id = b.probe_step_id and s.status = 'running')
       order by b.reopen_at
       for update of b skip locked
    loop
      exit when taken >= batch;
      continue when probe_kind = any (spending) and '*' = any (held);
      at := pg_catalog.clock_timestamp();
      select c.* into probe
        from ops_internal.claim_steps_within(worker, array[probe_kind],
               array[case when probe_kind = any (ops_internal.limited_kinds(worker_policy, array[probe_kind]))
                          then ops_internal.probe_allowance(probe_kind, worker_policy) end],
               1, lease, worker_policy, held, spending, at) as c;
      continue when probe.id is null;
      if worker_policy -> 'kinds' -> probe_kind ? 'per_minute' then
        perform ops_internal.note_kind_claims(probe_kind, 1, at);
      end if;
      update public.ops_kind_breakers b
         set state = 'half_open', probe_step_id = probe.id, updated_at = pg_catalog.now()
       where b.kind = probe_kind;
      claimed := claimed || pg_catalog.jsonb_build_array(ops_internal.claimed_step(probe));
      missions := missions || probe.mission_id;
      taken := taken + 1;
      probe := null;
    end loop;
  end if;

  if taken = 0 then
    return '[]'::jsonb;
  end if;
  -- First claim moves the mission to running. SKIP LOCKED: a mission locked by a finalizer or a canceller
  -- is left to it; the next step report promotes it instead (see ops_internal.lock_step).
  -- (Checked first: an UPDATE statement fires the status trigger even when it changes nothing.)
  if exists (select 1 from public.ops_missions m where m.id = any (missions) and m.status = 'approved') then
    update public.ops_missions m
       set status = 'running', started_at = pg_catalog.now()
     where m.id in (select m2.id from public.ops_missions m2
                     where m2.id = any (missions) and m2.status = 'approved'
                     for update skip locked);
  end if;
  return claimed;
end;
$$;

revoke execute on function public.ops_claim_next_step(text, text[], integer, integer) from public, anon, authenticated;
grant execute on function public.ops_claim_next_step(text, text[], integer, integer) to service_role;
