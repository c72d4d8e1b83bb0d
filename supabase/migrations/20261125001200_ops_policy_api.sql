-- Policy read/write: ops_set_policy validates every known key before it writes, ops_get_policy reads one.
-- Known keys: system, auto_approve, daily_proposal_limit, step_kind_gates, max_active_missions,
-- worker_policy, reaction_matrix, retention, heartbeat, and worker:<kind> (per-kind enable flags, written by
-- the circuit breaker and by people re-enabling a kind).

create or replace function ops_internal.policy_keys()
returns text[]
language sql
immutable
set search_path = ''
as $$
  select array['system', 'auto_approve', 'daily_proposal_limit', 'step_kind_gates', 'max_active_missions',
               'worker_policy', 'reaction_matrix', 'retention', 'heartbeat', 'worker:<kind>'];
$$;

-- Each value of an object keyed by step kind or agent id: keys checked against `key_pattern`.
create or replace function ops_internal.check_map_keys(value jsonb, path text, key_pattern text)
returns void
language plpgsql
set search_path = ''
as $$
declare
  k text;
begin
  for k in select pg_catalog.jsonb_object_keys(value) loop
    if k !~ key_pattern then
      perform ops_internal.invalid(pg_catalog.format('%s has key %s, which must match %s', path,
        pg_catalog.to_jsonb(k), key_pattern));
    end if;
  end loop;
end;
$$;

create or replace function ops_internal.validate_worker_settings(value jsonb, path text)
returns void
language plpgsql
set search_path = ''
as $$
declare
  base bigint;
  cap bigint;
begin
  perform ops_internal.require_object(value, path);
  perform ops_internal.check_keys(value, path, array['lease_seconds', 'max_attempts', 'backoff_base_seconds',
    'backoff_max_seconds', 'circuit_breaker_threshold']);
  perform ops_internal.get_int(value, path, 'lease_seconds', false, 1, 86400);
  perform ops_internal.get_int(value, path, 'max_attempts', false, 1, 100);
  base := ops_internal.get_int(value, path, 'backoff_base_seconds', false, 0, 86400);
  cap := ops_internal.get_int(value, path, 'backoff_max_seconds', false, 0, 604800);
  perform ops_internal.get_int(value, path, 'circuit_breaker_threshold', false, 1, 1000);
  if base is not null and cap is not null and cap < base then
    perform ops_internal.invalid(path || '.backoff_max_seconds must be at least backoff_base_seconds');
  end if;
end;
$$;

create or replace function ops_internal.validate_reaction_pattern(pattern jsonb, path text)
returns void
language plpgsql
set search_path = ''
as $$
begin
  perform ops_internal.require_object(pattern, path);
  perform ops_internal.check_keys(pattern, path, array['name', 'source', 'tags', 'target', 'type', 'probability',
    'cooldown', 'step_kind', 'payload', 'title']);
  perform ops_internal.get_text(pattern, path, 'name', false, '^[a-z0-9][a-z0-9_.:-]{0,63}$');
  perform ops_internal.get_text(pattern, path, 'source', true, '^(\*|[a-z0-9][a-z0-9_.:-]{0,63})$');
  perform ops_internal.get_text_array(pattern, path, 'tags', true, '^[a-z0-9][a-z0-9_.:-]{0,63}$', 20, 1);
  perform ops_internal.get_text(pattern, path, 'target', true, '^[a-z0-9][a-z0-9_.:-]{0,63}$');
  perform ops_internal.get_text(pattern, path, 'type', true, '^[a-z][a-z0-9_]{0,63}$');
  perform ops_internal.get_number(pattern, path, 'probability', true, 0, 1);
  perform ops_internal.get_int(pattern, path, 'cooldown', true, 0, 525600);
  perform ops_internal.get_text(pattern, path, 'step_kind', false, '^[a-z][a-z0-9_]{0,63}$');
  perform ops_internal.get_object(pattern, path, 'payload', false, 16384);
  perform ops_internal.get_text(pattern, path, 'title', false, null, 200);
end;
$$;

create or replace function ops_internal.validate_policy(key text, value jsonb)
returns void
language plpgsql
set search_path = ''
as $$
declare
  kind_re constant text := '^[a-z][a-z0-9_]{0,63}$';
  agent_re constant text := '^[a-z0-9][a-z0-9_.:-]{0,63}$';
  k text;
  item jsonb;
  i integer := 0;
  names text[] := '{}'::text[];
  name text;
