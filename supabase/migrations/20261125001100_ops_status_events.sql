-- Invariant 5: every state change writes an event to ops_agent_events.
-- Status triggers on proposals, missions, steps and reactions write them, so no code path can forget.
-- Types are '<entity>:<status>' ('proposal:created' on insert; 'step:retrying' when a failed attempt goes
-- back to the queue); tags always hold the type, its two parts, and the step kind where there is one.
-- A step becoming queued also sends pg_notify('ops_steps', kind) so listening workers wake at once.

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

create or replace function ops_internal.on_proposal_status()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  what text := case when tg_op = 'INSERT' then 'created' else new.status end;
begin
  perform ops_internal.emit_event(
    'proposal:' || what,
    new.agent_id,
    pg_catalog.format('Proposal #%s %s: %s', new.id, what, new.title),
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
      'proposal_id', new.id,
      'status', new.status,
      'previous_status', case when tg_op = 'UPDATE' then old.status end,
      'source', new.source,
      'kinds', (select pg_catalog.jsonb_agg(distinct s ->> 'kind') from pg_catalog.jsonb_array_elements(new.proposed_steps) s),
      'auto_approved', case when new.status = 'accepted' then new.auto_approved end,
      'decided_by', new.decided_by,
      'reason', new.rejection_reason)),
    case when new.status = 'rejected' then array['warning'] else '{}'::text[] end,
    proposal_id => new.id);
  return null;
end;
$$;

create trigger ops_mission_proposals_created_event
  after insert on public.ops_mission_proposals
  for each row execute function ops_internal.on_proposal_status();
create trigger ops_mission_proposals_status_event
  after update of status on public.ops_mission_proposals
  for each row when (old.status is distinct from new.status)
  execute function ops_internal.on_proposal_status();

create or replace function ops_internal.on_mission_status()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  perform ops_internal.emit_event(
    'mission:' || new.status,
    new.agent_id,
    pg_catalog.format('Mission #%s %s: %s', new.id, new.status, new.title),
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
      'mission_id', new.id,
      'proposal_id', new.proposal_id,
      'status', new.status,
      'previous_status', case when tg_op = 'UPDATE' then old.status end,
      'reason', new.failure_reason)),
    case when new.status = 'failed' then array['warning'] else '{}'::text[] end,
    proposal_id => new.proposal_id,
    mission_id => new.id);
  return null;
end;
$$;

create trigger ops_missions_created_event
  after insert on public.ops_missions
  for each row execute function ops_internal.on_mission_status();
create trigger ops_missions_status_event
  after update of status on public.ops_missions
  for each row when (old.status is distinct from new.status)
  execute function ops_internal.on_mission_status();

create or replace function ops_internal.on_step_status()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  what text := new.status;
  agent text;
begin
  if tg_op = 'UPDATE' and old.status = 'running' and new.status = 'queued' then
    what := 'retrying';
  end if;
  select m.agent_id into agent from public.ops_missions m where m.id = new.mission_id;
  perform ops_internal.emit_event(
    'step:' || what,
    agent,
    pg_catalog.format('Step #%s (%s) %s', new.id, new.kind, what),
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
      'step_id', new.id,
      'mission_id', new.mission_id,
      'kind', new.kind,
      'position', new.position,
      'status', new.status,
      'previous_status', case when tg_op = 'UPDATE' then old.status end,
      'attempt', new.attempt,
      'max_attempts', new.max_attempts,
      'worker_id', case when new.status in ('running', 'succeeded', 'failed') then new.reserved_by end,
      'run_after', case when what = 'retrying' then new.run_after end,
      'error', case when new.status in ('failed', 'queued', 'cancelled') then pg_catalog.left(new.last_error, 1000) end)),
    case when new.status = 'failed' then array[new.kind, 'warning'] else array[new.kind] end,
    mission_id => new.mission_id,
    step_id => new.id);
  if new.status = 'queued' then
    perform pg_catalog.pg_notify('ops_steps', new.kind);
  end if;
  return null;
end;
$$;

create trigger ops_mission_steps_created_event
  after insert on public.ops_mission_steps
  for each row execute function ops_internal.on_step_status();
create trigger ops_mission_steps_status_event
  after update of status on public.ops_mission_steps
  for each row when (old.status is distinct from new.status)
  execute function ops_internal.on_step_status();

create or replace function ops_internal.on_reaction_status()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  perform ops_internal.emit_event(
    'reaction:' || new.status,
    new.target_agent,
    pg_catalog.format('Reaction #%s %s: %s reacts to %s (%s)', new.id, new.status, new.target_agent,
      new.source_agent, new.reaction_type),
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
      'reaction_id', new.id,
      'event_id', new.event_id,
      'pattern', new.pattern,
      'source_agent', new.source_agent,
      'target_agent', new.target_agent,
      'reaction_type', new.reaction_type,
      'step_kind', new.step_kind,
      'probability', new.probability,
      'roll', new.roll,
      'status', new.status,
      'previous_status', case when tg_op = 'UPDATE' then old.status end,
      'reason', new.reason)),
    case when new.status = 'failed' then array['warning'] else '{}'::text[] end,
    proposal_id => new.proposal_id);
  return null;
end;
$$;

create trigger ops_agent_reactions_created_event
  after insert on public.ops_agent_reactions
  for each row execute function ops_internal.on_reaction_status();
create trigger ops_agent_reactions_status_event
  after update of status on public.ops_agent_reactions
  for each row when (old.status is distinct from new.status)
  execute function ops_internal.on_reaction_status();

select ops_internal.revoke_api_execute();
