-- Each vocabulary of the loop written once: the names of step kinds, agents, event types, policy keys and
-- proposal sources, and the kinds a proposal's steps name.
--
-- The patterns were literals repeated in table CHECKs and in every function that validates input. Now they
-- are IMMUTABLE functions here (the planner folds a call with no arguments to its constant, so a CHECK or a
-- validation costs what the literal did), and error messages still show the pattern itself. The policy keys
-- are the validators themselves: `ops_internal.validate_policy_<key>(value)` checks one key's value, so a new
-- key is one new function, and ops_internal.policy_keys() lists them from the catalog.

-- A snake_case name (unanchored): step kinds, actions, the two halves of an event type.
create or replace function ops_internal.name_re()
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select '[a-z][a-z0-9_]{0,63}';
$$;

create or replace function ops_internal.kind_pattern()
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select '^' || ops_internal.name_re() || '$';
$$;

-- An agent id (unanchored): also worker ids in events, sources of reaction patterns, event tags.
create or replace function ops_internal.agent_id_re()
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select '[a-z0-9][a-z0-9_.:-]{0,63}';
$$;

create or replace function ops_internal.agent_id_pattern()
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select '^' || ops_internal.agent_id_re() || '$';
$$;

-- '<entity>:<what>', e.g. mission:failed, tweet:posted.
create or replace function ops_internal.event_type_pattern()
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select '^' || ops_internal.name_re() || ':' || ops_internal.name_re() || '$';
$$;

-- A policy key: a name, or '<name>:<name>' for per-kind flags such as worker:crawl.
create or replace function ops_internal.policy_key_pattern()
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select '^' || ops_internal.name_re() || '(:' || ops_internal.name_re() || ')?$';
$$;

-- Where a proposal comes from.
create or replace function ops_internal.source_pattern()
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select '^(api|trigger|reaction|agent|human)$';
$$;

-- The kinds a proposal's steps name, in order.
create or replace function ops_internal.step_kinds(steps jsonb)
returns text[]
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select array(select s ->> 'kind' from pg_catalog.jsonb_array_elements(steps) as s);
$$;

-- The table CHECKs use the same functions (validated, so every stored row still matches).
alter table public.ops_mission_proposals drop constraint ops_mission_proposals_agent_id_check,
  add constraint ops_mission_proposals_agent_id_check check (agent_id ~ ops_internal.agent_id_pattern()) not valid;
alter table public.ops_mission_proposals validate constraint ops_mission_proposals_agent_id_check;
alter table public.ops_mission_steps drop constraint ops_mission_steps_kind_check,
  add constraint ops_mission_steps_kind_check check (kind ~ ops_internal.kind_pattern()) not valid;
alter table public.ops_mission_steps validate constraint ops_mission_steps_kind_check;
alter table public.ops_agent_events drop constraint ops_agent_events_type_check,
  add constraint ops_agent_events_type_check check (type ~ ops_internal.event_type_pattern()) not valid;
alter table public.ops_agent_events validate constraint ops_agent_events_type_check;
alter table public.ops_policy drop constraint ops_policy_key_check,
  add constraint ops_policy_key_check check (key ~ ops_internal.policy_key_pattern()) not valid;
alter table public.ops_policy validate constraint ops_policy_key_check;
alter table public.ops_agent_reactions drop constraint ops_agent_reactions_step_kind_check,
  add constraint ops_agent_reactions_step_kind_check check (step_kind ~ ops_internal.kind_pattern()) not valid;
alter table public.ops_agent_reactions validate constraint ops_agent_reactions_step_kind_check;
alter table public.ops_action_runs drop constraint ops_action_runs_action_check,
  add constraint ops_action_runs_action_check check (action ~ ops_internal.kind_pattern()) not valid;
alter table public.ops_action_runs validate constraint ops_action_runs_action_check;

-- An integer field is a number field that must also be whole: one reader holds the range rule.
create or replace function ops_internal.get_int(
  doc jsonb, path text, key text, required boolean default false,
  min_value bigint default null, max_value bigint default null)
returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  value jsonb := doc -> key;
begin
  if value is not null and value <> 'null'::jsonb and (pg_catalog.jsonb_typeof(value) <> 'number'
      or (value #>> '{}')::numeric <> pg_catalog.trunc((value #>> '{}')::numeric)) then
    perform ops_internal.invalid(ops_internal.field_name(path, key) || ' must be an integer');
  end if;
  return ops_internal.get_number(doc, path, key, required, min_value, max_value)::bigint;
end;
$$;

-- Policy values, one validator per key. A missing key in a value means that rule is off (see README).
create or replace function ops_internal.validate_policy_system(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(value, 'value', array['enabled', 'reason']);
  perform ops_internal.get_bool(value, 'value', 'enabled', true);
  perform ops_internal.get_text(value, 'value', 'reason', false, null, 500);
end;
$$;

create or replace function ops_internal.validate_policy_auto_approve(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(value, 'value', array['enabled', 'allowed_step_kinds', 'allowed_sources']);
  perform ops_internal.get_bool(value, 'value', 'enabled', true);
  perform ops_internal.get_text_array(value, 'value', 'allowed_step_kinds', false, ops_internal.kind_pattern(), 500);
  perform ops_internal.get_text_array(value, 'value', 'allowed_sources', false, ops_internal.source_pattern(), 5);
end;
$$;

-- A map of numbers keyed by agent or kind: `path` names it in messages.
create or replace function ops_internal.check_limit_map(value jsonb, path text, key_pattern text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  k text;
begin
  perform ops_internal.check_map_keys(value, path, key_pattern);
  for k in select pg_catalog.jsonb_object_keys(value) loop
    perform ops_internal.get_int(value, path, k, true, 0, 1000000);
  end loop;
end;
$$;

create or replace function ops_internal.validate_policy_daily_proposal_limit(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(value, 'value', array['limit', 'per_agent']);
  perform ops_internal.get_int(value, 'value', 'limit', true, 0, 1000000);
  if ops_internal.get_object(value, 'value', 'per_agent') is not null then
    perform ops_internal.check_limit_map(value -> 'per_agent', 'value.per_agent', ops_internal.agent_id_pattern());
  end if;
end;
$$;

create or replace function ops_internal.validate_policy_step_kind_gates(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  k text;
begin
  perform ops_internal.check_map_keys(value, 'value', ops_internal.kind_pattern());
  for k in select pg_catalog.jsonb_object_keys(value) loop
    perform ops_internal.require_object(value -> k, 'value.' || k);
    perform ops_internal.check_keys(value -> k, 'value.' || k, array['daily_limit', 'enabled']);
    perform ops_internal.get_int(value -> k, 'value.' || k, 'daily_limit', false, 0, 1000000);
    perform ops_internal.get_bool(value -> k, 'value.' || k, 'enabled');
  end loop;
end;
$$;

create or replace function ops_internal.validate_policy_max_active_missions(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(value, 'value', array['limit']);
  perform ops_internal.get_int(value, 'value', 'limit', true, 0, 1000000);
end;
$$;

create or replace function ops_internal.validate_policy_worker_policy(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  k text;
begin
  perform ops_internal.validate_worker_settings(value - 'kinds', 'value');
  if ops_internal.get_object(value, 'value', 'kinds') is not null then
    perform ops_internal.check_map_keys(value -> 'kinds', 'value.kinds', ops_internal.kind_pattern());
    for k in select pg_catalog.jsonb_object_keys(value -> 'kinds') loop
      perform ops_internal.validate_worker_settings(value -> 'kinds' -> k, 'value.kinds.' || k);
    end loop;
  end if;
end;
$$;

create or replace function ops_internal.validate_policy_reaction_matrix(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  item jsonb;
  i integer := 0;
  names text[] := '{}'::text[];
  name text;
begin
  perform ops_internal.check_keys(value, 'value', array['enabled', 'patterns']);
  perform ops_internal.get_bool(value, 'value', 'enabled');
  if value -> 'patterns' is null or pg_catalog.jsonb_typeof(value -> 'patterns') <> 'array' then
    perform ops_internal.invalid('value.patterns must be an array');
  end if;
  if pg_catalog.jsonb_array_length(value -> 'patterns') > 100 then
    perform ops_internal.invalid('value.patterns must hold 0 to 100 items');
  end if;
  for item in select e from pg_catalog.jsonb_array_elements(value -> 'patterns') as e loop
    perform ops_internal.validate_reaction_pattern(item, pg_catalog.format('value.patterns[%s]', i));
    name := item ->> 'name';
    if name = any (names) then
      perform ops_internal.invalid(pg_catalog.format('value.patterns[%s].name must be unique (%s repeats)', i, name));
    end if;
    names := names || name;
    i := i + 1;
  end loop;
end;
$$;

-- Whole numbers in an object, each of `keys` optional and within [min_value, max_value].
create or replace function ops_internal.check_int_settings(value jsonb, keys text[], min_value bigint, max_value bigint)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  k text;
begin
  foreach k in array keys loop
    perform ops_internal.get_int(value, 'value', k, false, min_value, max_value);
  end loop;
end;
$$;

create or replace function ops_internal.validate_policy_retention(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(value, 'value', array['events_days', 'missions_days', 'reactions_days',
    'action_runs_days', 'batch_size']);
  perform ops_internal.check_int_settings(value,
    array['events_days', 'missions_days', 'reactions_days', 'action_runs_days'], 1, 36500);
  perform ops_internal.get_int(value, 'value', 'batch_size', false, 1, 100000);
end;
$$;

create or replace function ops_internal.validate_policy_heartbeat(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(value, 'value', array['triggers_budget_ms', 'reactions_budget_ms',
    'recovery_batch', 'reactions_batch']);
  perform ops_internal.check_int_settings(value, array['triggers_budget_ms', 'reactions_budget_ms'], 0, 60000);
  perform ops_internal.check_int_settings(value, array['recovery_batch', 'reactions_batch'], 1, 10000);
end;
$$;

-- worker:<kind>: the per-kind switch, written by people and by the circuit breaker.
create or replace function ops_internal.validate_policy_worker_kind(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(value, 'value', array['enabled', 'reason', 'failures']);
  perform ops_internal.get_bool(value, 'value', 'enabled', true);
  perform ops_internal.get_text(value, 'value', 'reason', false, null, 500);
  perform ops_internal.get_int(value, 'value', 'failures', false, 0, 1000000);
end;
$$;

-- The known keys are the validators above (worker_kind stands for worker:<kind>).
create or replace function ops_internal.policy_keys()
returns text[]
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(pg_catalog.array_agg(
           case when k = 'worker_kind' then 'worker:<kind>' else k end order by k = 'worker_kind', k), '{}')
    from (select pg_catalog.substr(p.proname, 17) as k
            from pg_catalog.pg_proc p
           where p.pronamespace = 'ops_internal'::regnamespace and p.proname like 'validate\_policy\_%') as v;
$$;

create or replace function ops_internal.validate_policy(key text, value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  validator text;
begin
  if key is null then
    perform ops_internal.invalid('key is required');
  end if;
  perform ops_internal.require_object(value, 'value');
  validator := case
    when key ~ ('^worker:' || ops_internal.name_re() || '$') then 'validate_policy_worker_kind'
    when key ~ ops_internal.kind_pattern() and key <> 'worker_kind' then 'validate_policy_' || key
  end;
  if validator is null or pg_catalog.to_regprocedure('ops_internal.' || validator || '(jsonb)') is null then
    perform ops_internal.invalid('key must be one of: ' || pg_catalog.array_to_string(ops_internal.policy_keys(), ', '));
  end if;
  execute pg_catalog.format('select ops_internal.%I($1)', validator) using value;
end;
$$;

create or replace function ops_internal.validate_reaction_pattern(pattern jsonb, path text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.require_object(pattern, path);
  perform ops_internal.check_keys(pattern, path, array['name', 'source', 'tags', 'target', 'type', 'probability',
    'cooldown', 'step_kind', 'payload', 'title']);
  perform ops_internal.get_text(pattern, path, 'name', false, ops_internal.agent_id_pattern());
  perform ops_internal.get_text(pattern, path, 'source', true, '^(\*|' || ops_internal.agent_id_re() || ')$');
  perform ops_internal.get_text_array(pattern, path, 'tags', true, ops_internal.agent_id_pattern(), 20, 1);
  perform ops_internal.get_text(pattern, path, 'target', true, ops_internal.agent_id_pattern());
  perform ops_internal.get_text(pattern, path, 'type', true, ops_internal.kind_pattern());
  perform ops_internal.get_number(pattern, path, 'probability', true, 0, 1);
  perform ops_internal.get_int(pattern, path, 'cooldown', true, 0, 525600);
  perform ops_internal.get_text(pattern, path, 'step_kind', false, ops_internal.kind_pattern());
  perform ops_internal.get_object(pattern, path, 'payload', false, 16384);
  perform ops_internal.get_text(pattern, path, 'title', false, null, 200);
end;
$$;

create or replace function ops_internal.normalize_proposal(proposal jsonb)
returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  steps jsonb;
  step jsonb;
  path text;
  deps jsonb;
  dep jsonb;
  dep_list integer[];
  normalized jsonb := '[]'::jsonb;
  i integer := 0;
  j integer;
begin
  perform ops_internal.require_object(proposal, 'proposal');
  perform ops_internal.check_keys(proposal, '', array['agent_id', 'title', 'steps', 'source', 'description',
    'dedupe_key', 'metadata']);

  steps := proposal -> 'steps';
  if steps is null or steps = 'null'::jsonb then
    perform ops_internal.invalid('steps is required');
  end if;
  if pg_catalog.jsonb_typeof(steps) <> 'array' then
    perform ops_internal.invalid('steps must be an array of {kind, payload?, depends_on?}');
  end if;
  if pg_catalog.jsonb_array_length(steps) not between 1 and 50 then
    perform ops_internal.invalid('steps must hold 1 to 50 steps');
  end if;

  for step in select e from pg_catalog.jsonb_array_elements(steps) as e loop
    path := pg_catalog.format('steps[%s]', i);
    perform ops_internal.require_object(step, path);
    perform ops_internal.check_keys(step, path, array['kind', 'payload', 'depends_on']);
    deps := step -> 'depends_on';
    if deps is null or deps = 'null'::jsonb then
      -- Steps run in order unless told otherwise.
      dep_list := case when i = 0 then '{}'::integer[] else array[i - 1] end;
    else
      if pg_catalog.jsonb_typeof(deps) <> 'array' then
        perform ops_internal.invalid(path || '.depends_on must be an array of earlier step positions');
      end if;
      dep_list := '{}'::integer[];
      j := 0;
      for dep in select e from pg_catalog.jsonb_array_elements(deps) as e loop
        if pg_catalog.jsonb_typeof(dep) <> 'number'
           or (dep #>> '{}')::numeric <> pg_catalog.trunc((dep #>> '{}')::numeric)
           or (dep #>> '{}')::numeric not between 0 and i - 1 then
          perform ops_internal.invalid(pg_catalog.format(
            '%s.depends_on[%s] must be the position of an earlier step (0 to %s)', path, j, i - 1));
        end if;
        if not (dep #>> '{}')::integer = any (dep_list) then
          dep_list := dep_list || (dep #>> '{}')::integer;
        end if;
        j := j + 1;
      end loop;
    end if;
    normalized := normalized || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
      'kind', ops_internal.get_text(step, path, 'kind', true, ops_internal.kind_pattern()),
      'payload', coalesce(ops_internal.get_object(step, path, 'payload', false, 65536), '{}'::jsonb),
      'depends_on', pg_catalog.to_jsonb(dep_list)));
    i := i + 1;
  end loop;

  return pg_catalog.jsonb_build_object(
    'agent_id', ops_internal.get_text(proposal, '', 'agent_id', true, ops_internal.agent_id_pattern()),
    'title', ops_internal.get_text(proposal, '', 'title', true, null, 200),
    'description', ops_internal.get_text(proposal, '', 'description', false, null, 4000),
    'source', coalesce(ops_internal.get_text(proposal, '', 'source', false, ops_internal.source_pattern()), 'api'),
    'dedupe_key', ops_internal.get_text(proposal, '', 'dedupe_key', false, null, 200),
    'metadata', coalesce(ops_internal.get_object(proposal, '', 'metadata', false, 16384), '{}'::jsonb),
    'steps', normalized);
end;
$$;

create or replace function ops_internal.proposal_result(proposal public.ops_mission_proposals, duplicate boolean)
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'proposal_id', proposal.id,
    'status', proposal.status,
    'mission_id', (select m.id from public.ops_missions m where m.proposal_id = proposal.id),
    'reason', case proposal.status
                when 'rejected' then proposal.rejection_reason
                when 'pending' then ops_internal.needs_human(ops_internal.step_kinds(proposal.proposed_steps), proposal.source)
              end,
    'duplicate', duplicate);
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_create_proposal(proposal jsonb)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  input jsonb;
  kinds text[];
  existing public.ops_mission_proposals;
  created public.ops_mission_proposals;
  manual text;
  reason text;
begin
  input := ops_internal.normalize_proposal(ops_create_proposal.proposal);
  perform ops_internal.require_fresh_snapshots();
  kinds := ops_internal.step_kinds(input -> 'steps');

  if input ->> 'dedupe_key' is not null then
    perform ops_internal.lock('dedupe:' || (input ->> 'dedupe_key'));
    select p.* into existing from public.ops_mission_proposals p where p.dedupe_key = input ->> 'dedupe_key';
    if found then
      return ops_internal.proposal_result(existing, true);
    end if;
  end if;

  manual := ops_internal.needs_human(kinds, input ->> 'source');
  reason := ops_internal.gate_reason(input ->> 'agent_id', kinds, true, manual is null);

  insert into public.ops_mission_proposals
    (agent_id, title, description, proposed_steps, source, dedupe_key, metadata)
  values (input ->> 'agent_id', input ->> 'title', input ->> 'description', input -> 'steps',
          input ->> 'source', input ->> 'dedupe_key', input -> 'metadata')
  returning * into created;

  if reason is not null then
    update public.ops_mission_proposals p
       set status = 'rejected', rejection_reason = reason, decided_by = 'gate', decided_at = pg_catalog.now()
     where p.id = created.id
    returning * into created;
  elsif manual is null then
    update public.ops_mission_proposals p
       set status = 'accepted', auto_approved = true, decided_by = 'auto_approve', decided_at = pg_catalog.now()
     where p.id = created.id
    returning * into created;
    perform ops_internal.create_mission(created);
  end if;
  return ops_internal.proposal_result(created, false);
end;
$$;

revoke execute on function public.ops_create_proposal(jsonb) from public, anon, authenticated;
grant execute on function public.ops_create_proposal(jsonb) to service_role;

create or replace function public.ops_approve_proposal(proposal_id bigint, decided_by text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  who text := ops_internal.check_text(ops_approve_proposal.decided_by, 'decided_by', 200);
  proposal public.ops_mission_proposals;
  kinds text[];
  reason text;
begin
  perform ops_internal.require_fresh_snapshots();
  proposal := ops_internal.pending_proposal(ops_approve_proposal.proposal_id);
  kinds := ops_internal.step_kinds(proposal.proposed_steps);
  reason := ops_internal.gate_reason(proposal.agent_id, kinds, false, true);
  if reason is not null then
    update public.ops_mission_proposals p
       set status = 'rejected', rejection_reason = reason, decided_by = who, decided_at = pg_catalog.now()
     where p.id = proposal.id
    returning * into proposal;
  else
    update public.ops_mission_proposals p
       set status = 'accepted', decided_by = who, decided_at = pg_catalog.now()
     where p.id = proposal.id
    returning * into proposal;
    perform ops_internal.create_mission(proposal);
  end if;
  return ops_internal.proposal_result(proposal, false);
end;
$$;

revoke execute on function public.ops_approve_proposal(bigint, text) from public, anon, authenticated;
grant execute on function public.ops_approve_proposal(bigint, text) to service_role;

create or replace function public.ops_list_proposals(
  status text default null, agent_id text default null, max_rows integer default 50)
returns jsonb
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
           'id', p.id, 'agent_id', p.agent_id, 'title', p.title, 'description', p.description,
           'status', p.status, 'source', p.source, 'steps', p.proposed_steps, 'dedupe_key', p.dedupe_key,
           'reason', case p.status
                       when 'rejected' then p.rejection_reason
                       when 'pending' then ops_internal.needs_human(ops_internal.step_kinds(p.proposed_steps), p.source)
                     end,
           'auto_approved', p.auto_approved, 'decided_by', p.decided_by, 'decided_at', p.decided_at,
           'mission_id', (select m.id from public.ops_missions m where m.proposal_id = p.id),
           'metadata', p.metadata, 'created_at', p.created_at) order by p.id desc), '[]'::jsonb)
    from (select x.* from public.ops_mission_proposals x
           where (ops_list_proposals.status is null or x.status = ops_list_proposals.status)
             and (ops_list_proposals.agent_id is null or x.agent_id = ops_list_proposals.agent_id)
           order by x.id desc
           limit ops_internal.check_max_rows(ops_list_proposals.max_rows)) as p;
$$;

revoke execute on function public.ops_list_proposals(text, text, integer) from public, anon, authenticated;
grant execute on function public.ops_list_proposals(text, text, integer) to service_role;

create or replace function public.ops_preview_gates(proposal_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  proposal public.ops_mission_proposals;
  reason text;
begin
  if ops_preview_gates.proposal_id is null then
    perform ops_internal.invalid('proposal_id is required');
  end if;
  select p.* into proposal from public.ops_mission_proposals p where p.id = ops_preview_gates.proposal_id;
  if not found then
    perform ops_internal.not_found(pg_catalog.format('proposal %s not found', ops_preview_gates.proposal_id));
  end if;
  if proposal.status <> 'pending' then
    return pg_catalog.jsonb_build_object('proposal_id', proposal.id, 'status', proposal.status, 'passes', null,
      'reason', pg_catalog.format('proposal %s is %s, not pending', proposal.id, proposal.status));
  end if;
  reason := ops_internal.gate_reason(proposal.agent_id, ops_internal.step_kinds(proposal.proposed_steps), false, true);
  return pg_catalog.jsonb_build_object('proposal_id', proposal.id, 'status', proposal.status,
    'passes', reason is null, 'reason', reason);
end;
$$;

revoke execute on function public.ops_preview_gates(bigint) from public, anon, authenticated;
grant execute on function public.ops_preview_gates(bigint) to service_role;

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
  type_name := ops_internal.get_text(event, '', 'type', true, ops_internal.event_type_pattern());
  entity := pg_catalog.split_part(type_name, ':', 1);
  if entity in ('proposal', 'mission', 'step', 'reaction', 'trigger', 'policy', 'heartbeat') then
    perform ops_internal.invalid(pg_catalog.format(
      'type %s uses the reserved entity %s: those events come only from state changes', type_name, entity));
  end if;
  tags := ops_internal.get_text_array(event, '', 'tags', false, ops_internal.agent_id_pattern(), 20);
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
    ops_internal.get_text(event, '', 'agent_id', true, ops_internal.agent_id_pattern()),
    coalesce(ops_internal.get_text(event, '', 'title', false, null, 200), type_name),
    coalesce(ops_internal.get_object(event, '', 'payload', false, 65536), '{}'::jsonb),
    tags,
    proposal,
    mission,
    step,
    coalesce(ops_internal.get_text(event, '', 'source', false, ops_internal.agent_id_pattern()), 'api'),
    ops_internal.get_text(event, '', 'summary', false, null, 4000));
  return (select pg_catalog.jsonb_build_object('event_id', e.id, 'type', e.type, 'tags', e.tags,
                                               'created_at', e.created_at)
            from public.ops_agent_events e where e.id = new_id);
end;
$$;

revoke execute on function public.ops_emit_event(jsonb) from public, anon, authenticated;
grant execute on function public.ops_emit_event(jsonb) to service_role;

select ops_internal.revoke_api_execute();
