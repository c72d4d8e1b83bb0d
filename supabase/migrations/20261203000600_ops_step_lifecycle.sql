-- The step lifecycle in the shared vocabulary: one report shape, and the lease column named for what it
-- holds.
--
-- ops_mission_steps.heartbeat_at held the time the running attempt's lease was last renewed (by the claim or
-- ops_extend_lease), unrelated to ops_heartbeat(): it is now lease_renewed_at. Every function that wrote
-- or read it is redefined below.
--
-- Every report on a step (complete, fail, release) answers with ops_internal.step_report(), one shape
-- whatever happened: {step_id, attempt, status, mission_id, mission_status, retry_at, attempts_left,
-- duplicate}; retry_at and attempts_left are set while the step waits in the queue, null otherwise.

alter table public.ops_mission_steps rename column heartbeat_at to lease_renewed_at;

create or replace function ops_internal.step_report(
  step public.ops_mission_steps, duplicate boolean, mission_status text default null)
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'step_id', step.id,
    'attempt', step.attempt,
    'status', step.status,
    'mission_id', step.mission_id,
    'mission_status', coalesce(step_report.mission_status,
                               (select m.status from public.ops_missions m where m.id = step.mission_id)),
    'retry_at', case when step.status = 'queued' then step.run_after end,
    'attempts_left', case when step.status = 'queued' then step.max_attempts - step.attempt end,
    'duplicate', duplicate);
$$;

-- The fields a step's lease is made of, as claims and lease extensions report them.
create or replace function ops_internal.lease_fields(step public.ops_mission_steps)
returns jsonb
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'lease_expires_at', step.lease_expires_at,
    'lease_seconds', extract(epoch from step.lease_expires_at - step.lease_renewed_at));
$$;

create or replace function ops_internal.claimed_step(step public.ops_mission_steps)
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
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
    'inputs', (select coalesce(pg_catalog.jsonb_object_agg(d.position::text, d.output), '{}'::jsonb)
                 from public.ops_mission_steps d
                where d.mission_id = step.mission_id and d.position = any (step.depends_on)))
    || ops_internal.lease_fields(step);
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
     where u.k is null or u.k !~ ops_internal.kind_pattern() order by u.n limit 1;
    if bad_kind is not null then
      perform ops_internal.invalid(pg_catalog.format('kinds[%s] must match %s', bad_kind - 1,
        ops_internal.kind_pattern()));
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
           lease_renewed_at = pg_catalog.now(), started_at = coalesce(s.started_at, pg_catalog.now()),
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

create or replace function public.ops_complete_step(step_id bigint, attempt integer, output jsonb default '{}'::jsonb)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  result_output jsonb := coalesce(ops_complete_step.output, '{}'::jsonb);
  step public.ops_mission_steps;
  mission public.ops_missions;
begin
  if pg_catalog.octet_length(result_output::text) > 1048576 then
    perform ops_internal.invalid('output must be at most 1048576 bytes of JSON');
  end if;
  step := ops_internal.lock_step(ops_complete_step.step_id, ops_complete_step.attempt);

  if step.status = 'succeeded' and step.attempt = ops_complete_step.attempt then
    if step.output is distinct from result_output then
      perform ops_internal.conflict(
        pg_catalog.format('step %s attempt %s already succeeded with a different output', step.id, step.attempt));
    end if;
    return ops_internal.step_report(step, true);
  end if;
  if step.status <> 'running' or step.attempt <> ops_complete_step.attempt then
    perform ops_internal.stale_attempt(step, ops_complete_step.attempt);
  end if;

  update public.ops_mission_steps s
     set status = 'succeeded', output = result_output, finished_at = pg_catalog.now(), lease_expires_at = null
   where s.id = step.id
  returning s.* into step;
  perform ops_internal.promote_steps(step.mission_id);
  mission := ops_internal.finalize_mission(step.mission_id);
  return ops_internal.step_report(step, false, mission.status);
end;
$$;

revoke execute on function public.ops_complete_step(bigint, integer, jsonb) from public, anon, authenticated;
grant execute on function public.ops_complete_step(bigint, integer, jsonb) to service_role;

