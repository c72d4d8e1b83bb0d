-- Reading trigger rules, and a dry run: STABLE, SECURITY DEFINER, EXECUTE for service_role only.
--
--   ops_list_trigger_rules()                       every rule by name (ops_internal.trigger_rule_json), each
--                                                  with its 5 latest firings
--   ops_get_trigger_rule(name)                     one rule, with its 20 latest firings; PT404 when unknown
--   ops_preview_trigger_rule(name?, rule?)         what a rule would propose now: a saved rule by name, or a
--                                                  draft document (checked like ops_set_trigger_rule, saved
--                                                  nowhere, seen with the saved rule's bookkeeping if one has
--                                                  its name)
--
-- The dry run answers {name, trigger_event, saved, enabled, due, next_due_at, matches, checker, error,
-- dedupe_key, duplicate_of, skip_probability, proposal, invalid, outcome, would_propose}: what the checker
-- says now (cooldown and switch aside), the proposal the heartbeat would send (ops_internal.trigger_proposal,
-- the heartbeat's own builder), whether that window or event already made one (duplicate_of: the proposal),
-- whether the proposal service would refuse it (invalid: its PT400 message) and otherwise what it would
-- decide now (outcome: accepted, pending for a human, or rejected by a gate, with the reason), and whether
-- the next heartbeat would propose (would_propose; a schedule still skips with skip_probability). It writes
-- nothing: the checker runs in a subtransaction that is rolled back, so even a custom function that writes
-- leaves nothing behind.

-- Why the checker fires or not, for people.
create or replace function ops_internal.trigger_checker_text(rule public.ops_trigger_rules, fired jsonb)
returns text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  c jsonb := rule.conditions;
  event jsonb := fired -> 'vars' -> 'event';
begin
  case rule.trigger_event
    when 'event' then
      if fired is null then
        return pg_catalog.format('no %s event since %s', c ->> 'event_type', ops_internal.trigger_window_start(rule));
      end if;
      return pg_catalog.format('%s event #%s at %s', event ->> 'type', event ->> 'id', event ->> 'created_at');
    when 'threshold' then
      if fired is null then
        return pg_catalog.format('no %s event with %s %s %s since %s', c ->> 'event_type', c ->> 'field', c ->> 'op',
          c ->> 'value', ops_internal.trigger_window_start(rule));
      end if;
      return pg_catalog.format('%s event #%s at %s has %s = %s (%s %s)', event ->> 'type', event ->> 'id',
        event ->> 'created_at', c ->> 'field', fired -> 'vars' ->> 'value', c ->> 'op', c ->> 'value');
    when 'absence' then
      if fired is null then
        return pg_catalog.format('a %s event came within the last %s minutes', c ->> 'event_type', c ->> 'lookback_minutes');
      end if;
      return pg_catalog.format('no %s event in the last %s minutes', c ->> 'event_type', c ->> 'lookback_minutes');
    when 'schedule' then
      return pg_catalog.format('fires whenever due: every %s minutes plus up to %s of jitter%s', rule.cooldown_minutes,
        rule.jitter_minutes, coalesce(', topic ' || (fired -> 'vars' ->> 'topic'), ''));
    else
      return pg_catalog.format('%s returned %s', c ->> 'function',
        case when fired is null then 'null: nothing to propose' else 'a proposal template' end);
  end case;
end;
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_list_trigger_rules()
returns jsonb
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(pg_catalog.jsonb_agg(ops_internal.trigger_rule_json(r, 5) order by r.name), '[]'::jsonb)
    from public.ops_trigger_rules r;
$$;

revoke execute on function public.ops_list_trigger_rules() from public, anon, authenticated;
grant execute on function public.ops_list_trigger_rules() to service_role;

create or replace function public.ops_get_trigger_rule(name text)
returns jsonb
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  wanted text := ops_internal.check_text(ops_get_trigger_rule.name, 'name', 120);
  stored public.ops_trigger_rules;
begin
  select r.* into stored from public.ops_trigger_rules r where r.name = wanted;
  if stored.id is null then
    perform ops_internal.not_found(pg_catalog.format('trigger rule %s not found', pg_catalog.to_jsonb(wanted)));
  end if;
  return ops_internal.trigger_rule_json(stored, 20);
end;
$$;

revoke execute on function public.ops_get_trigger_rule(text) from public, anon, authenticated;
grant execute on function public.ops_get_trigger_rule(text) to service_role;

create or replace function public.ops_preview_trigger_rule(name text default null, rule jsonb default null)
returns jsonb
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  draft jsonb := ops_preview_trigger_rule.rule;
  wanted text;
  r public.ops_trigger_rules;
  fired jsonb;
  checker_error text;
  proposal jsonb;
  normalized jsonb;
  refused text;
  duplicate bigint;
  kinds text[];
  manual text;
  gate text;
  outcome jsonb;
  due boolean;
begin
  if ops_preview_trigger_rule.name is not null and draft is not null then
    perform ops_internal.invalid('name and rule: give one of them (a saved rule by name, or a rule document)');
  end if;
  if draft is not null then
    perform ops_internal.require_object(draft, 'rule');
    wanted := ops_internal.get_text(draft, '', 'name', true, null, 120);
    select x.* into r from public.ops_trigger_rules x where x.name = wanted;
    r := pg_catalog.jsonb_populate_record(r, ops_internal.normalize_trigger_rule(draft, r));
    r.id := coalesce(r.id, 0);
    r.fire_count := coalesce(r.fire_count, 0);
  else
    if ops_preview_trigger_rule.name is null then
      perform ops_internal.invalid('name or rule is required: a saved rule by name, or a rule document');
    end if;
    wanted := ops_internal.check_text(ops_preview_trigger_rule.name, 'name', 120);
    select x.* into r from public.ops_trigger_rules x where x.name = wanted;
    if r.id is null then
      perform ops_internal.not_found(pg_catalog.format('trigger rule %s not found', pg_catalog.to_jsonb(wanted)));
    end if;
  end if;

  -- The checker as the heartbeat runs it, in a subtransaction that is always rolled back.
  begin
    perform ops_internal.check_trigger_conditions(r);
    fired := ops_internal.check_trigger(r);
    raise exception using errcode = 'PT999', message = 'preview: roll back whatever the checker wrote';
  exception
    when sqlstate 'PT999' then
      null;
    when others then
      checker_error := sqlerrm;
      fired := null;
  end;

  if fired is not null then
    proposal := ops_internal.trigger_proposal(r, fired);
    select p.id into duplicate from public.ops_mission_proposals p where p.dedupe_key = proposal ->> 'dedupe_key';
    begin
      normalized := ops_internal.normalize_proposal(proposal);
    exception when sqlstate 'PT400' then
      refused := sqlerrm;
    end;
  end if;
  if normalized is not null and duplicate is null then
    kinds := ops_internal.step_kinds(normalized -> 'steps');
    manual := ops_internal.needs_human(kinds, 'trigger');
    gate := ops_internal.gate_reason(normalized ->> 'agent_id', kinds, true, manual is null);
    outcome := pg_catalog.jsonb_build_object(
      'status', case when gate is not null then 'rejected' when manual is not null then 'pending' else 'accepted' end,
      'reason', coalesce(gate, manual));
  end if;
  due := r.enabled and (r.next_due_at is null or r.next_due_at <= pg_catalog.now());

  return pg_catalog.jsonb_build_object(
    'name', r.name,
    'trigger_event', r.trigger_event,
    'saved', draft is null,
    'enabled', r.enabled,
    'due', due,
    'next_due_at', case when r.enabled then greatest(coalesce(r.next_due_at, pg_catalog.now()), pg_catalog.now()) end,
    'matches', fired is not null,
    'checker', case when checker_error is null then ops_internal.trigger_checker_text(r, fired) end,
    'error', checker_error,
    'dedupe_key', proposal ->> 'dedupe_key',
    'duplicate_of', duplicate,
    'skip_probability', r.skip_probability,
    'proposal', proposal,
    'invalid', refused,
    'outcome', outcome,
    'would_propose', due and fired is not null and duplicate is null and refused is null);
end;
$$;

revoke execute on function public.ops_preview_trigger_rule(text, jsonb) from public, anon, authenticated;
grant execute on function public.ops_preview_trigger_rule(text, jsonb) to service_role;
