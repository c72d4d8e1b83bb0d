-- Reactions: events matched against policy reaction_matrix, queued, and turned into proposals by the
-- heartbeat through ops_create_proposal (seed pitfall 7: reactions pass the same gates as everything else).
--
-- Matching happens in an AFTER INSERT trigger on ops_agent_events (statement-level, over the inserted rows),
-- so each new event is matched exactly once, in the transaction that wrote it, and the cost grows with new
-- events, never with history; with no patterns it costs one policy read per statement.
-- A pattern matches when its source is '*' or the event's agent, and every one of its tags is on the event.
-- Then the probability is rolled (the roll is stored) and the cooldown checked per (pattern, target, type)
-- under an advisory lock, so concurrent events cannot both slip through one cooldown.
-- Events of the reaction entity itself are never matched (a reaction must not react to reactions).

create or replace function ops_internal.match_reactions()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  matrix jsonb;
  event record;
  candidate jsonb;
  pattern_key text;
  roll double precision;
begin
  select p.value into matrix from public.ops_policy p where p.key = 'reaction_matrix';
  -- ops_set_policy validates the matrix; these type checks only keep a value written around it from
  -- breaking every state change (this hook runs with each statement that writes events).
  if matrix is null or coalesce((matrix ->> 'enabled')::boolean, true) is false
     or pg_catalog.jsonb_typeof(matrix -> 'patterns') is distinct from 'array'
     or pg_catalog.jsonb_array_length(matrix -> 'patterns') = 0 then
    return null;
  end if;
  for event in
    select e.id, e.agent_id, e.tags from ops_internal_new_events e where e.type not like 'reaction:%' order by e.id
  loop
    for candidate in select p from pg_catalog.jsonb_array_elements(matrix -> 'patterns') as p loop
      continue when pg_catalog.jsonb_typeof(candidate) <> 'object'
        or pg_catalog.jsonb_typeof(candidate -> 'tags') is distinct from 'array'
        or pg_catalog.jsonb_typeof(candidate -> 'probability') is distinct from 'number'
        or pg_catalog.jsonb_typeof(candidate -> 'cooldown') is distinct from 'number'
        or candidate ->> 'target' is null or candidate ->> 'type' is null;
      continue when not (candidate ->> 'source' = '*' or candidate ->> 'source' = event.agent_id);
      continue when not (event.tags @> array(select pg_catalog.jsonb_array_elements_text(candidate -> 'tags')));
      roll := pg_catalog.random();
      continue when roll >= (candidate ->> 'probability')::double precision;
      pattern_key := coalesce(candidate ->> 'name', 'pattern_' || pg_catalog.left(pg_catalog.md5(candidate::text), 10));
      perform ops_internal.lock(pg_catalog.format('reaction_cooldown:%s:%s:%s', pattern_key, candidate ->> 'target',
        candidate ->> 'type'));
      continue when exists (
        select 1 from public.ops_agent_reactions r
         where r.pattern = pattern_key and r.target_agent = candidate ->> 'target'
           and r.reaction_type = candidate ->> 'type'
           and r.created_at > pg_catalog.now() - pg_catalog.make_interval(mins => (candidate ->> 'cooldown')::integer));
      insert into public.ops_agent_reactions
        (event_id, pattern, source_agent, target_agent, reaction_type, step_kind, title, payload, probability, roll)
      values (event.id, pattern_key, event.agent_id, candidate ->> 'target', candidate ->> 'type',
              coalesce(candidate ->> 'step_kind', candidate ->> 'type'), candidate ->> 'title',
              coalesce(candidate -> 'payload', '{}'::jsonb), (candidate ->> 'probability')::double precision, roll);
    end loop;
  end loop;
  return null;
end;
$$;

create trigger ops_agent_events_match_reactions
  after insert on public.ops_agent_events
  referencing new table as ops_internal_new_events
  for each statement execute function ops_internal.match_reactions();

select ops_internal.revoke_api_execute();

create or replace function public.ops_process_reactions()
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  budget interval := pg_catalog.make_interval(secs => ops_internal.heartbeat_setting('reactions_budget_ms') / 1000.0);
  batch integer := ops_internal.heartbeat_setting('reactions_batch');
  reaction public.ops_agent_reactions;
  source_event public.ops_agent_events;
  result jsonb;
  done integer := 0;
  skipped integer := 0;
  failed integer := 0;
  deferred integer := 0;
begin
  for reaction in
    select r.* from public.ops_agent_reactions r where r.status = 'queued' order by r.id limit batch
    for update skip locked
  loop
    if pg_catalog.clock_timestamp() - started > budget then
      deferred := deferred + 1;
      continue;
    end if;
    select e.* into source_event from public.ops_agent_events e where e.id = reaction.event_id;
    begin
      result := public.ops_create_proposal(pg_catalog.jsonb_build_object(
        'agent_id', reaction.target_agent,
        'title', pg_catalog.left(coalesce(reaction.title, pg_catalog.format('%s: %s from %s', reaction.reaction_type,
          coalesce(source_event.type, 'event'), reaction.source_agent)), 200),
        'steps', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
          'kind', reaction.step_kind,
          'payload', reaction.payload || pg_catalog.jsonb_build_object(
            'reaction', pg_catalog.jsonb_build_object('id', reaction.id, 'type', reaction.reaction_type,
              'pattern', reaction.pattern, 'source_agent', reaction.source_agent),
            'event', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('id', source_event.id,
              'type', source_event.type, 'agent_id', source_event.agent_id, 'title', source_event.title,
              'payload', source_event.payload, 'proposal_id', source_event.proposal_id,
              'mission_id', source_event.mission_id, 'step_id', source_event.step_id))))),
        'source', 'reaction',
        'dedupe_key', 'reaction:' || reaction.id,
        'metadata', pg_catalog.jsonb_build_object('reaction_id', reaction.id, 'event_id', reaction.event_id,
          'pattern', reaction.pattern)));
      if result ->> 'status' = 'rejected' then
        update public.ops_agent_reactions r
           set status = 'skipped', reason = result ->> 'reason', proposal_id = (result ->> 'proposal_id')::bigint,
               processed_at = pg_catalog.now()
         where r.id = reaction.id;
        skipped := skipped + 1;
      else
        update public.ops_agent_reactions r
           set status = 'done', reason = result ->> 'reason', proposal_id = (result ->> 'proposal_id')::bigint,
               processed_at = pg_catalog.now()
         where r.id = reaction.id;
        done := done + 1;
      end if;
    exception when others then
      update public.ops_agent_reactions r
         set status = 'failed', reason = pg_catalog.left(sqlerrm, 1000), processed_at = pg_catalog.now()
       where r.id = reaction.id;
      failed := failed + 1;
    end;
  end loop;
  return pg_catalog.jsonb_build_object('processed', done + skipped + failed, 'done', done, 'skipped', skipped,
    'failed', failed, 'deferred', deferred);
end;
$$;

revoke execute on function public.ops_process_reactions() from public, anon, authenticated;
grant execute on function public.ops_process_reactions() to service_role;
