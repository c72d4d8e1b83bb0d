-- Reporting a step: complete, fail, extend the lease. Every call is fenced by the attempt it reports on:
-- only the running attempt may change the step. A caller whose attempt was recovered, retried or
-- cancelled gets PT409 and changes nothing. Repeating the same report for the same attempt succeeds again
-- (marked duplicate), so a worker may safely retry after losing a response.
--
-- Limits: output a JSON value of at most 1 MiB (PT400 above); error text is required and kept up to 8,000
-- characters (longer text is truncated, never refused, so a failure report cannot itself fail on length).

-- The step and attempt a report is about, checked before anything is looked up.
create or replace function ops_internal.check_step_attempt(step_id bigint, attempt integer)
returns void
language plpgsql
immutable
set search_path = ''
as $$
begin
  if step_id is null then
    perform ops_internal.invalid('step_id is required');
  end if;
  if attempt is null or attempt < 1 then
    perform ops_internal.invalid('attempt must be from 1 to 100');
  end if;
end;
$$;

-- Mission row first, then the step (see 20261125001700_ops_finalize_mission.sql for the lock order). The
-- first report on a claimed step also moves an approved mission to running if the claim could not.
create or replace function ops_internal.lock_step(step_id bigint, attempt integer)
returns public.ops_mission_steps
language plpgsql
set search_path = ''
as $$
#variable_conflict use_column
declare
  owner_mission bigint;
  mission_status text;
  step public.ops_mission_steps;
begin
  perform ops_internal.check_step_attempt(lock_step.step_id, lock_step.attempt);
  select s.mission_id into owner_mission from public.ops_mission_steps s where s.id = lock_step.step_id;
  if not found then
    perform ops_internal.not_found(pg_catalog.format('step %s not found', lock_step.step_id));
  end if;
  select m.status into mission_status from public.ops_missions m where m.id = owner_mission for update;
  if mission_status = 'approved' then
    -- A report means the step was claimed: the mission runs even if its claim skipped the mission row.
    update public.ops_missions m set status = 'running', started_at = coalesce(m.started_at, pg_catalog.now())
     where m.id = owner_mission;
  end if;
  select s.* into step from public.ops_mission_steps s where s.id = lock_step.step_id for update;
  return step;
end;
$$;

create or replace function ops_internal.stale_attempt(step public.ops_mission_steps, attempt integer)
returns void
language plpgsql
set search_path = ''
as $$
begin
  perform ops_internal.conflict(
    pg_catalog.format('step %s attempt %s is no longer running (status %s, attempt %s)', step.id, attempt,
      step.status, step.attempt),
    'discard this result: the step was recovered, retried or cancelled');
end;
$$;

-- Recovery and release move an approved mission to running if the claim could not.
create or replace function ops_internal.mark_mission_running(mission_id bigint)
returns void
language sql
set search_path = ''
as $$
  update public.ops_missions m
     set status = 'running', started_at = coalesce(m.started_at, pg_catalog.now())
   where m.id = mark_mission_running.mission_id and m.status = 'approved';
$$;

-- Pending steps whose dependencies have all succeeded become queued (and notify listening workers).
create or replace function ops_internal.promote_steps(mission_id bigint)
returns integer
language plpgsql
set search_path = ''
as $$
declare
  promoted integer;
begin
  -- Most completions have nothing to promote; an UPDATE would still fire the status trigger.
  if not exists (select 1 from public.ops_mission_steps s
                  where s.mission_id = promote_steps.mission_id and s.status = 'pending') then
    return 0;
  end if;
  update public.ops_mission_steps s
     set status = 'queued', run_after = pg_catalog.now()
   where s.mission_id = promote_steps.mission_id
     and s.status = 'pending'
     and not exists (
       select 1 from public.ops_mission_steps d
        where d.mission_id = s.mission_id and d.position = any (s.depends_on) and d.status <> 'succeeded');
  get diagnostics promoted = row_count;
  return promoted;
end;
$$;