begin
  if key is null then
    perform ops_internal.invalid('key is required');
  end if;
  perform ops_internal.require_object(value, 'value');
  case
    when key = 'system' then
      perform ops_internal.check_keys(value, 'value', array['enabled', 'reason']);
      perform ops_internal.get_bool(value, 'value', 'enabled', true);
      perform ops_internal.get_text(value, 'value', 'reason', false, null, 500);
    when key = 'auto_approve' then
      perform ops_internal.check_keys(value, 'value', array['enabled', 'allowed_step_kinds', 'allowed_sources']);
      perform ops_internal.get_bool(value, 'value', 'enabled', true);
      perform ops_internal.get_text_array(value, 'value', 'allowed_step_kinds', false, kind_re, 500);
      perform ops_internal.get_text_array(value, 'value', 'allowed_sources', false,
        '^(api|trigger|reaction|agent|human)$', 5);
    when key = 'daily_proposal_limit' then
      perform ops_internal.check_keys(value, 'value', array['limit', 'per_agent']);
      perform ops_internal.get_int(value, 'value', 'limit', true, 0, 1000000);
      if ops_internal.get_object(value, 'value', 'per_agent') is not null then
        perform ops_internal.check_map_keys(value -> 'per_agent', 'value.per_agent', agent_re);
        for k in select pg_catalog.jsonb_object_keys(value -> 'per_agent') loop
          perform ops_internal.get_int(value -> 'per_agent', 'value.per_agent', k, true, 0, 1000000);
        end loop;
      end if;
    when key = 'step_kind_gates' then
      perform ops_internal.check_map_keys(value, 'value', kind_re);
      for k in select pg_catalog.jsonb_object_keys(value) loop
        perform ops_internal.require_object(value -> k, 'value.' || k);
        perform ops_internal.check_keys(value -> k, 'value.' || k, array['daily_limit', 'enabled']);
        perform ops_internal.get_int(value -> k, 'value.' || k, 'daily_limit', false, 0, 1000000);
        perform ops_internal.get_bool(value -> k, 'value.' || k, 'enabled');
      end loop;
    when key = 'max_active_missions' then
      perform ops_internal.check_keys(value, 'value', array['limit']);
      perform ops_internal.get_int(value, 'value', 'limit', true, 0, 1000000);
    when key = 'worker_policy' then
      perform ops_internal.validate_worker_settings(value - 'kinds', 'value');
      if ops_internal.get_object(value, 'value', 'kinds') is not null then
        perform ops_internal.check_map_keys(value -> 'kinds', 'value.kinds', kind_re);
        for k in select pg_catalog.jsonb_object_keys(value -> 'kinds') loop
          perform ops_internal.validate_worker_settings(value -> 'kinds' -> k, 'value.kinds.' || k);
        end loop;
      end if;
    when key = 'reaction_matrix' then
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
    when key = 'retention' then
      perform ops_internal.check_keys(value, 'value', array['events_days', 'missions_days', 'reactions_days',
        'action_runs_days', 'batch_size']);
      perform ops_internal.get_int(value, 'value', 'events_days', false, 1, 36500);
      perform ops_internal.get_int(value, 'value', 'missions_days', false, 1, 36500);
      perform ops_internal.get_int(value, 'value', 'reactions_days', false, 1, 36500);
      perform ops_internal.get_int(value, 'value', 'action_runs_days', false, 1, 36500);
      perform ops_internal.get_int(value, 'value', 'batch_size', false, 1, 100000);
    when key = 'heartbeat' then
      perform ops_internal.check_keys(value, 'value', array['triggers_budget_ms', 'reactions_budget_ms',
        'recovery_batch', 'reactions_batch']);
      perform ops_internal.get_int(value, 'value', 'triggers_budget_ms', false, 0, 60000);
      perform ops_internal.get_int(value, 'value', 'reactions_budget_ms', false, 0, 60000);
      perform ops_internal.get_int(value, 'value', 'recovery_batch', false, 1, 10000);
      perform ops_internal.get_int(value, 'value', 'reactions_batch', false, 1, 10000);
    when key ~ '^worker:[a-z][a-z0-9_]{0,63}$' then
      perform ops_internal.check_keys(value, 'value', array['enabled', 'reason', 'failures']);
      perform ops_internal.get_bool(value, 'value', 'enabled', true);
      perform ops_internal.get_text(value, 'value', 'reason', false, null, 500);
      perform ops_internal.get_int(value, 'value', 'failures', false, 0, 1000000);
    else
      perform ops_internal.invalid('key must be one of: '
        || pg_catalog.array_to_string(ops_internal.policy_keys(), ', '));
  end case;
end;
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_set_policy(key text, value jsonb, updated_by text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  previous jsonb;
  saved public.ops_policy;
  who text;
begin
  perform ops_internal.validate_policy(ops_set_policy.key, ops_set_policy.value);
  who := ops_internal.check_text(ops_set_policy.updated_by, 'updated_by', 200);

  select p.value into previous from public.ops_policy p where p.key = ops_set_policy.key for update;
  insert into public.ops_policy as p (key, value, updated_by)
  values (ops_set_policy.key, ops_set_policy.value, who)
  on conflict (key) do update set value = excluded.value, updated_by = excluded.updated_by, updated_at = pg_catalog.now()
  returning p.* into saved;

  perform ops_internal.emit_event(
    'policy:updated',
    'system',
    pg_catalog.format('Policy %s updated by %s', saved.key, who),
    pg_catalog.jsonb_build_object('key', saved.key, 'value', saved.value, 'previous', previous, 'updated_by', who),
    case
      when saved.key = 'system' and (saved.value ->> 'enabled')::boolean is false then array[saved.key, 'warning']
      else array[saved.key]
    end);
  return pg_catalog.jsonb_build_object('key', saved.key, 'value', saved.value, 'updated_at', saved.updated_at,
    'updated_by', saved.updated_by);
end;
$$;

revoke execute on function public.ops_set_policy(text, jsonb, text) from public, anon, authenticated;
grant execute on function public.ops_set_policy(text, jsonb, text) to service_role;

create or replace function public.ops_get_policy(key text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  found public.ops_policy;
begin
  if ops_get_policy.key is null
     or not (ops_get_policy.key = any (ops_internal.policy_keys())
             or ops_get_policy.key ~ '^worker:[a-z][a-z0-9_]{0,63}$') then
    perform ops_internal.invalid('key must be one of: '
      || pg_catalog.array_to_string(ops_internal.policy_keys(), ', '));
  end if;
  select p.* into found from public.ops_policy p where p.key = ops_get_policy.key;
  return pg_catalog.jsonb_build_object('key', ops_get_policy.key, 'value', found.value,
    'updated_at', found.updated_at, 'updated_by', found.updated_by);
end;
$$;

revoke execute on function public.ops_get_policy(text) from public, anon, authenticated;
grant execute on function public.ops_get_policy(text) to service_role;
