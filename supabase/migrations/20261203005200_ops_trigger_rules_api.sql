-- Trigger rules through the API: service_role could only read ops_trigger_rules, so a rule was changed with
-- raw SQL as the table owner and left no event. Now, like policy, every change goes through a function that
-- validates it (ops_internal.normalize_trigger_rule) and writes an event:
--
--   ops_set_trigger_rule(rule, updated_by)             create or update by name: trigger:created | trigger:updated
--                                                      (payload: changed, previous, value), and trigger:enabled |
--                                                      trigger:disabled when the switch moves
--   ops_set_trigger_enabled(name, enabled, updated_by) trigger:enabled | trigger:disabled; enabling checks the
--                                                      rule first, so a rule written by hand cannot go live broken
--   ops_delete_trigger_rule(name, updated_by)          trigger:deleted (payload: the rule as it was)
--
-- Each returns {action, changed, rule}: action is created, updated, enabled, disabled, deleted or unchanged (the
-- same document again, or the switch already where asked: nothing written, no event, so repeats are harmless);
-- changed lists the fields that changed; rule is the rule as ops_get_trigger_rule shows it (for a deletion, as
-- it was). Writers of one rule name serialize on an advisory lock, and each waits for the heartbeat to finish
-- evaluating the rule (the row lock). Fire bookkeeping (fire_count, last_fired_at, next_due_at,
-- last_evaluated_at) is the heartbeat's and is never changed here.

-- A rule as the API shows it: its definition and bookkeeping, next_due_at null while disabled (else when the
-- heartbeat checks it next: now when due), and its latest firings from the trigger:fired events (the newest
-- `fires`; fire_count counts every firing, the events only those retention keeps).
create or replace function ops_internal.trigger_rule_json(rule public.ops_trigger_rules, fires integer)
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select ops_internal.trigger_definition(rule) || pg_catalog.jsonb_build_object(
    'id', rule.id,
    'fire_count', rule.fire_count,
    'last_fired_at', rule.last_fired_at,
    'last_evaluated_at', rule.last_evaluated_at,
    'next_due_at', case when rule.enabled then greatest(coalesce(rule.next_due_at, pg_catalog.now()), pg_catalog.now()) end,
    'due', rule.enabled and (rule.next_due_at is null or rule.next_due_at <= pg_catalog.now()),
    'created_at', rule.created_at,
    'updated_at', rule.updated_at,
    'recent_fires', coalesce((
      select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'event_id', f.id, 'fired_at', f.created_at, 'proposal_id', f.payload -> 'proposal_id',
               'status', f.payload -> 'status', 'mission_id', f.payload -> 'mission_id', 'reason', f.payload -> 'reason')
               order by f.id desc)
        from (select e.id, e.created_at, e.payload from public.ops_agent_events e
               where e.type = 'trigger:fired' and e.payload ->> 'rule_id' = rule.id::text
               order by e.id desc
               limit fires) as f), '[]'::jsonb));
$$;

-- Looks fired events up by rule: the list and the console read the latest firings of every rule.
create index if not exists ops_agent_events_trigger_fired_idx
  on public.ops_agent_events ((payload ->> 'rule_id'), id) where type = 'trigger:fired';

-- One trigger:* event about a rule.
create or replace function ops_internal.trigger_rule_event(
  type text, rule public.ops_trigger_rules, who text, details jsonb default '{}'::jsonb)
returns bigint
language sql
set search_path = pg_catalog, pg_temp
as $$
  select ops_internal.emit_event(
    type,
    'system',
    pg_catalog.format('Trigger rule %s %s by %s%s', rule.name, pg_catalog.split_part(type, ':', 2), who,
      case when details ? 'changed' then ': ' || (select pg_catalog.string_agg(c, ', ' order by n)
        from pg_catalog.jsonb_array_elements_text(details -> 'changed') with ordinality as x(c, n)) else '' end),
    pg_catalog.jsonb_build_object('rule_id', rule.id, 'rule', rule.name, 'trigger_event', rule.trigger_event,
      'enabled', rule.enabled, 'updated_by', who) || details,
    array[rule.trigger_event]);
$$;

-- A rule by name for a change: writers of that name serialized, the row locked (all null when there is none).
create or replace function ops_internal.lock_trigger_rule(name text)
returns public.ops_trigger_rules
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  locked public.ops_trigger_rules;
begin
  perform ops_internal.lock('trigger-rule:' || name);
  select r.* into locked from public.ops_trigger_rules r where r.name = lock_trigger_rule.name for update;
  return locked;
end;
$$;

