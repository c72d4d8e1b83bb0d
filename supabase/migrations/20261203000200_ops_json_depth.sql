-- JSON nesting is bounded: no input may nest arrays and objects more than 64 levels deep.
--
-- Postgres stores far deeper documents, but the clients that read them back do not: Python's json module
-- gives up near 1,000 levels, and a 12 KiB payload of 3,000 nested arrays fits every size limit. So every
-- input refuses it with PT400 naming the field: proposals (steps, payloads, metadata), events, policy values
-- (all read through ops_internal.require_object) and step outputs (a trigger on the column, whichever function
-- writes it). jsonb_path_exists walks the document in C and stops at the first item that deep.

create or replace function ops_internal.max_json_depth()
returns integer
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select 64;
$$;

-- Whether `value` holds an array or object nested more than `max_depth` levels deep (the top level is 1).
create or replace function ops_internal.json_too_deep(value jsonb, max_depth integer default 64)
returns boolean
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select case
    when max_depth < 1 then pg_catalog.jsonb_typeof(value) in ('object', 'array')
    else pg_catalog.jsonb_path_exists(value, pg_catalog.format(
      'strict $.**{%s} ? (@.type() == "object" || @.type() == "array")', max_depth)::pg_catalog.jsonpath)
  end;
$$;

-- Raises PT400 when `value` nests too deep, naming the field that holds the excess: up to three object keys
-- down, through array elements that are objects (`proposal.steps[0].payload`).
create or replace function ops_internal.check_json_depth(value jsonb, name text)
returns void
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  limit_depth constant integer := ops_internal.max_json_depth();
  path text := name;
  node jsonb := value;
  remaining integer := limit_depth;
  child jsonb;
  step text;
begin
  if value is null or not pg_catalog.jsonb_path_exists(value,
      'strict $.**{64} ? (@.type() == "object" || @.type() == "array")') then
    return;
  end if;
  for level in 1..3 loop
    remaining := remaining - 1;
    if pg_catalog.jsonb_typeof(node) = 'object' then
      select '.' || e.key, e.value into step, child
        from pg_catalog.jsonb_each(node) as e
       where ops_internal.json_too_deep(e.value, remaining)
       order by e.key limit 1;
    elsif pg_catalog.jsonb_typeof(node) = 'array' then
      select '[' || (e.n - 1) || ']', e.value into step, child
        from pg_catalog.jsonb_array_elements(node) with ordinality as e(value, n)
       where pg_catalog.jsonb_typeof(e.value) = 'object' and ops_internal.json_too_deep(e.value, remaining)
       order by e.n limit 1;
    end if;
    exit when child is null;
    path := path || step;
    node := child;
    child := null;
  end loop;
  perform ops_internal.invalid(pg_catalog.format(
    '%s must not nest arrays and objects more than %s levels deep', path, limit_depth));
end;
$$;

-- Every JSON input is read through require_object first, so the depth check goes here.
create or replace function ops_internal.require_object(value jsonb, name text)
returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if value is null or pg_catalog.jsonb_typeof(value) <> 'object' then
    perform ops_internal.invalid(name || ' must be a JSON object');
  end if;
  perform ops_internal.check_json_depth(value, name);
  return value;
end;
$$;

-- Step outputs may be any JSON value, so they are checked where they are written. The WHEN clause keeps the
-- common case free of any function call.
create or replace function ops_internal.refuse_deep_output()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_json_depth(new.output, 'output');
  return new;
end;
$$;

create trigger ops_mission_steps_output_depth
  before update of output on public.ops_mission_steps
  for each row
  when (pg_catalog.jsonb_path_exists(new.output, 'strict $.**{64} ? (@.type() == "object" || @.type() == "array")'))
  execute function ops_internal.refuse_deep_output();

select ops_internal.revoke_api_execute();
