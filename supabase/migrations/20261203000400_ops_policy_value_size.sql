-- A policy value is at most 256 KiB of JSON, whatever its key.
--
-- Each key's rules bound its lists, but not every map (step_kind_gates, per_agent, worker_policy.kinds), and
-- every gate check reads these values: an unbounded one slows the loop and lets a form post megabytes. The
-- console's body cap for the policy editor follows this number (agent_ops/console/app.py).

create or replace function ops_internal.max_policy_bytes()
returns integer
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select 262144;
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_set_policy(key text, value jsonb, updated_by text)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  previous jsonb;
  saved public.ops_policy;
  who text;
begin
  if pg_catalog.octet_length(ops_set_policy.value::text) > ops_internal.max_policy_bytes() then
    perform ops_internal.invalid(pg_catalog.format('value must be at most %s bytes of JSON',
      ops_internal.max_policy_bytes()));
  end if;
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
