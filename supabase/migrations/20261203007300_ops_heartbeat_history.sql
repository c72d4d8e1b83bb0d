-- The trigger checkers' newest-event lookups, whatever the size of the history (P4).
--
-- What read history. ops_internal.check_trigger found an event or threshold rule's newest match with
-- `where type = T and created_at > window [and the rule's filters] order by created_at desc, id desc limit 1`.
-- On a long history the statistics of ops_agent_events lag (autoanalyze waits for a tenth of the table to
-- change: 100,000 new events on a million), so the planner believes the lookback window almost empty; with
-- the rule's own filters on top (a threshold's jsonb comparison, tags, agent) it expects one row, and under
-- `limit 1` a sort of one row looks free. It walked ops_agent_events_created_idx back over every event of
-- every type in the window and sorted them: on P4's long database after 25 rounds the threshold rule read all
-- ~25,000 events of the last hour (1,074 buffers, 19 ms a heartbeat). On the empty one, with fresh statistics,
-- the same statement mostly took an incremental sort and stopped at the newest match (45 buffers, 1 ms), but
-- not always: the plan hung on an estimate. The earlier P4 gap (1.8, measured on the
-- code before 20261203007100) was the kind-cap gate counting today's steps; the counters removed it.
--
-- What changed, and why behaviour does not.
-- 1. ops_agent_events_type_created_idx is now (type, created_at, id): same name, still one index (each entry
--    grows by the 8-byte id), and it yields one type's events in exactly the checkers' order,
--    so the newest match needs no sort. Every query the old (type, created_at) index served, it serves.
-- 2. The two lookups read through a cursor and fetch the first row instead of `limit 1`. A cursor is planned
--    for a fast start (cursor_tuple_fraction), so a plan that must read and sort the whole window before
--    its first row loses to the index walk even when the planner expects a single row; `limit 1` over an
--    expected single row is planned as if the whole result were read. Same statement otherwise: the same
--    conditions, the same order, the first row of it is the row `limit 1` returned.
-- Nothing else in check_trigger changes.

drop index if exists public.ops_agent_events_type_created_idx;
create index ops_agent_events_type_created_idx on public.ops_agent_events (type, created_at, id);

-- Runs the rule's checker: {dedupe_key, vars, template?} when it fires, null otherwise.
create or replace function ops_internal.check_trigger(rule public.ops_trigger_rules)
returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  c jsonb := rule.conditions;
  found_event public.ops_agent_events;
  matched boolean;
  -- The newest matching event, read as a cursor's first row (see the migration's header: a fast-start plan).
  newest refcursor;
  path text[];
  threshold numeric;
  topics jsonb;
  custom_fn regprocedure;
  template jsonb;
begin
  case rule.trigger_event
    when 'event' then
      open newest no scroll for
        select e.* from public.ops_agent_events e
         where e.type = c ->> 'event_type'
           and e.created_at > ops_internal.trigger_window_start(rule)
           and (c -> 'tags' is null or e.tags @> array(select pg_catalog.jsonb_array_elements_text(c -> 'tags')))
           and (c ->> 'agent_id' is null or e.agent_id = c ->> 'agent_id')
         order by e.created_at desc, e.id desc;
      fetch newest into found_event;
      matched := found;
      close newest;
      if not matched then
        return null;
      end if;
      return pg_catalog.jsonb_build_object('dedupe_key', pg_catalog.format('trigger:%s:event:%s', rule.id, found_event.id),
        'vars', pg_catalog.jsonb_build_object('event', pg_catalog.to_jsonb(found_event)));
    when 'threshold' then
      path := pg_catalog.string_to_array(c ->> 'field', '.');
      threshold := (c ->> 'value')::numeric;
      open newest no scroll for
        select e.* from public.ops_agent_events e
         where e.type = c ->> 'event_type'
           and e.created_at > ops_internal.trigger_window_start(rule)
           and pg_catalog.jsonb_typeof(e.payload #> path) = 'number'
           and case c ->> 'op'
                 when '>' then (e.payload #>> path)::numeric > threshold
                 when '>=' then (e.payload #>> path)::numeric >= threshold
                 when '<' then (e.payload #>> path)::numeric < threshold
                 when '<=' then (e.payload #>> path)::numeric <= threshold
               end
         order by e.created_at desc, e.id desc;
      fetch newest into found_event;
      matched := found;
      close newest;
      if not matched then
        return null;
      end if;
      return pg_catalog.jsonb_build_object('dedupe_key', pg_catalog.format('trigger:%s:threshold:%s', rule.id, found_event.id),
        'vars', pg_catalog.jsonb_build_object('event', pg_catalog.to_jsonb(found_event), 'value', found_event.payload #> path));
    when 'absence' then
      if exists (select 1 from public.ops_agent_events e
                  where e.type = c ->> 'event_type'
                    and e.created_at > pg_catalog.now() - pg_catalog.make_interval(mins => (c ->> 'lookback_minutes')::integer)) then
        return null;
      end if;
      return pg_catalog.jsonb_build_object('dedupe_key', ops_internal.trigger_window_key(rule),
        'vars', pg_catalog.jsonb_build_object('event_type', c ->> 'event_type', 'lookback_minutes', c -> 'lookback_minutes'));
    when 'schedule' then
      topics := coalesce(c -> 'topics', '[]'::jsonb);
      return pg_catalog.jsonb_build_object('dedupe_key', ops_internal.trigger_window_key(rule),
        'vars', pg_catalog.jsonb_build_object('topic', case when pg_catalog.jsonb_array_length(topics) > 0
          then topics -> (rule.fire_count % pg_catalog.jsonb_array_length(topics)) end));
    when 'custom' then
      custom_fn := pg_catalog.to_regprocedure((c ->> 'function') || '(jsonb)');
      if custom_fn is null then
        raise exception 'custom trigger function %(jsonb) not found', c ->> 'function' using errcode = 'PT400';
      end if;
      execute pg_catalog.format('select %s($1)', custom_fn::regproc) into template using pg_catalog.to_jsonb(rule);
      if template is null or template = 'null'::jsonb then
        return null;
      end if;
      return pg_catalog.jsonb_build_object('dedupe_key', coalesce(template ->> 'dedupe_key', ops_internal.trigger_window_key(rule)),
        'vars', '{}'::jsonb, 'template', template - 'dedupe_key');
  end case;
  return null;
end;
$$;

select ops_internal.revoke_api_execute();