create or replace function ops_internal.trigger_change(action text, changed text[], rule public.ops_trigger_rules)
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object('action', action, 'changed', pg_catalog.to_jsonb(changed),
    'rule', ops_internal.trigger_rule_json(rule, 5));
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_set_trigger_rule(rule jsonb, updated_by text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  wanted text;
  who text;
  existing public.ops_trigger_rules;
  doc jsonb;
  previous jsonb;
  saved public.ops_trigger_rules;
  changed text[];
  edited text[];
begin
  perform ops_internal.require_object(ops_set_trigger_rule.rule, 'rule');
  wanted := ops_internal.get_text(ops_set_trigger_rule.rule, '', 'name', true, null, 120);
  who := ops_internal.check_text(ops_set_trigger_rule.updated_by, 'updated_by', 200);
  existing := ops_internal.lock_trigger_rule(wanted);
  doc := ops_internal.normalize_trigger_rule(ops_set_trigger_rule.rule, existing);

  if existing.id is null then
    insert into public.ops_trigger_rules
      (name, trigger_event, conditions, action_config, cooldown_minutes, skip_probability, jitter_minutes, enabled)
    select d.name, d.trigger_event, d.conditions, d.action_config, d.cooldown_minutes, d.skip_probability,
           d.jitter_minutes, d.enabled
      from pg_catalog.jsonb_populate_record(null::public.ops_trigger_rules, doc) as d
    returning * into saved;
    perform ops_internal.trigger_rule_event('trigger:created', saved, who, pg_catalog.jsonb_build_object('value', doc));
    if saved.enabled then
      perform ops_internal.trigger_rule_event('trigger:enabled', saved, who);
    end if;
    return ops_internal.trigger_change('created', ops_internal.trigger_rule_fields(), saved);
  end if;

  previous := ops_internal.trigger_definition(existing);
  changed := array(select k from pg_catalog.unnest(ops_internal.trigger_rule_fields()) with ordinality as f(k, n)
                    where previous -> k is distinct from doc -> k order by n);
  if pg_catalog.cardinality(changed) = 0 then
    return ops_internal.trigger_change('unchanged', changed, existing);
  end if;

  update public.ops_trigger_rules r
     set trigger_event = d.trigger_event, conditions = d.conditions, action_config = d.action_config,
         cooldown_minutes = d.cooldown_minutes, skip_probability = d.skip_probability,
         jitter_minutes = d.jitter_minutes, enabled = d.enabled
    from pg_catalog.jsonb_populate_record(null::public.ops_trigger_rules, doc) as d
   where r.id = existing.id
  returning r.* into saved;

  edited := pg_catalog.array_remove(changed, 'enabled');
  if pg_catalog.cardinality(edited) > 0 then
    perform ops_internal.trigger_rule_event('trigger:updated', saved, who, pg_catalog.jsonb_build_object(
      'changed', pg_catalog.to_jsonb(edited),
      'previous', (select pg_catalog.jsonb_object_agg(k, previous -> k) from pg_catalog.unnest(edited) as k),
      'value', (select pg_catalog.jsonb_object_agg(k, doc -> k) from pg_catalog.unnest(edited) as k)));
  end if;
  if saved.enabled is distinct from existing.enabled then
    perform ops_internal.trigger_rule_event(case when saved.enabled then 'trigger:enabled' else 'trigger:disabled' end,
      saved, who);
  end if;
  return ops_internal.trigger_change(
    case when pg_catalog.cardinality(edited) > 0 then 'updated' when saved.enabled then 'enabled' else 'disabled' end,
    changed, saved);
end;
$$;

revoke execute on function public.ops_set_trigger_rule(jsonb, text) from public, anon, authenticated;
grant execute on function public.ops_set_trigger_rule(jsonb, text) to service_role;

create or replace function public.ops_set_trigger_enabled(name text, enabled boolean, updated_by text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  wanted text := ops_internal.check_text(ops_set_trigger_enabled.name, 'name', 120);
  switch_on boolean := ops_set_trigger_enabled.enabled;
  who text;
  existing public.ops_trigger_rules;
  saved public.ops_trigger_rules;
begin
  if switch_on is null then
    perform ops_internal.invalid('enabled is required (true or false)');
  end if;
  who := ops_internal.check_text(ops_set_trigger_enabled.updated_by, 'updated_by', 200);
  existing := ops_internal.lock_trigger_rule(wanted);
  if existing.id is null then
    perform ops_internal.not_found(pg_catalog.format('trigger rule %s not found', pg_catalog.to_jsonb(wanted)));
  end if;
  if existing.enabled = switch_on then
    return ops_internal.trigger_change('unchanged', '{}', existing);
  end if;
  if switch_on then
    begin
      perform ops_internal.normalize_trigger_rule(ops_internal.trigger_definition(existing), existing);
    exception when sqlstate 'PT400' then
      perform ops_internal.invalid(pg_catalog.format(
        'trigger rule %s cannot be enabled until it is fixed (ops_set_trigger_rule): %s', pg_catalog.to_jsonb(wanted),
        sqlerrm));
    end;
  end if;
  update public.ops_trigger_rules r set enabled = switch_on where r.id = existing.id returning r.* into saved;
  perform ops_internal.trigger_rule_event(case when switch_on then 'trigger:enabled' else 'trigger:disabled' end,
    saved, who);
  return ops_internal.trigger_change(case when switch_on then 'enabled' else 'disabled' end, array['enabled'], saved);
end;
$$;

revoke execute on function public.ops_set_trigger_enabled(text, boolean, text) from public, anon, authenticated;
grant execute on function public.ops_set_trigger_enabled(text, boolean, text) to service_role;

create or replace function public.ops_delete_trigger_rule(name text, updated_by text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  wanted text := ops_internal.check_text(ops_delete_trigger_rule.name, 'name', 120);
  who text := ops_internal.check_text(ops_delete_trigger_rule.updated_by, 'updated_by', 200);
  existing public.ops_trigger_rules;
  result jsonb;
begin
  existing := ops_internal.lock_trigger_rule(wanted);
  if existing.id is null then
    perform ops_internal.not_found(pg_catalog.format('trigger rule %s not found', pg_catalog.to_jsonb(wanted)));
  end if;
  result := ops_internal.trigger_change('deleted', '{}', existing);
  delete from public.ops_trigger_rules r where r.id = existing.id;
  perform ops_internal.trigger_rule_event('trigger:deleted', existing, who, pg_catalog.jsonb_build_object(
    'value', ops_internal.trigger_definition(existing), 'fire_count', existing.fire_count,
    'last_fired_at', existing.last_fired_at));
  return result;
end;
$$;

revoke execute on function public.ops_delete_trigger_rule(text, text) from public, anon, authenticated;
grant execute on function public.ops_delete_trigger_rule(text, text) to service_role;