create or replace function public.ops_fail_step(step_id bigint, attempt integer, error text, retryable boolean default true)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  message text := pg_catalog.left(ops_internal.check_text(ops_fail_step.error, 'error', null), 8000);
  step public.ops_mission_steps;
  mission public.ops_missions;
begin
  step := ops_internal.lock_step(ops_fail_step.step_id, ops_fail_step.attempt);

  if step.attempt = ops_fail_step.attempt and step.last_error = message
     and (step.status = 'failed' or (step.status = 'queued' and step.reserved_by is null)) then
    return ops_internal.step_report(step, true);
  end if;
  if step.status <> 'running' or step.attempt <> ops_fail_step.attempt then
    perform ops_internal.stale_attempt(step, ops_fail_step.attempt);
  end if;

  if coalesce(ops_fail_step.retryable, true) and step.attempt < step.max_attempts then
    update public.ops_mission_steps s
       set status = 'queued', last_error = message,
           run_after = pg_catalog.now() + ops_internal.retry_delay(s.kind, s.attempt),
           reserved_by = null, reserved_at = null, lease_renewed_at = null, lease_expires_at = null
     where s.id = step.id
    returning s.* into step;
    return ops_internal.step_report(step, false, 'running');
  end if;

  update public.ops_mission_steps s
     set status = 'failed', last_error = message, finished_at = pg_catalog.now(), lease_expires_at = null
   where s.id = step.id
  returning s.* into step;
  mission := ops_internal.finalize_mission(step.mission_id);
  return ops_internal.step_report(step, false, mission.status);
end;
$$;

revoke execute on function public.ops_fail_step(bigint, integer, text, boolean) from public, anon, authenticated;
grant execute on function public.ops_fail_step(bigint, integer, text, boolean) to service_role;

create or replace function public.ops_extend_lease(step_id bigint, attempt integer, lease_seconds integer default null)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  step public.ops_mission_steps;
begin
  perform ops_internal.check_step_attempt(ops_extend_lease.step_id, ops_extend_lease.attempt);
  if ops_extend_lease.lease_seconds is not null and ops_extend_lease.lease_seconds not between 1 and 86400 then
    perform ops_internal.invalid('lease_seconds must be from 1 to 86400');
  end if;
  update public.ops_mission_steps s
     set lease_renewed_at = pg_catalog.now(),
         lease_expires_at = pg_catalog.now() + pg_catalog.make_interval(secs => coalesce(ops_extend_lease.lease_seconds,
           ops_internal.worker_setting(ops_internal.policy('worker_policy'), s.kind, 'lease_seconds')))
   where s.id = ops_extend_lease.step_id and s.status = 'running' and s.attempt = ops_extend_lease.attempt
  returning s.* into step;
  if not found then
    select s.* into step from public.ops_mission_steps s where s.id = ops_extend_lease.step_id;
    if not found then
      perform ops_internal.not_found(pg_catalog.format('step %s not found', ops_extend_lease.step_id));
    end if;
    perform ops_internal.conflict(
      pg_catalog.format('lease lost: step %s attempt %s is no longer running (status %s, attempt %s)', step.id,
        ops_extend_lease.attempt, step.status, step.attempt),
      'stop working on this step and discard its result');
  end if;
  return pg_catalog.jsonb_build_object('step_id', step.id, 'attempt', step.attempt)
    || ops_internal.lease_fields(step);
end;
$$;

revoke execute on function public.ops_extend_lease(bigint, integer, integer) from public, anon, authenticated;
grant execute on function public.ops_extend_lease(bigint, integer, integer) to service_role;

