-- A trigger rule is checked when it is written, not when it fires: ops_internal.normalize_trigger_rule reads a
-- rule document {name, trigger_event, conditions, action_config, cooldown_minutes?, skip_probability?,
-- jitter_minutes?, enabled?} and refuses with PT400 naming the field (`conditions.event_type is required`,
-- `action_config.steps[0].kind must match ...`) whatever the evaluator could not use.
--
-- - name: 1-120 characters; a new rule's name must match ops_internal.trigger_name_pattern() (rules written
--   before by hand keep theirs). The document is at most ops_internal.max_trigger_rule_bytes() of JSON and,
--   like every input, nested at most 64 levels deep.
-- - conditions: one validator per checker, ops_internal.validate_trigger_conditions_<checker>(conditions),
--   each refusing unknown keys (custom conditions may carry parameters of their own for the function).
--   They cover what ops_internal.check_trigger_conditions asks at each heartbeat, and more: types, patterns,
--   ranges, and for custom rules a function f(jsonb) returning jsonb that service_role may execute, neither
--   PostgreSQL's nor agent-ops's own (the heartbeat runs it as the owner).
-- - action_config: the proposal template {agent_id, title, steps, description?, metadata?} (a custom rule's
--   function may supply the rest). Its placeholders must be ones the checker provides ({{event.*}},
--   {{value}}, {{topic}} ...), and the template, filled with sample values (ops_internal.trigger_proposal with
--   sample => true; a schedule once per topic), must pass ops_internal.normalize_proposal, the proposal
--   service's own validation. Values that only an event brings (its payload) are checked when the rule fires.
-- - cooldown_minutes 0-525,600 (at least 1 for the checkers that fire on time windows, whose every firing is
--   a new window), jitter_minutes 0-525,600, skip_probability 0-1 (kept to 6 decimals) and only for schedule
--   rules, the only checker that rolls it.

create or replace function ops_internal.trigger_name_pattern()
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select '^[a-z0-9][a-z0-9_.:-]{0,119}$';
$$;

create or replace function ops_internal.trigger_checker_pattern()
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select '^(event|schedule|threshold|absence|custom)$';
$$;

create or replace function ops_internal.max_trigger_rule_bytes()
returns integer
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select 65536;
$$;

-- Lookbacks, cooldowns and jitter: up to a year of minutes.
create or replace function ops_internal.max_trigger_minutes()
returns integer
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select 525600;
$$;

-- The fields of a rule document, in the order messages and events list them.
create or replace function ops_internal.trigger_rule_fields()
returns text[]
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select array['name', 'trigger_event', 'conditions', 'action_config', 'cooldown_minutes', 'skip_probability',
               'jitter_minutes', 'enabled'];
$$;

-- The editable part of a stored rule, as ops_set_trigger_rule takes it.
create or replace function ops_internal.trigger_definition(rule public.ops_trigger_rules)
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object('name', rule.name, 'trigger_event', rule.trigger_event,
    'conditions', rule.conditions, 'action_config', rule.action_config, 'cooldown_minutes', rule.cooldown_minutes,
    'skip_probability', rule.skip_probability, 'jitter_minutes', rule.jitter_minutes, 'enabled', rule.enabled);
$$;

