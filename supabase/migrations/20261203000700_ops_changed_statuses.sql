-- The status-event triggers share one rule for which rows changed status and what it was before.
--
-- Each table keeps its own trigger function (plpgsql_check verifies each against its table's columns), and
-- each wrote the same block to find the rows whose status changed. That rule is now
-- ops_internal.changed_statuses(); the transition tables it reads stay in the trigger functions, because
-- only the trigger's own statements can see them. The events are unchanged.

-- {id: old status} for the ids whose status differs between the two {id: status} maps.
create or replace function ops_internal.changed_statuses(old_statuses jsonb, new_statuses jsonb)
returns jsonb
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(pg_catalog.jsonb_object_agg(o.key, o.value), '{}'::jsonb)
    from pg_catalog.jsonb_each(coalesce(old_statuses, '{}'::jsonb)) as o
   where new_statuses -> o.key is distinct from o.value;
$$;

create or replace function ops_internal.proposal_events()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  previous jsonb;  -- UPDATE only (an INSERT trigger has no old rows): {id: previous status} of changed rows
begin
  if tg_op = 'UPDATE' then
    previous := ops_internal.changed_statuses(
      (select pg_catalog.jsonb_object_agg(o.id, o.status) from ops_internal_old_rows o),
      (select pg_catalog.jsonb_object_agg(n.id, n.status) from ops_internal_new_rows n));
  end if;
  insert into public.ops_agent_events (type, agent_id, tags, title, payload, proposal_id)
  select 'proposal:' || c.what,
         n.agent_id,
         array['proposal:' || c.what, 'proposal', c.what]
           || case when n.status = 'rejected' then array['warning'] else '{}'::text[] end,
         pg_catalog.format('Proposal #%s %s: %s', n.id, c.what, n.title),
         pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
           'proposal_id', n.id,
           'status', n.status,
           'previous_status', previous ->> n.id::text,
           'source', n.source,
           'kinds', (select pg_catalog.jsonb_agg(distinct s ->> 'kind') from pg_catalog.jsonb_array_elements(n.proposed_steps) s),
           'auto_approved', case when n.status = 'accepted' then n.auto_approved end,
           'decided_by', n.decided_by,
           'reason', n.rejection_reason)),
         n.id
    from ops_internal_new_rows n
   cross join lateral (select case when tg_op = 'INSERT' then 'created' else n.status end as what) c
   where tg_op = 'INSERT' or previous ? n.id::text
   order by n.id;
  return null;
end;
$$;

create or replace function ops_internal.mission_events()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  previous jsonb;  -- UPDATE only (an INSERT trigger has no old rows): {id: previous status} of changed rows
begin
  if tg_op = 'UPDATE' then
    previous := ops_internal.changed_statuses(
      (select pg_catalog.jsonb_object_agg(o.id, o.status) from ops_internal_old_rows o),
      (select pg_catalog.jsonb_object_agg(n.id, n.status) from ops_internal_new_rows n));
  end if;
  insert into public.ops_agent_events (type, agent_id, tags, title, payload, proposal_id, mission_id)
  select 'mission:' || n.status,
         n.agent_id,
         array['mission:' || n.status, 'mission', n.status]
           || case when n.status = 'failed' then array['warning'] else '{}'::text[] end,
         pg_catalog.format('Mission #%s %s: %s', n.id, n.status, n.title),
         pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
           'mission_id', n.id,
           'proposal_id', n.proposal_id,
           'status', n.status,
           'previous_status', previous ->> n.id::text,
           'reason', n.failure_reason)),
         n.proposal_id,
         n.id
    from ops_internal_new_rows n
   where tg_op = 'INSERT' or previous ? n.id::text
   order by n.id;
  return null;
end;
$$;

create or replace function ops_internal.step_events()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  previous jsonb;  -- UPDATE only (an INSERT trigger has no old rows): {id: previous status} of changed rows
begin
  if tg_op = 'UPDATE' then
    previous := ops_internal.changed_statuses(
      (select pg_catalog.jsonb_object_agg(o.id, o.status) from ops_internal_old_rows o),
      (select pg_catalog.jsonb_object_agg(n.id, n.status) from ops_internal_new_rows n));
  end if;
  insert into public.ops_agent_events (type, agent_id, tags, title, payload, mission_id, step_id)
  select 'step:' || c.what,
         m.agent_id,
         array['step:' || c.what, 'step', c.what, n.kind]
           || case when n.status = 'failed' then array['warning'] else '{}'::text[] end,
         pg_catalog.format('Step #%s (%s) %s', n.id, n.kind, c.what),
         pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
           'step_id', n.id,
           'mission_id', n.mission_id,
           'kind', n.kind,
           'position', n.position,
           'status', n.status,
           'previous_status', previous ->> n.id::text,
           'attempt', n.attempt,
           'max_attempts', n.max_attempts,
           'worker_id', case when n.status in ('running', 'succeeded', 'failed') then n.reserved_by end,
           'run_after', case when c.what = 'retrying' then n.run_after end,
           'error', case when n.status in ('failed', 'queued', 'cancelled') then pg_catalog.left(n.last_error, 1000) end)),
         n.mission_id,
         n.id
    from ops_internal_new_rows n
    join public.ops_missions m on m.id = n.mission_id
   cross join lateral (select case when previous ->> n.id::text = 'running' and n.status = 'queued' then 'retrying'
                                   else n.status end as what) c
   where tg_op = 'INSERT' or previous ? n.id::text
   order by n.id;

  perform pg_catalog.pg_notify('ops_steps', q.kind)
     from (select distinct n.kind from ops_internal_new_rows n
            where n.status = 'queued' and (tg_op = 'INSERT' or previous ? n.id::text)) q;
  return null;
end;
$$;

create or replace function ops_internal.reaction_events()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  previous jsonb;  -- UPDATE only (an INSERT trigger has no old rows): {id: previous status} of changed rows
begin
  if tg_op = 'UPDATE' then
    previous := ops_internal.changed_statuses(
      (select pg_catalog.jsonb_object_agg(o.id, o.status) from ops_internal_old_rows o),
      (select pg_catalog.jsonb_object_agg(n.id, n.status) from ops_internal_new_rows n));
  end if;
  insert into public.ops_agent_events (type, agent_id, tags, title, payload, proposal_id)
  select 'reaction:' || n.status,
         n.target_agent,
         array['reaction:' || n.status, 'reaction', n.status]
           || case when n.status = 'failed' then array['warning'] else '{}'::text[] end,
         pg_catalog.format('Reaction #%s %s: %s reacts to %s (%s)', n.id, n.status, n.target_agent,
           n.source_agent, n.reaction_type),
         pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
           'reaction_id', n.id,
           'event_id', n.event_id,
           'pattern', n.pattern,
           'source_agent', n.source_agent,
           'target_agent', n.target_agent,
           'reaction_type', n.reaction_type,
           'step_kind', n.step_kind,
           'probability', n.probability,
           'roll', n.roll,
           'status', n.status,
           'previous_status', previous ->> n.id::text,
           'reason', n.reason)),
         n.proposal_id
    from ops_internal_new_rows n
   where tg_op = 'INSERT' or previous ? n.id::text
   order by n.id;
  return null;
end;
$$;

select ops_internal.revoke_api_execute();
