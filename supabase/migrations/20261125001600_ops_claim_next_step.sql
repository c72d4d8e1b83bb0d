-- Claiming (invariant 2): one statement, a CTE picking queued steps FOR UPDATE SKIP LOCKED and an UPDATE
-- that marks them running with attempt + 1 and a lease. Concurrent claimers skip each other's rows, so a
-- step is handed to exactly one worker per attempt. Each RPC is its own transaction, so nothing holds the
-- row while the worker runs: the lease (lease_expires_at) and the attempt number fence everything after.
--
-- Honours: the kill switch (system.enabled), per-kind disable flags (policy worker:<kind>), the caller's
-- kinds, run_after (retry backoff) and priority (higher first). Limits: max_steps 1-100, lease_seconds
-- 1-86,400 (default worker_policy.lease_seconds, per-kind overridable), worker_id 1-200 characters.

create or replace function ops_internal.claimed_step(step public.ops_mission_steps)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select pg_catalog.jsonb_build_object(
    'id', step.id,
    'mission_id', step.mission_id,
    'agent_id', (select m.agent_id from public.ops_missions m where m.id = step.mission_id),
    'kind', step.kind,
    'position', step.position,
    'payload', step.payload,
    'attempt', step.attempt,
    'max_attempts', step.max_attempts,
    'priority', step.priority,
    'reserved_at', step.reserved_at,
    'lease_expires_at', step.lease_expires_at,
    'lease_seconds', extract(epoch from step.lease_expires_at - step.heartbeat_at),
    'inputs', (select coalesce(pg_catalog.jsonb_object_agg(d.position::text, d.output), '{}'::jsonb)
                 from public.ops_mission_steps d
                where d.mission_id = step.mission_id and d.position = any (step.depends_on)));
$$;

-- The kinds that have queued steps: a skip scan down the claim index, one probe per distinct kind.
create or replace function ops_internal.queued_kinds()
returns text[]
language sql
stable
set search_path = ''
as $$
  with recursive kinds(kind) as (
    (select s.kind from public.ops_mission_steps s where s.status = 'queued' order by s.kind limit 1)
    union all
    select (select s.kind from public.ops_mission_steps s
             where s.status = 'queued' and s.kind > kinds.kind order by s.kind limit 1)
      from kinds
     where kinds.kind is not null
  )
  select coalesce(pg_catalog.array_agg(kind), '{}') from kinds where kind is not null;
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
set search_path = ''
as $$
declare
  worker text := ops_internal.check_text(ops_claim_next_step.worker_id, 'worker_id', 200);
  wanted text[] := ops_claim_next_step.kinds;
  batch integer := ops_claim_next_step.max_steps;
  lease integer := ops_claim_next_step.lease_seconds;
  bad_kind integer;
  enabled boolean;
  worker_policy jsonb;
  disabled text[];
  claimed jsonb;
  missions bigint[];
begin
  if batch is null or batch not between 1 and 100 then
    perform ops_internal.invalid('max_steps must be from 1 to 100');
  end if;
  if lease is not null and lease not between 1 and 86400 then
    perform ops_internal.invalid('lease_seconds must be from 1 to 86400');
  end if;
  if wanted is not null then
    if pg_catalog.cardinality(wanted) > 200 then
      perform ops_internal.invalid('kinds must hold at most 200 kinds');
    end if;
    select u.n into bad_kind from pg_catalog.unnest(wanted) with ordinality as u(k, n)
     where u.k is null or u.k !~ '^[a-z][a-z0-9_]{0,63}$' order by u.n limit 1;
    if bad_kind is not null then
      perform ops_internal.invalid(pg_catalog.format('kinds[%s] must match ^[a-z][a-z0-9_]{0,63}$', bad_kind - 1));
    end if;
  end if;

  -- Everything the claim needs from the policy, in one read: the kill switch, leases, disabled kinds.
  select coalesce((pg_catalog.jsonb_object_agg(p.key, p.value) -> 'system' ->> 'enabled')::boolean, true),
         coalesce(pg_catalog.jsonb_object_agg(p.key, p.value) -> 'worker_policy', '{}'::jsonb),
         coalesce(pg_catalog.array_agg(pg_catalog.substr(p.key, 8))
                    filter (where p.key like 'worker:%' and (p.value ->> 'enabled')::boolean is false), '{}')
    into enabled, worker_policy, disabled
    from public.ops_policy p
   where p.key in ('system', 'worker_policy') or p.key like 'worker:%';
  if not enabled then
    return '[]'::jsonb;
  end if;

  -- One path for every claim: an ordered scan of the claim index per wanted kind (kind = k.kind gives the
  -- index order, so a LIMIT stops early however deep the queue is), skipping rows other claimers hold, then
  -- the best `batch` of those by priority, run_after, id. The cost grows with batch x kinds, never with
  -- the number of queued or finished steps. An all-kinds claim first lists the queued kinds.
  wanted := array(select distinct k from pg_catalog.unnest(coalesce(wanted, ops_internal.queued_kinds())) as k
                   where k <> all (disabled));
  if pg_catalog.cardinality(wanted) = 0 then
    return '[]'::jsonb;
  end if;
  with picked as (
    select c.id
      from pg_catalog.unnest(wanted) as k(kind)
     cross join lateral (
       select s.id, s.priority, s.run_after from public.ops_mission_steps s
        where s.status = 'queued' and s.kind = k.kind and s.run_after <= pg_catalog.now()
        order by s.priority desc, s.run_after, s.id
        limit batch
        for update skip locked
     ) as c
     order by c.priority desc, c.run_after, c.id
     limit batch
  ), claimed_rows as (
    update public.ops_mission_steps s
       set status = 'running', attempt = s.attempt + 1, reserved_by = worker, reserved_at = pg_catalog.now(),
           heartbeat_at = pg_catalog.now(), started_at = coalesce(s.started_at, pg_catalog.now()),
           lease_expires_at = pg_catalog.now() + pg_catalog.make_interval(
             secs => coalesce(lease, ops_internal.worker_setting(worker_policy, s.kind, 'lease_seconds')))
      from picked
     where s.id = picked.id
    returning s.*
  )
  select pg_catalog.jsonb_agg(ops_internal.claimed_step(c) order by c.priority desc, c.run_after, c.id),
         pg_catalog.array_agg(distinct c.mission_id)
    into claimed, missions
    from claimed_rows c;

  if claimed is null then
    return '[]'::jsonb;
  end if;
  -- First claim moves the mission to running. SKIP LOCKED: a mission locked by a finalizer or a canceller
  -- is left to it; the next step report promotes it instead (see ops_internal.lock_mission).
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