-- Conditions, one validator per checker (ops_trigger_rules.trigger_event).
create or replace function ops_internal.validate_trigger_conditions_event(conditions jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(conditions, 'conditions', array['event_type', 'tags', 'agent_id', 'lookback_minutes']);
  perform ops_internal.get_text(conditions, 'conditions', 'event_type', true, ops_internal.event_type_pattern());
  perform ops_internal.get_text_array(conditions, 'conditions', 'tags', false, ops_internal.agent_id_pattern(), 20);
  perform ops_internal.get_text(conditions, 'conditions', 'agent_id', false, ops_internal.agent_id_pattern());
  perform ops_internal.get_int(conditions, 'conditions', 'lookback_minutes', false, 1, ops_internal.max_trigger_minutes());
end;
$$;

create or replace function ops_internal.validate_trigger_conditions_threshold(conditions jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(conditions, 'conditions', array['event_type', 'field', 'op', 'value', 'lookback_minutes']);
  perform ops_internal.get_text(conditions, 'conditions', 'event_type', true, ops_internal.event_type_pattern());
  perform ops_internal.get_text(conditions, 'conditions', 'field', true, '^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$', 200);
  perform ops_internal.get_text(conditions, 'conditions', 'op', true, '^(>|>=|<|<=)$');
  perform ops_internal.get_number(conditions, 'conditions', 'value', true);
  perform ops_internal.get_int(conditions, 'conditions', 'lookback_minutes', false, 1, ops_internal.max_trigger_minutes());
end;
$$;

create or replace function ops_internal.validate_trigger_conditions_absence(conditions jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(conditions, 'conditions', array['event_type', 'lookback_minutes']);
  perform ops_internal.get_text(conditions, 'conditions', 'event_type', true, ops_internal.event_type_pattern());
  perform ops_internal.get_int(conditions, 'conditions', 'lookback_minutes', true, 1, ops_internal.max_trigger_minutes());
end;
$$;

create or replace function ops_internal.validate_trigger_conditions_schedule(conditions jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  topic jsonb;
  i integer := 0;
begin
  perform ops_internal.check_keys(conditions, 'conditions', array['topics']);
  perform ops_internal.get_text_array(conditions, 'conditions', 'topics', false, null, 100);
  for topic in select t from pg_catalog.jsonb_array_elements(coalesce(conditions -> 'topics', '[]'::jsonb)) as t loop
    perform ops_internal.check_text(topic #>> '{}', pg_catalog.format('conditions.topics[%s]', i), 500);
    i := i + 1;
  end loop;
end;
$$;

create or replace function ops_internal.validate_trigger_conditions_custom(conditions jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  named text := ops_internal.get_text(conditions, 'conditions', 'function', true,
    '^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$', 127);
  fn regprocedure := pg_catalog.to_regprocedure(named || '(jsonb)');
  proc pg_catalog.pg_proc;
  schema_name text;
begin
  if fn is null then
    perform ops_internal.invalid(pg_catalog.format(
      'conditions.function must name an existing function %s(jsonb) returning jsonb', named));
  end if;
  select p.* into proc from pg_catalog.pg_proc p where p.oid = fn;
  schema_name := proc.pronamespace::regnamespace::text;
  if schema_name in ('pg_catalog', 'information_schema', 'ops_internal') or schema_name like 'pg\_%'
     or (schema_name = 'public' and proc.proname like 'ops\_%') then
    perform ops_internal.invalid(pg_catalog.format(
      'conditions.function must be a function of your own, not one of PostgreSQL''s or agent-ops''s (%s)', named));
  end if;
  if proc.prokind <> 'f' or proc.proretset or proc.prorettype <> 'jsonb'::regtype then
    perform ops_internal.invalid(pg_catalog.format(
      'conditions.function must name a function %s(jsonb) returning jsonb', named));
  end if;
  if not pg_catalog.has_function_privilege('service_role', fn, 'execute') then
    perform ops_internal.invalid(pg_catalog.format(
      'conditions.function must be a function service_role may execute (grant execute on function %s to service_role)',
      fn));
  end if;
end;
$$;

create or replace function ops_internal.validate_trigger_conditions(trigger_event text, conditions jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.require_object(conditions, 'conditions');
  case trigger_event
    when 'event' then perform ops_internal.validate_trigger_conditions_event(conditions);
    when 'threshold' then perform ops_internal.validate_trigger_conditions_threshold(conditions);
    when 'absence' then perform ops_internal.validate_trigger_conditions_absence(conditions);
    when 'schedule' then perform ops_internal.validate_trigger_conditions_schedule(conditions);
    when 'custom' then perform ops_internal.validate_trigger_conditions_custom(conditions);
  end case;
end;
$$;

-- The variables each checker gives a template, with sample values (ops_internal.check_trigger builds the real
-- ones): one set per schedule topic, else one.
create or replace function ops_internal.trigger_sample_vars(trigger_event text, conditions jsonb)
returns jsonb[]
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  event jsonb;
begin
  case trigger_event
    when 'event', 'threshold' then
      -- Every column of an event, so {{event.<column>}} is known; ids and texts get plausible values.
      event := (select pg_catalog.to_jsonb(e) from pg_catalog.jsonb_populate_record(
                  null::public.ops_agent_events, '{}'::jsonb) as e)
        || pg_catalog.jsonb_build_object('id', 1, 'type', conditions ->> 'event_type', 'agent_id', 'agent',
             'source', 'system', 'tags', pg_catalog.jsonb_build_array(conditions ->> 'event_type'),
             'title', conditions ->> 'event_type', 'payload', '{}'::jsonb, 'proposal_id', 1, 'mission_id', 1,
             'step_id', 1, 'created_at', pg_catalog.now());
      return array[pg_catalog.jsonb_build_object('event', event)
        || case when trigger_event = 'threshold'
             then pg_catalog.jsonb_build_object('value', conditions -> 'value') else '{}'::jsonb end];
    when 'absence' then
      return array[pg_catalog.jsonb_build_object('event_type', conditions -> 'event_type',
        'lookback_minutes', conditions -> 'lookback_minutes')];
    when 'schedule' then
      if pg_catalog.jsonb_array_length(coalesce(conditions -> 'topics', '[]'::jsonb)) = 0 then
        return array['{}'::jsonb];
      end if;
      return array(select pg_catalog.jsonb_build_object('topic', t.value)
                     from pg_catalog.jsonb_array_elements(conditions -> 'topics') with ordinality as t(value, n)
                    order by t.n);
    else
      return array['{}'::jsonb];
  end case;
end;
$$;

-- The proposal template: known keys, placeholders the checker provides, and the proposal it makes (filled with
-- sample values) valid for ops_create_proposal.
create or replace function ops_internal.validate_trigger_action(rule public.ops_trigger_rules)
returns void
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  samples jsonb[] := ops_internal.trigger_sample_vars(rule.trigger_event, rule.conditions);
  provides jsonb := samples[1] || '{"rule": {"id": 0, "name": "", "fire_count": 0}, "now": ""}'::jsonb;
  used text[];
  path text[];
  proposal jsonb;
  i integer := 0;
  vars jsonb;
begin
  perform ops_internal.check_keys(rule.action_config, 'action_config',
    array['agent_id', 'title', 'steps', 'description', 'metadata']);
  for used in
    select m from pg_catalog.jsonb_path_query(rule.action_config, 'strict $.**') as v,
                  pg_catalog.regexp_matches(v #>> '{}', '\{\{\s*([A-Za-z0-9_.]+)\s*\}\}', 'g') as m
     where pg_catalog.jsonb_typeof(v) = 'string'
  loop
    path := pg_catalog.string_to_array(used[1], '.');
    if not provides ? path[1] then
      perform ops_internal.invalid(pg_catalog.format(
        'action_config uses {{%s}}, which %s rules do not provide (they provide: %s)', used[1], rule.trigger_event,
        (select pg_catalog.string_agg('{{' || k || '}}', ', ' order by k) from pg_catalog.jsonb_object_keys(provides) k)));
    end if;
    if pg_catalog.cardinality(path) > 1 and pg_catalog.jsonb_typeof(provides -> path[1]) = 'object'
       and not (provides -> path[1]) ? path[2] then
      perform ops_internal.invalid(pg_catalog.format(
        'action_config uses {{%s}}, but %s has no field %s (it has: %s)', used[1], path[1],
        pg_catalog.to_jsonb(path[2]),
        (select pg_catalog.string_agg(k, ', ' order by k) from pg_catalog.jsonb_object_keys(provides -> path[1]) k)));
    end if;
  end loop;

  foreach vars in array samples loop
    proposal := ops_internal.trigger_proposal(rule,
      pg_catalog.jsonb_build_object('dedupe_key', 'trigger:check', 'vars', vars), sample => true);
    if rule.trigger_event = 'custom' then
      -- The function's template is merged over action_config when it fires: what it may supply is not missing.
      proposal := '{"agent_id": "sample", "title": "sample", "steps": [{"kind": "noop"}]}'::jsonb || proposal;
    end if;
    begin
      perform ops_internal.normalize_proposal(proposal);
    exception when sqlstate 'PT400' then
      perform ops_internal.invalid('action_config.' || sqlerrm
        || case when vars ? 'topic' then pg_catalog.format(' (with conditions.topics[%s])', i) else '' end);
    end;
    i := i + 1;
  end loop;
end;
$$;

-- The rule document, checked and completed with defaults: a new rule starts disabled, an existing one keeps
-- its switch unless the document sets `enabled`.
create or replace function ops_internal.normalize_trigger_rule(rule jsonb, existing public.ops_trigger_rules)
returns jsonb
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  wanted text;
  checker text;
  conditions jsonb;
  cooldown bigint;
  skip numeric;
  doc jsonb;
begin
  perform ops_internal.require_object(rule, 'rule');
  if pg_catalog.octet_length(rule::text) > ops_internal.max_trigger_rule_bytes() then
    perform ops_internal.invalid(pg_catalog.format('rule must be at most %s bytes of JSON',
      ops_internal.max_trigger_rule_bytes()));
  end if;
  perform ops_internal.check_keys(rule, '', ops_internal.trigger_rule_fields());
  wanted := ops_internal.get_text(rule, '', 'name', true, null, 120);
  if existing.id is null and wanted !~ ops_internal.trigger_name_pattern() then
    perform ops_internal.invalid('name must match ' || ops_internal.trigger_name_pattern());
  end if;
  checker := ops_internal.get_text(rule, '', 'trigger_event', true, ops_internal.trigger_checker_pattern());
  conditions := coalesce(ops_internal.get_object(rule, '', 'conditions'), '{}'::jsonb);
  perform ops_internal.validate_trigger_conditions(checker, conditions);

  cooldown := coalesce(ops_internal.get_int(rule, '', 'cooldown_minutes', false, 0, ops_internal.max_trigger_minutes()), 60);
  if cooldown = 0 and checker not in ('event', 'threshold') then
    perform ops_internal.invalid(pg_catalog.format(
      'cooldown_minutes must be from 1 to %s for %s rules (each firing is a new window: 0 would propose at every heartbeat)',
      ops_internal.max_trigger_minutes(), checker));
  end if;
  skip := pg_catalog.round(coalesce(ops_internal.get_number(rule, '', 'skip_probability', false, 0, 1), 0), 6);
  if skip <> 0 and checker <> 'schedule' then
    perform ops_internal.invalid(pg_catalog.format(
      'skip_probability must be 0 for %s rules: only schedule rules skip', checker));
  end if;

  doc := pg_catalog.jsonb_build_object(
    'name', wanted,
    'trigger_event', checker,
    'conditions', conditions,
    'action_config', coalesce(ops_internal.get_object(rule, '', 'action_config', checker <> 'custom'), '{}'::jsonb),
    'cooldown_minutes', cooldown,
    'skip_probability', pg_catalog.to_jsonb(skip::real),
    'jitter_minutes', coalesce(ops_internal.get_int(rule, '', 'jitter_minutes', false, 0, ops_internal.max_trigger_minutes()), 0),
    'enabled', coalesce(ops_internal.get_bool(rule, '', 'enabled'), existing.enabled, false));
  perform ops_internal.validate_trigger_action(pg_catalog.jsonb_populate_record(existing, doc));
  return doc;
end;
$$;

select ops_internal.revoke_api_execute();
