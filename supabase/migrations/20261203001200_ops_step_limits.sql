-- Run-time limits, worker presence and the breaker in the step lifecycle.
--
-- * Every claim records the attempt's deadline (deadline_at = claim time + worker_policy timeout_seconds for
--   the kind) and hands it to the worker with the step (`timeout_seconds`, `deadline`).
-- * Stale recovery fails a running attempt past its deadline ('timed out after N s', retryable, counted by
--   the breaker) whatever its lease says, so a wedged worker that keeps renewing cannot hold a step for ever.
-- * Downtime does not count against leases: when the database restarted while the loop was running (a
--   heartbeat ran before pg_postmaster_start_time), a lease last renewed before the restart gets one full
--   lease length from the restart before it is recovered, so the workers can report what they finished
--   while it was down. A fresh server or database has no such heartbeat and recovers as usual.
-- * Every claim refreshes the worker's presence (ops_workers), and hands out one probe step per kind whose
--   breaker is open and whose cool-down has passed.
-- * Completions and failures feed the breaker.

alter table public.ops_mission_steps add column deadline_at timestamptz;
comment on column public.ops_mission_steps.deadline_at is
  'When the running attempt must end: its claim time plus worker_policy timeout_seconds for the kind.';
create index ops_mission_steps_deadline_idx
  on public.ops_mission_steps (deadline_at) where status = 'running';

-- Mark up to `batch` queued steps of `kinds` running for `worker`: an ordered scan of the claim index per kind
-- (a LIMIT stops early however deep the queue is), skipping rows other claimers hold, then the best `batch`
-- by priority, run_after, id. The cost grows with batch x kinds, never with the size of the queue.
create or replace function ops_internal.claim_steps(
  worker text, kinds text[], batch integer, lease integer, worker_policy jsonb)
returns setof public.ops_mission_steps
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
  with picked as (
    select c.id
      from pg_catalog.unnest(kinds) as k(kind)
     cross join lateral (
       select s.id, s.priority, s.run_after from public.ops_mission_steps s
        where s.status = 'queued' and s.kind = k.kind and s.run_after <= pg_catalog.now()
        order by s.priority desc, s.run_after, s.id
        limit batch
        for update skip locked
     ) as c
     order by c.priority desc, c.run_after, c.id
     limit batch
  )
  update public.ops_mission_steps s
     set status = 'running', attempt = s.attempt + 1, reserved_by = worker, reserved_at = pg_catalog.now(),
         lease_renewed_at = pg_catalog.now(), started_at = coalesce(s.started_at, pg_catalog.now()),
         lease_expires_at = pg_catalog.now() + pg_catalog.make_interval(
           secs => coalesce(lease, ops_internal.worker_setting(worker_policy, s.kind, 'lease_seconds'))),
         deadline_at = pg_catalog.now() + pg_catalog.make_interval(
           secs => ops_internal.worker_setting(worker_policy, s.kind, 'timeout_seconds'))
    from picked
   where s.id = picked.id
  returning s.*;
$$;

select ops_internal.revoke_api_execute();

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
    'deadline', step.deadline_at,
    'timeout_seconds', extract(epoch from step.deadline_at - step.reserved_at)::integer,
    'inputs', (select coalesce(pg_catalog.jsonb_object_agg(d.position::text, d.output), '{}'::jsonb)
                 from public.ops_mission_steps d
                where d.mission_id = step.mission_id and d.position = any (step.depends_on)))
    || ops_internal.lease_fields(step);
$$;

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
                    filter (where p.key like 'worker:%' and (p.value ->> 'enabled')::boolean is false), '{}')
    into enabled, worker_policy, disabled
    from public.ops_policy p
   where p.key in ('system', 'worker_policy') or p.key like 'worker:%';
  if not enabled then
    return '[]'::jsonb;
  end if;

  -- An all-kinds claim first lists the queued kinds (a skip scan of the claim index).
  wanted := array(select distinct k from pg_catalog.unnest(coalesce(asked, ops_internal.queued_kinds())) as k
                   where k <> all (disabled));
  select coalesce(pg_catalog.jsonb_agg(ops_internal.claimed_step(c) order by c.priority desc, c.run_after, c.id),
                  '[]'::jsonb),
         coalesce(pg_catalog.array_agg(distinct c.mission_id), '{}'),
         pg_catalog.count(*)
    into claimed, missions, taken
    from ops_internal.claim_steps(worker, wanted, batch, lease, worker_policy) as c
   where pg_catalog.cardinality(wanted) > 0;

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
      select c.* into probe from ops_internal.claim_steps(worker, array[probe_kind], 1, lease, worker_policy) as c;
      continue when probe.id is null;
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
  perform ops_internal.breaker_success(step);
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
           reserved_by = null, reserved_at = null, lease_renewed_at = null, lease_expires_at = null,
           deadline_at = null
     where s.id = step.id
    returning s.* into step;
    perform ops_internal.breaker_failure(step, message);
    return ops_internal.step_report(step, false, 'running');
  end if;

  update public.ops_mission_steps s
     set status = 'failed', last_error = message, finished_at = pg_catalog.now(), lease_expires_at = null
   where s.id = step.id
  returning s.* into step;
  perform ops_internal.breaker_failure(step, message);
  mission := ops_internal.finalize_mission(step.mission_id);
  return ops_internal.step_report(step, false, mission.status);
