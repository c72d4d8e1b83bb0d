-- Triggers: rules the heartbeat checks to propose work on its own. Triggers only detect; every firing
-- goes through ops_create_proposal with source 'trigger' (seed pitfall 2) and a dedupe key per rule and
-- window, so a rule can never fire twice for the same window or the same event.
--
-- Checkers (ops_trigger_rules.trigger_event):
--   event      conditions {event_type, tags?, agent_id?, lookback_minutes? (60)}: a matching event since
--              the rule's last evaluation; template variables {{event.*}}.
--   schedule   conditions {topics?}: every cooldown_minutes plus 0..jitter_minutes, skipped with
--              skip_probability; {{topic}} rotates through conditions.topics.
--   threshold  conditions {event_type, field, op (> >= < <=), value, lookback_minutes? (60)}: an event whose
--              numeric payload field (dotted path) crosses the value; {{event.*}} and {{value}}.
--   absence    conditions {event_type, lookback_minutes}: no event of that type within the lookback.
--   custom     conditions {function}: a user SQL function f(rule jsonb) returning a proposal template
--              (merged over action_config) or null.
-- action_config is the proposal template {agent_id, title, steps, description?, metadata?}; strings may hold
-- {{placeholders}} (a string that is only one placeholder keeps the value's JSON type).
-- Cooldown is checked first (next_due_at, indexed); rules are locked FOR UPDATE SKIP LOCKED; evaluation
-- stops at the heartbeat's trigger budget and the rest wait for the next heartbeat.

create or replace function ops_internal.render_template(template jsonb, vars jsonb)
returns jsonb
language plpgsql
immutable
set search_path = ''
as $$
declare
  text_value text;
  whole text;
  placeholder text[];
begin
  case pg_catalog.jsonb_typeof(template)
    when 'object' then
      return (select coalesce(pg_catalog.jsonb_object_agg(e.key, ops_internal.render_template(e.value, vars)), '{}'::jsonb)
                from pg_catalog.jsonb_each(template) as e);
    when 'array' then
      return (select coalesce(pg_catalog.jsonb_agg(ops_internal.render_template(a.value, vars) order by a.n), '[]'::jsonb)
                from pg_catalog.jsonb_array_elements(template) with ordinality as a(value, n));
    when 'string' then
      text_value := template #>> '{}';
      whole := pg_catalog.substring(text_value, '^\{\{\s*([A-Za-z0-9_.]+)\s*\}\}$');
      if whole is not null then
        return coalesce(vars #> pg_catalog.string_to_array(whole, '.'), 'null'::jsonb);
      end if;
      for placeholder in
        select m from pg_catalog.regexp_matches(text_value, '(\{\{\s*([A-Za-z0-9_.]+)\s*\}\})', 'g') as m
      loop
        text_value := pg_catalog.replace(text_value, placeholder[1],
          coalesce(vars #>> pg_catalog.string_to_array(placeholder[2], '.'), ''));
      end loop;
      return pg_catalog.to_jsonb(text_value);
    else
      return template;
  end case;
end;
$$;

-- Where an event-driven checker starts looking: its lookback, but not before the last evaluation (with a
-- minute of overlap for transactions that committed late; the per-event dedupe key absorbs the overlap).
create or replace function ops_internal.trigger_window_start(rule public.ops_trigger_rules)
returns timestamptz
language sql
stable
set search_path = ''
as $$
  select greatest(
    pg_catalog.now() - pg_catalog.make_interval(mins => coalesce((rule.conditions ->> 'lookback_minutes')::integer, 60)),
    coalesce(rule.last_evaluated_at, '-infinity'::timestamptz) - interval '1 minute');
$$;

-- The dedupe key of a time-window firing (schedule, absence, custom): the due time of this window.
create or replace function ops_internal.trigger_window_key(rule public.ops_trigger_rules)
returns text
language sql
stable
set search_path = ''
as $$
  select pg_catalog.format('trigger:%s:%s:%s', rule.id, rule.trigger_event,
    coalesce(pg_catalog.floor(extract(epoch from rule.next_due_at))::bigint::text, 'first'));
$$;

-- Runs the rule's checker: {dedupe_key, vars, template?} when it fires, null otherwise.
create or replace function ops_internal.check_trigger(rule public.ops_trigger_rules)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  c jsonb := rule.conditions;
  found_event public.ops_agent_events;
  path text[];
  threshold numeric;
  topics jsonb;
  custom_fn regprocedure;
  template jsonb;
begin
  case rule.trigger_event
    when 'event' then
      select e.* into found_event from public.ops_agent_events e
       where e.type = c ->> 'event_type'
         and e.created_at > ops_internal.trigger_window_start(rule)
         and (c -> 'tags' is null or e.tags @> array(select pg_catalog.jsonb_array_elements_text(c -> 'tags')))
         and (c ->> 'agent_id' is null or e.agent_id = c ->> 'agent_id')
       order by e.created_at desc, e.id desc
       limit 1;
      if not found then
        return null;
      end if;
      return pg_catalog.jsonb_build_object('dedupe_key', pg_catalog.format('trigger:%s:event:%s', rule.id, found_event.id),
        'vars', pg_catalog.jsonb_build_object('event', pg_catalog.to_jsonb(found_event)));
    when 'threshold' then
      path := pg_catalog.string_to_array(c ->> 'field', '.');
      threshold := (c ->> 'value')::numeric;
      select e.* into found_event from public.ops_agent_events e
       where e.type = c ->> 'event_type'
         and e.created_at > ops_internal.trigger_window_start(rule)
         and pg_catalog.jsonb_typeof(e.payload #> path) = 'number'
         and case c ->> 'op'
               when '>' then (e.payload #>> path)::numeric > threshold
               when '>=' then (e.payload #>> path)::numeric >= threshold
               when '<' then (e.payload #>> path)::numeric < threshold
               when '<=' then (e.payload #>> path)::numeric <= threshold
             end
       order by e.created_at desc, e.id desc
       limit 1;
      if not found then
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

-- Conditions each checker needs, so a broken rule is reported by name instead of silently never firing.
create or replace function ops_internal.check_trigger_conditions(rule public.ops_trigger_rules)
returns void
language plpgsql
set search_path = ''
as $$
declare
  path text := pg_catalog.format('rule %s conditions', pg_catalog.to_jsonb(rule.name));
begin
  case rule.trigger_event
    when 'event' then
      perform ops_internal.get_text(rule.conditions, path, 'event_type', true);
    when 'threshold' then
      perform ops_internal.get_text(rule.conditions, path, 'event_type', true);
      perform ops_internal.get_text(rule.conditions, path, 'field', true, '^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$');
      perform ops_internal.get_text(rule.conditions, path, 'op', true, '^(>|>=|<|<=)$');
      perform ops_internal.get_number(rule.conditions, path, 'value', true);
    when 'absence' then
      perform ops_internal.get_text(rule.conditions, path, 'event_type', true);
      perform ops_internal.get_int(rule.conditions, path, 'lookback_minutes', true, 1);
    when 'custom' then
      perform ops_internal.get_text(rule.conditions, path, 'function', true, '^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$');
    else
      null;
  end case;
end;
$$;

-- After a firing or a skip, the rule rests for its cooldown plus a random share of its jitter.
create or replace function ops_internal.next_due(rule public.ops_trigger_rules)
returns timestamptz
language sql
volatile
set search_path = ''
as $$
  select pg_catalog.now()
    + pg_catalog.make_interval(mins => rule.cooldown_minutes)
    + pg_catalog.make_interval(secs => pg_catalog.random() * rule.jitter_minutes * 60);
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_evaluate_triggers()
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  budget interval := pg_catalog.make_interval(secs => ops_internal.heartbeat_setting('triggers_budget_ms') / 1000.0);
  rule public.ops_trigger_rules;
  fired_check jsonb;
  proposal jsonb;
  result jsonb;
  evaluated integer := 0;
  fired integer := 0;
  skipped integer := 0;
  deferred integer := 0;
  errors jsonb := '[]'::jsonb;
begin
  for rule in
    select r.* from public.ops_trigger_rules r
     where r.enabled and (r.next_due_at is null or r.next_due_at <= pg_catalog.now())
     order by r.next_due_at nulls first, r.id
     for update skip locked
  loop
    if pg_catalog.clock_timestamp() - started > budget then
      deferred := deferred + 1;
      continue;
    end if;
    evaluated := evaluated + 1;
    begin
      perform ops_internal.check_trigger_conditions(rule);
      fired_check := ops_internal.check_trigger(rule);
      update public.ops_trigger_rules r set last_evaluated_at = pg_catalog.now() where r.id = rule.id;
      continue when fired_check is null;

      if rule.trigger_event = 'schedule' and pg_catalog.random() < rule.skip_probability then
        update public.ops_trigger_rules r set next_due_at = ops_internal.next_due(rule) where r.id = rule.id;
        skipped := skipped + 1;
        continue;
      end if;

      proposal := ops_internal.render_template(
          rule.action_config || coalesce(fired_check -> 'template', '{}'::jsonb),
          fired_check -> 'vars' || pg_catalog.jsonb_build_object(
            'rule', pg_catalog.jsonb_build_object('id', rule.id, 'name', rule.name, 'fire_count', rule.fire_count),
            'now', pg_catalog.now()))
        || pg_catalog.jsonb_build_object('source', 'trigger', 'dedupe_key', fired_check ->> 'dedupe_key');
      proposal := pg_catalog.jsonb_set(proposal, '{metadata}',
        coalesce(proposal -> 'metadata', '{}'::jsonb)
          || pg_catalog.jsonb_build_object('trigger_rule_id', rule.id, 'trigger_rule', rule.name));
      result := public.ops_create_proposal(proposal);
      -- Already fired for this window or event (another evaluator got there first): not a new firing.
      continue when (result ->> 'duplicate')::boolean;

      update public.ops_trigger_rules r
         set fire_count = r.fire_count + 1, last_fired_at = pg_catalog.now(), next_due_at = ops_internal.next_due(rule)
       where r.id = rule.id;
      perform ops_internal.emit_event(
        'trigger:fired',
        proposal ->> 'agent_id',
        pg_catalog.format('Trigger %s fired: proposal #%s %s', rule.name, result ->> 'proposal_id', result ->> 'status'),
        pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('rule_id', rule.id, 'rule', rule.name,
          'trigger_event', rule.trigger_event, 'proposal_id', result -> 'proposal_id', 'status', result -> 'status',
          'mission_id', result -> 'mission_id', 'reason', result -> 'reason')),
        array[rule.trigger_event],
        proposal_id => (result ->> 'proposal_id')::bigint,
        mission_id => (result ->> 'mission_id')::bigint);
      fired := fired + 1;
    exception when others then
      errors := errors || pg_catalog.jsonb_build_object('rule', rule.name, 'error', sqlerrm);
      -- A broken rule rests for its cooldown (at least a minute) instead of failing every heartbeat.
      update public.ops_trigger_rules r
         set next_due_at = pg_catalog.now() + pg_catalog.make_interval(mins => greatest(rule.cooldown_minutes, 1))
       where r.id = rule.id;
    end;
  end loop;
  return pg_catalog.jsonb_build_object('evaluated', evaluated, 'fired', fired, 'skipped', skipped,
    'deferred', deferred, 'errors', errors);
end;
$$;

revoke execute on function public.ops_evaluate_triggers() from public, anon, authenticated;
grant execute on function public.ops_evaluate_triggers() to service_role;
