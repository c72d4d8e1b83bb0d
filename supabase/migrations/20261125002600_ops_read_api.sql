-- Read API for status views (CLI, console, scripts): the same SQL whichever transport calls it.
-- STABLE (PostgREST may serve them with GET, read-only) and, like every RPC, SECURITY DEFINER with EXECUTE
-- for service_role only. Each list is newest first and capped (max_rows 1-1,000); every count is bounded by
-- an index on active rows or on time, never by the size of the history.

create or replace function ops_internal.check_max_rows(max_rows integer)
returns integer
language plpgsql
immutable
set search_path = ''
as $$
begin
  if max_rows is null or max_rows not between 1 and 1000 then
    perform ops_internal.invalid('max_rows must be from 1 to 1000');
  end if;
  return max_rows;
end;
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_list_proposals(
  status text default null, agent_id text default null, max_rows integer default 50)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
           'id', p.id, 'agent_id', p.agent_id, 'title', p.title, 'description', p.description,
           'status', p.status, 'source', p.source, 'steps', p.proposed_steps, 'dedupe_key', p.dedupe_key,
           'reason', case p.status
                       when 'rejected' then p.rejection_reason
                       when 'pending' then ops_internal.needs_human(
                         array(select s ->> 'kind' from pg_catalog.jsonb_array_elements(p.proposed_steps) s), p.source)
                     end,
           'auto_approved', p.auto_approved, 'decided_by', p.decided_by, 'decided_at', p.decided_at,
           'mission_id', (select m.id from public.ops_missions m where m.proposal_id = p.id),
           'metadata', p.metadata, 'created_at', p.created_at) order by p.id desc), '[]'::jsonb)
    from (select x.* from public.ops_mission_proposals x
           where (ops_list_proposals.status is null or x.status = ops_list_proposals.status)
             and (ops_list_proposals.agent_id is null or x.agent_id = ops_list_proposals.agent_id)
           order by x.id desc
           limit ops_internal.check_max_rows(ops_list_proposals.max_rows)) as p;
$$;

revoke execute on function public.ops_list_proposals(text, text, integer) from public, anon, authenticated;
grant execute on function public.ops_list_proposals(text, text, integer) to service_role;

-- One step as the read API shows it (in a mission and in the step list).
create or replace function ops_internal.step_json(step public.ops_mission_steps)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select pg_catalog.jsonb_build_object(
    'id', step.id, 'mission_id', step.mission_id, 'position', step.position, 'kind', step.kind,
    'status', step.status, 'payload', step.payload, 'output', step.output, 'last_error', step.last_error,
    'depends_on', step.depends_on, 'attempt', step.attempt, 'max_attempts', step.max_attempts,
    'priority', step.priority, 'run_after', step.run_after, 'reserved_by', step.reserved_by,
    'lease_expires_at', step.lease_expires_at, 'started_at', step.started_at, 'finished_at', step.finished_at,
    'created_at', step.created_at);
$$;

create or replace function ops_internal.mission_json(mission public.ops_missions)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select pg_catalog.jsonb_build_object(
    'id', mission.id, 'proposal_id', mission.proposal_id, 'agent_id', mission.agent_id, 'title', mission.title,
    'status', mission.status, 'reason', mission.failure_reason, 'created_at', mission.created_at,
    'started_at', mission.started_at, 'finalized_at', mission.finalized_at,
    'steps', coalesce((select pg_catalog.jsonb_agg(ops_internal.step_json(s) order by s.position)
                         from public.ops_mission_steps s where s.mission_id = mission.id), '[]'::jsonb));
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_list_missions(
  status text default null, agent_id text default null, max_rows integer default 50)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(pg_catalog.jsonb_agg(ops_internal.mission_json(m) order by m.id desc), '[]'::jsonb)
    from (select x.* from public.ops_missions x
           where (ops_list_missions.status is null or x.status = ops_list_missions.status)
             and (ops_list_missions.agent_id is null or x.agent_id = ops_list_missions.agent_id)
           order by x.id desc
           limit ops_internal.check_max_rows(ops_list_missions.max_rows)) as m;
$$;

revoke execute on function public.ops_list_missions(text, text, integer) from public, anon, authenticated;
grant execute on function public.ops_list_missions(text, text, integer) to service_role;

