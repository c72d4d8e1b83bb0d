-- One function builds the proposal a trigger rule sends: the heartbeat (ops_evaluate_triggers), the dry run
-- (ops_preview_trigger_rule) and the check of a rule when it is written (ops_set_trigger_rule) all use it, so
-- what a preview shows and what a rule is validated against is exactly what the heartbeat would propose.
--
-- ops_internal.trigger_proposal(rule, fired): `fired` is a checker's answer {dedupe_key, vars, template?}
-- (ops_internal.check_trigger). The template is action_config with a custom checker's template merged over
-- it, rendered with the checker's variables plus {{rule.*}} and {{now}}; source 'trigger', the dedupe key and
-- metadata {trigger_rule_id, trigger_rule} are added. With `sample`, a placeholder that has no value yet (an
-- event's payload field, unknown when the rule is written) stands for the string 'sample', so a check looks
-- at the template's shape rather than at one event's data.

create or replace function ops_internal.render_sample(template jsonb, vars jsonb)
returns jsonb
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  text_value text;
  whole text;
  placeholder text[];
  hit jsonb;
begin
  case pg_catalog.jsonb_typeof(template)
    when 'object' then
      return (select coalesce(pg_catalog.jsonb_object_agg(e.key, ops_internal.render_sample(e.value, vars)), '{}'::jsonb)
                from pg_catalog.jsonb_each(template) as e);
    when 'array' then
      return (select coalesce(pg_catalog.jsonb_agg(ops_internal.render_sample(a.value, vars) order by a.n), '[]'::jsonb)
                from pg_catalog.jsonb_array_elements(template) with ordinality as a(value, n));
    when 'string' then
      text_value := template #>> '{}';
      whole := pg_catalog.substring(text_value, '^\{\{\s*([A-Za-z0-9_.]+)\s*\}\}$');
      if whole is not null then
        hit := vars #> pg_catalog.string_to_array(whole, '.');
        return case when hit is null or hit = 'null'::jsonb then '"sample"'::jsonb else hit end;
      end if;
      for placeholder in
        select m from pg_catalog.regexp_matches(text_value, '(\{\{\s*([A-Za-z0-9_.]+)\s*\}\})', 'g') as m
      loop
        text_value := pg_catalog.replace(text_value, placeholder[1],
          coalesce(vars #>> pg_catalog.string_to_array(placeholder[2], '.'), 'sample'));
      end loop;
      return pg_catalog.to_jsonb(text_value);
    else
      return template;
  end case;
end;
$$;

create or replace function ops_internal.trigger_proposal(
  rule public.ops_trigger_rules, fired jsonb, sample boolean default false)
returns jsonb
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  template jsonb := rule.action_config || coalesce(fired -> 'template', '{}'::jsonb);
  vars jsonb := coalesce(fired -> 'vars', '{}'::jsonb) || pg_catalog.jsonb_build_object(
    'rule', pg_catalog.jsonb_build_object('id', rule.id, 'name', rule.name, 'fire_count', rule.fire_count),
    'now', pg_catalog.now());
  proposal jsonb;
begin
  proposal := case when sample then ops_internal.render_sample(template, vars)
                   else ops_internal.render_template(template, vars) end
    || pg_catalog.jsonb_build_object('source', 'trigger', 'dedupe_key', fired ->> 'dedupe_key');
  return pg_catalog.jsonb_set(proposal, '{metadata}',
    coalesce(proposal -> 'metadata', '{}'::jsonb)
      || pg_catalog.jsonb_build_object('trigger_rule_id', rule.id, 'trigger_rule', rule.name));
end;
$$;

select ops_internal.revoke_api_execute();

-- As in 20261125002200_ops_evaluate_triggers.sql, with the proposal built by ops_internal.trigger_proposal.
create or replace function public.ops_evaluate_triggers()
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
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

      proposal := ops_internal.trigger_proposal(rule, fired_check);
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