create or replace function public.ops_release_step(step_id bigint, attempt integer, reason text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  why text := pg_catalog.left(ops_internal.check_text(ops_release_step.reason, 'reason', null), 1000);
  step public.ops_mission_steps;
begin
  step := ops_internal.lock_step(ops_release_step.step_id, ops_release_step.attempt);
  if step.status = 'queued' and step.attempt = ops_release_step.attempt and step.reserved_by is null
     and step.last_error = why then
    return ops_internal.step_report(step, true);
  end if;
  if step.status <> 'running' or step.attempt <> ops_release_step.attempt then
    perform ops_internal.stale_attempt(step, ops_release_step.attempt);
  end if;
  if step.max_attempts >= 100 then
    perform ops_internal.conflict(pg_catalog.format('step %s cannot be released: it has used 100 attempts', step.id));
  end if;
  update public.ops_mission_steps s
     set status = 'queued', last_error = why, run_after = pg_catalog.now(), max_attempts = s.max_attempts + 1,
         reserved_by = null, reserved_at = null, lease_renewed_at = null, lease_expires_at = null
   where s.id = step.id
  returning s.* into step;
  return ops_internal.step_report(step, false);
end;
$$;

revoke execute on function public.ops_release_step(bigint, integer, text) from public, anon, authenticated;
grant execute on function public.ops_release_step(bigint, integer, text) to service_role;

create or replace function public.ops_recover_stale_steps()
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  batch integer := ops_internal.heartbeat_setting('recovery_batch');
  candidate record;
  step public.ops_mission_steps;
  stale_minutes integer;
  message text;
  requeued integer := 0;
  failed integer := 0;
  finalized integer := 0;
  mission public.ops_missions;
begin
  for candidate in
    select s.id, s.mission_id from public.ops_mission_steps s
     where s.status = 'running' and s.lease_expires_at < pg_catalog.now()
     order by s.lease_expires_at
     limit batch
  loop
    perform 1 from public.ops_missions m where m.id = candidate.mission_id for update skip locked;
    continue when not found;
    select s.* into step from public.ops_mission_steps s
     where s.id = candidate.id and s.status = 'running' and s.lease_expires_at < pg_catalog.now()
       for update skip locked;
    continue when not found;

    stale_minutes := pg_catalog.floor(extract(epoch from pg_catalog.now() - coalesce(step.lease_renewed_at, step.reserved_at)) / 60);
    message := pg_catalog.format('Stale: no progress for %s minutes', stale_minutes);
    perform ops_internal.mark_mission_running(step.mission_id);
    if step.attempt < step.max_attempts then
      update public.ops_mission_steps s
         set status = 'queued', last_error = message,
             run_after = pg_catalog.now() + ops_internal.retry_delay(s.kind, s.attempt),
             reserved_by = null, reserved_at = null, lease_renewed_at = null, lease_expires_at = null
       where s.id = step.id and s.status = 'running' and s.attempt = step.attempt;
      requeued := requeued + 1;
    else
      update public.ops_mission_steps s
         set status = 'failed', last_error = message, finished_at = pg_catalog.now(), lease_expires_at = null
       where s.id = step.id and s.status = 'running' and s.attempt = step.attempt;
      if (ops_internal.finalize_mission(step.mission_id)).status = 'failed' then
        finalized := finalized + 1;
      end if;
      failed := failed + 1;
    end if;
    perform ops_internal.emit_event(
      'step:recovered',
      (select m.agent_id from public.ops_missions m where m.id = step.mission_id),
      pg_catalog.format('Step #%s (%s) recovered: %s', step.id, step.kind, message),
      pg_catalog.jsonb_build_object('step_id', step.id, 'mission_id', step.mission_id, 'kind', step.kind,
        'attempt', step.attempt, 'worker_id', step.reserved_by, 'stale_minutes', stale_minutes,
        'outcome', case when step.attempt < step.max_attempts then 'requeued' else 'failed' end),
      array[step.kind, 'recovery', 'warning'],
      mission_id => step.mission_id,
      step_id => step.id);
  end loop;

  for candidate in
    select m.id from public.ops_missions m
     where m.status in ('approved', 'running')
       and not exists (select 1 from public.ops_mission_steps s
                        where s.mission_id = m.id and s.status in ('pending', 'queued', 'running'))
     limit batch
  loop
    perform 1 from public.ops_missions m where m.id = candidate.id for update skip locked;
    continue when not found;
    mission := ops_internal.finalize_mission(candidate.id);
    if mission.status in ('succeeded', 'failed') then
      finalized := finalized + 1;
    end if;
  end loop;

  return pg_catalog.jsonb_build_object('recovered', requeued + failed, 'requeued', requeued, 'failed', failed,
    'missions_finalized', finalized);
end;
$$;

revoke execute on function public.ops_recover_stale_steps() from public, anon, authenticated;
grant execute on function public.ops_recover_stale_steps() to service_role;