create or replace function public.ops_get_mission(mission_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  mission public.ops_missions;
begin
  select m.* into mission from public.ops_missions m where m.id = ops_get_mission.mission_id;
  if not found then
    perform ops_internal.not_found(pg_catalog.format('mission %s not found', ops_get_mission.mission_id));
  end if;
  return ops_internal.mission_json(mission);
end;
$$;

revoke execute on function public.ops_get_mission(bigint) from public, anon, authenticated;
grant execute on function public.ops_get_mission(bigint) to service_role;

create or replace function public.ops_list_steps(
  status text default null, kind text default null, mission_id bigint default null, max_rows integer default 100)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(pg_catalog.jsonb_agg(ops_internal.step_json(s) order by s.id desc), '[]'::jsonb)
    from (select x.* from public.ops_mission_steps x
           where (ops_list_steps.status is null or x.status = ops_list_steps.status)
             and (ops_list_steps.kind is null or x.kind = ops_list_steps.kind)
             and (ops_list_steps.mission_id is null or x.mission_id = ops_list_steps.mission_id)
           order by x.id desc
           limit ops_internal.check_max_rows(ops_list_steps.max_rows)) as s;
$$;

revoke execute on function public.ops_list_steps(text, text, bigint, integer) from public, anon, authenticated;
grant execute on function public.ops_list_steps(text, text, bigint, integer) to service_role;

-- Newest first; with after_id, the events after it in order (what `events --follow` polls with).
create or replace function public.ops_list_events(
  type text default null, tag text default null, agent_id text default null, mission_id bigint default null,
  after_id bigint default null, max_rows integer default 100)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
           'id', e.id, 'type', e.type, 'agent_id', e.agent_id, 'source', e.source, 'tags', e.tags, 'title', e.title,
           'summary', e.summary, 'payload', e.payload, 'proposal_id', e.proposal_id, 'mission_id', e.mission_id,
           'step_id', e.step_id, 'created_at', e.created_at)
           order by case when ops_list_events.after_id is null then -e.id else e.id end), '[]'::jsonb)
    from (select x.* from public.ops_agent_events x
           where (ops_list_events.type is null or x.type = ops_list_events.type)
             and (ops_list_events.tag is null or x.tags @> array[ops_list_events.tag])
             and (ops_list_events.agent_id is null or x.agent_id = ops_list_events.agent_id)
             and (ops_list_events.mission_id is null or x.mission_id = ops_list_events.mission_id)
             and (ops_list_events.after_id is null or x.id > ops_list_events.after_id)
           order by case when ops_list_events.after_id is null then -x.id else x.id end
           limit ops_internal.check_max_rows(ops_list_events.max_rows)) as e;
$$;

revoke execute on function public.ops_list_events(text, text, text, bigint, bigint, integer) from public, anon, authenticated;
grant execute on function public.ops_list_events(text, text, text, bigint, bigint, integer) to service_role;

-- One screen of health: what is active now, what happened today, the last heartbeat, queue depth by kind,
-- running steps per worker, open circuit breakers.
create or replace function public.ops_status()
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select pg_catalog.jsonb_build_object(
    'system_enabled', ops_internal.system_enabled(),
    'proposals', pg_catalog.jsonb_build_object(
      'pending', (select pg_catalog.count(*) from public.ops_mission_proposals p where p.status = 'pending'),
      'today', coalesce((select pg_catalog.jsonb_object_agg(t.status, t.n) from (
         select p.status, pg_catalog.count(*) as n from public.ops_mission_proposals p
          where p.created_at >= ops_internal.utc_day_start() group by p.status) t), '{}'::jsonb)),
    'missions', pg_catalog.jsonb_build_object(
      'active', coalesce((select pg_catalog.jsonb_object_agg(t.status, t.n) from (
         select m.status, pg_catalog.count(*) as n from public.ops_missions m
          where m.status in ('approved', 'running') group by m.status) t), '{}'::jsonb),
      'finished_24h', coalesce((select pg_catalog.jsonb_object_agg(t.status, t.n) from (
         select m.status, pg_catalog.count(*) as n from public.ops_missions m
          where m.finalized_at >= pg_catalog.now() - interval '24 hours' group by m.status) t), '{}'::jsonb)),
    'queue', coalesce((select pg_catalog.jsonb_object_agg(t.kind, t.n) from (
       select s.kind, pg_catalog.count(*) as n from public.ops_mission_steps s where s.status = 'queued' group by s.kind) t),
       '{}'::jsonb),
    'running', coalesce((select pg_catalog.jsonb_object_agg(t.reserved_by, t.n) from (
       select s.reserved_by, pg_catalog.count(*) as n from public.ops_mission_steps s where s.status = 'running'
        group by s.reserved_by) t), '{}'::jsonb),
    'reactions_queued', (select pg_catalog.count(*) from public.ops_agent_reactions r where r.status = 'queued'),
    'circuit_breakers', coalesce((select pg_catalog.jsonb_object_agg(pg_catalog.substr(p.key, 8), p.value)
       from public.ops_policy p where p.key like 'worker:%' and (p.value ->> 'enabled')::boolean is false), '{}'::jsonb),
    'last_heartbeat', (select pg_catalog.jsonb_build_object('id', a.id, 'status', a.status, 'started_at', a.started_at,
       'duration_ms', a.duration_ms, 'error', a.error, 'result', a.result)
       from public.ops_action_runs a where a.action = 'heartbeat' order by a.started_at desc limit 1),
    'recent_missions', (select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('id', m.id, 'agent_id', m.agent_id,
       'title', m.title, 'status', m.status, 'created_at', m.created_at, 'finalized_at', m.finalized_at) order by m.id desc), '[]'::jsonb)
       from (select x.* from public.ops_missions x order by x.id desc limit 10) m));
$$;

revoke execute on function public.ops_status() from public, anon, authenticated;
grant execute on function public.ops_status() to service_role;
