-- Invariant 5: every state change writes an event to ops_agent_events.
-- Status triggers on proposals, missions, steps and reactions write them, so no code path can forget.
-- Types are '<entity>:<status>' ('proposal:created' on insert; 'step:retrying' when a running step goes back
-- to the queue); tags always hold the type, its two parts, and the step kind where there is one, plus
-- 'warning' for rejections and failures. A step becoming queued also sends pg_notify('ops_steps', kind) so
-- listening workers wake at once.
--
-- The triggers are statement-level with transition tables: one INSERT ... SELECT per statement, whatever
-- the number of rows (a batch claim of 16 steps writes its 16 events at once). Transition tables cannot be
-- combined with a column list, so the UPDATE triggers fire for every UPDATE and keep the rows whose status
-- changed.

create or replace function ops_internal.event_tags(type text, extra text[] default '{}')
returns text[]
language sql
immutable
set search_path = ''
as $$
  select pg_catalog.array_agg(t order by n)
  from (
    select t, pg_catalog.min(n) as n
    from pg_catalog.unnest(
      array[type, pg_catalog.split_part(type, ':', 1), pg_catalog.split_part(type, ':', 2)] || coalesce(extra, '{}')
    ) with ordinality as u(t, n)
    where t is not null and t <> ''
    group by t
  ) as tags;
$$;

-- One explicit event (trigger:fired, policy:updated, step:recovered ...); status events come from triggers.
create or replace function ops_internal.emit_event(
  type text,
  agent_id text,
  title text,
  payload jsonb default '{}'::jsonb,
  extra_tags text[] default '{}',
  proposal_id bigint default null,
  mission_id bigint default null,
  step_id bigint default null,
  source text default 'system',
  summary text default null)
returns bigint
language plpgsql
set search_path = ''
as $$
declare
  new_id bigint;
begin
  insert into public.ops_agent_events
    (type, agent_id, source, tags, title, summary, payload, proposal_id, mission_id, step_id)
  values (
    emit_event.type,
    coalesce(emit_event.agent_id, 'system'),
    coalesce(emit_event.source, 'system'),
    ops_internal.event_tags(emit_event.type, emit_event.extra_tags),
    coalesce(emit_event.title, ''),
    emit_event.summary,
    coalesce(emit_event.payload, '{}'::jsonb),
    emit_event.proposal_id,
    emit_event.mission_id,
    emit_event.step_id)
  returning id into new_id;
  return new_id;
end;
$$;

-- Proposals: 'proposal:created' on insert, 'proposal:<status>' when decided.
create or replace function ops_internal.proposal_events()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  -- For UPDATEs: the rows whose status changed, with their previous status. (An INSERT trigger has no old
  -- rows table, so only the UPDATE branch may mention it; plpgsql plans statements when they first run.)
  previous jsonb;
begin
  if tg_op = 'UPDATE' then
    select coalesce(pg_catalog.jsonb_object_agg(n.id, o.status), '{}'::jsonb) into previous
      from ops_internal_new_rows n join ops_internal_old_rows o on o.id = n.id
     where o.status is distinct from n.status;
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

-- Missions: 'mission:<status>' on insert (approved) and on every status change.
create or replace function ops_internal.mission_events()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  -- For UPDATEs: the rows whose status changed, with their previous status. (An INSERT trigger has no old
  -- rows table, so only the UPDATE branch may mention it; plpgsql plans statements when they first run.)
  previous jsonb;
begin
  if tg_op = 'UPDATE' then
    select coalesce(pg_catalog.jsonb_object_agg(n.id, o.status), '{}'::jsonb) into previous
      from ops_internal_new_rows n join ops_internal_old_rows o on o.id = n.id
     where o.status is distinct from n.status;
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

-- Steps: 'step:<status>' on insert and on every status change ('step:retrying' for running -> queued).
create or replace function ops_internal.step_events()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  -- For UPDATEs: the rows whose status changed, with their previous status. (An INSERT trigger has no old
  -- rows table, so only the UPDATE branch may mention it; plpgsql plans statements when they first run.)
  previous jsonb;
begin
  if tg_op = 'UPDATE' then
    select coalesce(pg_catalog.jsonb_object_agg(n.id, o.status), '{}'::jsonb) into previous
      from ops_internal_new_rows n join ops_internal_old_rows o on o.id = n.id
     where o.status is distinct from n.status;
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

-- Reactions: 'reaction:<status>' on insert (queued) and on every status change.
create or replace function ops_internal.reaction_events()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  -- For UPDATEs: the rows whose status changed, with their previous status. (An INSERT trigger has no old
  -- rows table, so only the UPDATE branch may mention it; plpgsql plans statements when they first run.)
  previous jsonb;
begin
  if tg_op = 'UPDATE' then
    select coalesce(pg_catalog.jsonb_object_agg(n.id, o.status), '{}'::jsonb) into previous
      from ops_internal_new_rows n join ops_internal_old_rows o on o.id = n.id
     where o.status is distinct from n.status;
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

create trigger ops_mission_proposals_insert_events
  after insert on public.ops_mission_proposals
  referencing new table as ops_internal_new_rows
  for each statement execute function ops_internal.proposal_events();
create trigger ops_mission_proposals_update_events
  after update on public.ops_mission_proposals
  referencing old table as ops_internal_old_rows new table as ops_internal_new_rows
  for each statement execute function ops_internal.proposal_events();

create trigger ops_missions_insert_events
  after insert on public.ops_missions
  referencing new table as ops_internal_new_rows
  for each statement execute function ops_internal.mission_events();
create trigger ops_missions_update_events
  after update on public.ops_missions
  referencing old table as ops_internal_old_rows new table as ops_internal_new_rows
  for each statement execute function ops_internal.mission_events();

create trigger ops_mission_steps_insert_events
  after insert on public.ops_mission_steps
  referencing new table as ops_internal_new_rows
  for each statement execute function ops_internal.step_events();
create trigger ops_mission_steps_update_events
  after update on public.ops_mission_steps
  referencing old table as ops_internal_old_rows new table as ops_internal_new_rows
  for each statement execute function ops_internal.step_events();

create trigger ops_agent_reactions_insert_events
  after insert on public.ops_agent_reactions
  referencing new table as ops_internal_new_rows
  for each statement execute function ops_internal.reaction_events();
create trigger ops_agent_reactions_update_events
  after update on public.ops_agent_reactions
  referencing old table as ops_internal_old_rows new table as ops_internal_new_rows
  for each statement execute function ops_internal.reaction_events();

select ops_internal.revoke_api_execute();
