-- The loop's own vocabulary cannot be forged through tags.
--
-- Reaction patterns match on tags, and every event is tagged with its type, entity and status
-- (`mission:failed`, `mission`, `failed`). ops_emit_event refused the reserved *types* but let a domain
-- event carry the tag `mission:failed` (or `mission` and `failed`), which queued a reaction meant for a real
-- failure. Tags naming the loop's entities, alone or as `entity:...`, are now refused on domain events with
-- PT400; the loop's own events still carry them, and patterns keep matching real events by their type tag.

-- The entities whose events come only from the loop's state changes (and the worker, queue, budget and
-- notification reports).
create or replace function ops_internal.reserved_event_entities()
returns text[]
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select array['proposal', 'mission', 'step', 'reaction', 'trigger', 'policy', 'heartbeat', 'worker', 'queue',
               'budget', 'notification'];
$$;

create or replace function ops_internal.check_domain_tags(tags text[], name text)
returns void
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  tag text;
  i integer := 0;
begin
  foreach tag in array coalesce(tags, '{}'::text[]) loop
    if pg_catalog.split_part(tag, ':', 1) = any (ops_internal.reserved_event_entities()) then
      perform ops_internal.invalid(pg_catalog.format(
        '%s[%s] (%s) names the reserved entity %s: only the loop''s own events carry it', name, i, tag,
        pg_catalog.split_part(tag, ':', 1)));
    end if;
    i := i + 1;
  end loop;
end;
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_emit_event(event jsonb)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  type_name text;
  entity text;
  tags text[];
  proposal bigint;
  mission bigint;
  step bigint;
  new_id bigint;
begin
  perform ops_internal.require_object(ops_emit_event.event, 'event');
  perform ops_internal.check_keys(event, '', array['type', 'agent_id', 'source', 'tags', 'title', 'summary',
    'payload', 'proposal_id', 'mission_id', 'step_id']);
  type_name := ops_internal.get_text(event, '', 'type', true, '^[a-z][a-z0-9_]{0,63}:[a-z][a-z0-9_]{0,63}$');
  entity := pg_catalog.split_part(type_name, ':', 1);
  if entity in ('proposal', 'mission', 'step', 'reaction', 'trigger', 'policy', 'heartbeat') then
    perform ops_internal.invalid(pg_catalog.format(
      'type %s uses the reserved entity %s: those events come only from state changes', type_name, entity));
  end if;
  tags := ops_internal.get_text_array(event, '', 'tags', false, '^[a-z0-9][a-z0-9_.:-]{0,63}$', 20);
  perform ops_internal.check_domain_tags(tags, 'tags');
  proposal := ops_internal.get_int(event, '', 'proposal_id', false, 1);
  mission := ops_internal.get_int(event, '', 'mission_id', false, 1);
  step := ops_internal.get_int(event, '', 'step_id', false, 1);
  if proposal is not null and not exists (select 1 from public.ops_mission_proposals p where p.id = proposal) then
    perform ops_internal.not_found(pg_catalog.format('proposal %s not found', proposal));
  end if;
  if mission is not null and not exists (select 1 from public.ops_missions m where m.id = mission) then
    perform ops_internal.not_found(pg_catalog.format('mission %s not found', mission));
  end if;
  if step is not null then
    select s.mission_id into mission from public.ops_mission_steps s
     where s.id = step and (mission is null or s.mission_id = mission);
    if not found then
      perform ops_internal.not_found(pg_catalog.format('step %s not found%s', step,
        case when mission is not null then ' in mission ' || mission else '' end));
    end if;
  end if;

  new_id := ops_internal.emit_event(
    type_name,
    ops_internal.get_text(event, '', 'agent_id', true, '^[a-z0-9][a-z0-9_.:-]{0,63}$'),
    coalesce(ops_internal.get_text(event, '', 'title', false, null, 200), type_name),
    coalesce(ops_internal.get_object(event, '', 'payload', false, 65536), '{}'::jsonb),
    tags,
    proposal,
    mission,
    step,
    coalesce(ops_internal.get_text(event, '', 'source', false, '^[a-z0-9][a-z0-9_.:-]{0,63}$'), 'api'),
    ops_internal.get_text(event, '', 'summary', false, null, 4000));
  return (select pg_catalog.jsonb_build_object('event_id', e.id, 'type', e.type, 'tags', e.tags,
                                               'created_at', e.created_at)
            from public.ops_agent_events e where e.id = new_id);
end;
$$;

revoke execute on function public.ops_emit_event(jsonb) from public, anon, authenticated;
grant execute on function public.ops_emit_event(jsonb) to service_role;