end;
$$;

revoke execute on function public.ops_fail_step(bigint, integer, text, boolean) from public, anon, authenticated;
grant execute on function public.ops_fail_step(bigint, integer, text, boolean) to service_role;

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
         reserved_by = null, reserved_at = null, lease_renewed_at = null, lease_expires_at = null,
         deadline_at = null
   where s.id = step.id
  returning s.* into step;
  return ops_internal.step_report(step, false);
end;
$$;

revoke execute on function public.ops_release_step(bigint, integer, text) from public, anon, authenticated;
grant execute on function public.ops_release_step(bigint, integer, text) to service_role;

-- Stale recovery (pitfall P4): a running attempt whose lease expired (its worker crashed, restarted or lost its
-- network), or that ran past its deadline, is a failed attempt: back to the queue with backoff while attempts
-- remain, otherwise failed and its mission finalized. last_error says which: 'Stale: no progress for N
-- minutes' or 'timed out after N s'; a timeout also counts for the kind's circuit breaker. A lease that
-- held across a database restart gets one lease length from the restart first (downtime is not the
-- worker's fault). Capped batch; SKIP LOCKED, so recovery never waits on a worker or blocks one; the UPDATE
-- re-checks status and attempt, so a step that completed meanwhile is never overwritten. Each recovered step
-- gets a 'step:recovered' event. Afterwards, active missions whose steps are all finished are finalized.
create or replace function public.ops_recover_stale_steps()
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  batch integer := ops_internal.heartbeat_setting('recovery_batch');
  restarted timestamptz := pg_catalog.pg_postmaster_start_time();
  -- Whether the loop was running before this server started: only then was there downtime to forgive.
  ran_before boolean := exists (select 1 from public.ops_action_runs a
                                 where a.action = 'heartbeat' and a.started_at < restarted);
  candidate record;
  step public.ops_mission_steps;
  timed_out boolean;
  message text;
  requeued integer := 0;
  failed integer := 0;
  timeouts integer := 0;
  waiting integer := 0;
  finalized integer := 0;
  mission public.ops_missions;
begin
  for candidate in
    select c.id, c.mission_id from (
      (select s.id, s.mission_id, s.lease_expires_at as due from public.ops_mission_steps s
        where s.status = 'running' and s.lease_expires_at < pg_catalog.now()
        order by s.lease_expires_at limit batch)
      union
      (select s.id, s.mission_id, s.deadline_at as due from public.ops_mission_steps s
        where s.status = 'running' and s.deadline_at < pg_catalog.now()
        order by s.deadline_at limit batch)) as c
     order by c.due
     limit batch
  loop
    perform 1 from public.ops_missions m where m.id = candidate.mission_id for update skip locked;
    continue when not found;
    select s.* into step from public.ops_mission_steps s
     where s.id = candidate.id and s.status = 'running'
       and (s.lease_expires_at < pg_catalog.now() or s.deadline_at < pg_catalog.now())
       for update skip locked;
    continue when not found;

    timed_out := coalesce(step.deadline_at < pg_catalog.now(), false);
    if not timed_out and ran_before and step.lease_renewed_at < restarted
       and pg_catalog.now() <= restarted + (step.lease_expires_at - step.lease_renewed_at) then
      waiting := waiting + 1;  -- the database was down: the worker gets its lease length to come back
      continue;
    end if;
    message := case
      when timed_out then pg_catalog.format('timed out after %s s',
        pg_catalog.round(extract(epoch from step.deadline_at - step.reserved_at)))
      else pg_catalog.format('Stale: no progress for %s minutes',
        pg_catalog.floor(extract(epoch from pg_catalog.now() - coalesce(step.lease_renewed_at, step.reserved_at)) / 60))
    end;
    perform ops_internal.mark_mission_running(step.mission_id);
    if step.attempt < step.max_attempts then
      update public.ops_mission_steps s
         set status = 'queued', last_error = message,
             run_after = pg_catalog.now() + ops_internal.retry_delay(s.kind, s.attempt),
             reserved_by = null, reserved_at = null, lease_renewed_at = null, lease_expires_at = null,
             deadline_at = null
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
    if timed_out then
      timeouts := timeouts + 1;
      perform ops_internal.breaker_failure(step, message);
    end if;
    perform ops_internal.emit_event(
      'step:recovered',
      (select m.agent_id from public.ops_missions m where m.id = step.mission_id),
      pg_catalog.format('Step #%s (%s) recovered: %s', step.id, step.kind, message),
      pg_catalog.jsonb_build_object('step_id', step.id, 'mission_id', step.mission_id, 'kind', step.kind,
        'attempt', step.attempt, 'worker_id', step.reserved_by, 'reason', case when timed_out then 'timeout' else 'stale' end,
        'error', message, 'outcome', case when step.attempt < step.max_attempts then 'requeued' else 'failed' end),
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
    'timed_out', timeouts, 'waiting_after_restart', waiting, 'missions_finalized', finalized);
end;
$$;

revoke execute on function public.ops_recover_stale_steps() from public, anon, authenticated;
grant execute on function public.ops_recover_stale_steps() to service_role;
