-- The step path's remaining SQL helpers become plpgsql (as 20261203007400 did for intake's).
--
-- A SQL function with a SET clause is never inlined, and Postgres 15 parses and plans its body again each
-- time a statement that calls it starts. claimed_step (and lease_fields inside it) builds every claimed
-- step's JSON, step_report and report_error every report's answer, add_usage every report's usage: on a
-- one-step report-and-claim their planning was ~0.6 ms of ~4.6 ms (track_functions: claimed_step 0.30 ms,
-- step_report 0.16, add_usage 0.09, lease_fields 0.05). plpgsql keeps their plans for the session. Same
-- names, arguments, results, volatility, grants and search_path; the same expressions.

create or replace function ops_internal.lease_fields(step public.ops_mission_steps)
returns jsonb
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  return pg_catalog.jsonb_build_object(
      'lease_expires_at', step.lease_expires_at,
      'lease_seconds', extract(epoch from step.lease_expires_at - step.lease_renewed_at));
end;
$$;

create or replace function ops_internal.claimed_step(step public.ops_mission_steps)
returns jsonb
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return pg_catalog.jsonb_build_object(
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
end;
$$;

create or replace function ops_internal.step_report(
  step public.ops_mission_steps, duplicate boolean, mission_status text default null)
returns jsonb
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return pg_catalog.jsonb_build_object(
      'step_id', step.id,
      'attempt', step.attempt,
      'status', step.status,
      'mission_id', step.mission_id,
      'mission_status', coalesce(step_report.mission_status,
                                 (select m.status from public.ops_missions m where m.id = step.mission_id)),
      'retry_at', case when step.status = 'queued' then step.run_after end,
      'attempts_left', case when step.status = 'queued' then step.max_attempts - step.attempt end,
      'duplicate', duplicate);
end;
$$;

create or replace function ops_internal.report_error(step_id bigint, attempt integer, code text, message text)
returns jsonb
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  return pg_catalog.jsonb_build_object('step_id', step_id, 'attempt', attempt,
      'error', pg_catalog.jsonb_build_object('code', code, 'message', message));
end;
$$;

create or replace function ops_internal.add_usage(total jsonb, usage jsonb)
returns jsonb
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  return case when total is null then usage when usage is null then total else
      pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'tokens_in', (total ->> 'tokens_in')::bigint + (usage ->> 'tokens_in')::bigint,
        'tokens_out', (total ->> 'tokens_out')::bigint + (usage ->> 'tokens_out')::bigint,
        'cost_usd', (total ->> 'cost_usd')::numeric + (usage ->> 'cost_usd')::numeric,
        'model', coalesce(usage ->> 'model', total ->> 'model'))) end;
end;
$$;