-- Exponential backoff with up to 25 % jitter: base * 2^(attempt - 1), capped, per-kind overridable.
create or replace function ops_internal.retry_delay(kind text, attempt integer)
returns interval
language sql
volatile
set search_path = ''
as $$
  with p as (select ops_internal.policy('worker_policy') as policy)
  select pg_catalog.make_interval(secs => delay * (1 + pg_catalog.random() * 0.25))
    from (select least(
                   ops_internal.worker_setting(p.policy, kind, 'backoff_base_seconds')::double precision
                     * pg_catalog.power(2, least(attempt - 1, 30)),
                   ops_internal.worker_setting(p.policy, kind, 'backoff_max_seconds')::double precision) as delay
            from p) as d;
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_complete_step(step_id bigint, attempt integer, output jsonb default '{}'::jsonb)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
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
    return pg_catalog.jsonb_build_object('step_id', step.id, 'attempt', step.attempt, 'status', step.status,
      'mission_id', step.mission_id,
      'mission_status', (select m.status from public.ops_missions m where m.id = step.mission_id),
      'duplicate', true);
  end if;
  if step.status <> 'running' or step.attempt <> ops_complete_step.attempt then
    perform ops_internal.stale_attempt(step, ops_complete_step.attempt);
  end if;

  update public.ops_mission_steps s
     set status = 'succeeded', output = result_output, finished_at = pg_catalog.now(), lease_expires_at = null
   where s.id = step.id;
  perform ops_internal.promote_steps(step.mission_id);
  mission := ops_internal.finalize_mission(step.mission_id);
  return pg_catalog.jsonb_build_object('step_id', step.id, 'attempt', step.attempt, 'status', 'succeeded',
    'mission_id', step.mission_id, 'mission_status', mission.status, 'duplicate', false);
end;
$$;

revoke execute on function public.ops_complete_step(bigint, integer, jsonb) from public, anon, authenticated;
grant execute on function public.ops_complete_step(bigint, integer, jsonb) to service_role;

create or replace function public.ops_fail_step(step_id bigint, attempt integer, error text, retryable boolean default true)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
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
    return pg_catalog.jsonb_build_object('step_id', step.id, 'attempt', step.attempt, 'status', step.status,
      'retry_at', case when step.status = 'queued' then step.run_after end,
      'mission_id', step.mission_id,
      'mission_status', (select m.status from public.ops_missions m where m.id = step.mission_id),
      'duplicate', true);
  end if;
  if step.status <> 'running' or step.attempt <> ops_fail_step.attempt then
    perform ops_internal.stale_attempt(step, ops_fail_step.attempt);
  end if;

  if coalesce(ops_fail_step.retryable, true) and step.attempt < step.max_attempts then
    update public.ops_mission_steps s
       set status = 'queued', last_error = message,
           run_after = pg_catalog.now() + ops_internal.retry_delay(s.kind, s.attempt),
           reserved_by = null, reserved_at = null, heartbeat_at = null, lease_expires_at = null
     where s.id = step.id
    returning s.* into step;
    return pg_catalog.jsonb_build_object('step_id', step.id, 'attempt', step.attempt, 'status', 'queued',
      'retry_at', step.run_after, 'attempts_left', step.max_attempts - step.attempt,
      'mission_id', step.mission_id, 'mission_status', 'running', 'duplicate', false);
  end if;

  update public.ops_mission_steps s
     set status = 'failed', last_error = message, finished_at = pg_catalog.now(), lease_expires_at = null
   where s.id = step.id;
  mission := ops_internal.finalize_mission(step.mission_id);
  return pg_catalog.jsonb_build_object('step_id', step.id, 'attempt', step.attempt, 'status', 'failed',
    'mission_id', step.mission_id, 'mission_status', mission.status, 'duplicate', false);
end;
$$;

revoke execute on function public.ops_fail_step(bigint, integer, text, boolean) from public, anon, authenticated;
grant execute on function public.ops_fail_step(bigint, integer, text, boolean) to service_role;

create or replace function public.ops_extend_lease(step_id bigint, attempt integer, lease_seconds integer default null)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
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
     set heartbeat_at = pg_catalog.now(),
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
  return pg_catalog.jsonb_build_object('step_id', step.id, 'attempt', step.attempt,
    'lease_expires_at', step.lease_expires_at,
    'lease_seconds', extract(epoch from step.lease_expires_at - step.heartbeat_at));
end;
$$;

revoke execute on function public.ops_extend_lease(bigint, integer, integer) from public, anon, authenticated;
grant execute on function public.ops_extend_lease(bigint, integer, integer) to service_role;
