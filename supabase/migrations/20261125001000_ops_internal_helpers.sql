-- Shared internals of the ops_* functions: input errors, typed readers for JSON input, policy reads.
--
-- Errors use stable SQLSTATEs that PostgREST turns into HTTP statuses:
--   PT400 invalid input (the message names the field and the rule), PT404 not found, PT409 conflict.
-- Every public function raises before writing, or raises and rolls its whole transaction back, so an
-- error never leaves anything half-written.

create or replace function ops_internal.invalid(message text)
returns void
language plpgsql
set search_path = ''
as $$
begin
  raise exception using errcode = 'PT400', message = message;
end;
$$;

create or replace function ops_internal.not_found(message text)
returns void
language plpgsql
set search_path = ''
as $$
begin
  raise exception using errcode = 'PT404', message = message;
end;
$$;

create or replace function ops_internal.conflict(message text, hint text default null)
returns void
language plpgsql
set search_path = ''
as $$
begin
  if hint is null then
    raise exception using errcode = 'PT409', message = message;
  end if;
  raise exception using errcode = 'PT409', message = message, hint = hint;
end;
$$;

-- The dotted name of a field for messages: 'steps[2]' + 'kind' -> 'steps[2].kind'.
create or replace function ops_internal.field_name(path text, key text)
returns text
language sql
immutable
set search_path = ''
as $$
  select case when coalesce(path, '') = '' then key else path || '.' || key end;
$$;

-- Refuses keys a caller did not mean to send, so typos surface instead of being ignored.
create or replace function ops_internal.check_keys(doc jsonb, path text, allowed text[])
returns void
language plpgsql
set search_path = ''
as $$
declare
  unknown text;
begin
  select k into unknown from pg_catalog.jsonb_object_keys(doc) as k where k <> all (allowed) order by k limit 1;
  if unknown is not null then
    perform ops_internal.invalid(pg_catalog.format('%s is not a known field (expected one of: %s)',
      ops_internal.field_name(path, unknown), pg_catalog.array_to_string(allowed, ', ')));
  end if;
end;
$$;

create or replace function ops_internal.require_object(value jsonb, name text)
returns jsonb
language plpgsql
set search_path = ''
as $$
begin
  if value is null or pg_catalog.jsonb_typeof(value) <> 'object' then
    perform ops_internal.invalid(name || ' must be a JSON object');
  end if;
  return value;
end;
$$;

-- A required text argument: present, not blank, within max_length, matching pattern when given.
create or replace function ops_internal.check_text(
  value text, name text, max_length integer, pattern text default null, min_length integer default 1)
returns text
language plpgsql
set search_path = ''
as $$
begin
  if value is null then
    perform ops_internal.invalid(name || ' is required');
  end if;
  if pattern is not null and value !~ pattern then
    perform ops_internal.invalid(name || ' must match ' || pattern);
  end if;
  if max_length is null and pg_catalog.char_length(pg_catalog.btrim(value)) < min_length then
    perform ops_internal.invalid(name || ' must not be blank');
  end if;
  if pg_catalog.char_length(pg_catalog.btrim(value)) < min_length or pg_catalog.char_length(value) > max_length then
    perform ops_internal.invalid(pg_catalog.format('%s must be %s to %s characters', name, min_length, max_length));
  end if;
  return value;
end;
$$;

-- Typed readers: doc->key checked for type, shape and range. JSON null counts as absent.
create or replace function ops_internal.get_text(
  doc jsonb, path text, key text, required boolean default false,
  pattern text default null, max_length integer default null, min_length integer default 1)
returns text
language plpgsql
set search_path = ''
as $$
declare
  name text := ops_internal.field_name(path, key);
  value jsonb := doc -> key;
begin
  if value is null or value = 'null'::jsonb then
    if required then
      perform ops_internal.invalid(name || ' is required');
    end if;
    return null;
  end if;
  if pg_catalog.jsonb_typeof(value) <> 'string' then
    perform ops_internal.invalid(name || ' must be a string');
  end if;
  return ops_internal.check_text(value #>> '{}', name, max_length, pattern, min_length);
end;
$$;

create or replace function ops_internal.get_int(
  doc jsonb, path text, key text, required boolean default false,
  min_value bigint default null, max_value bigint default null)
returns bigint
language plpgsql
set search_path = ''
as $$
declare
  name text := ops_internal.field_name(path, key);
  value jsonb := doc -> key;
  result numeric;
begin
  if value is null or value = 'null'::jsonb then
    if required then
      perform ops_internal.invalid(name || ' is required');
    end if;
    return null;
  end if;
  if pg_catalog.jsonb_typeof(value) <> 'number' or (value #>> '{}')::numeric <> pg_catalog.trunc((value #>> '{}')::numeric) then
    perform ops_internal.invalid(name || ' must be an integer');
  end if;
  result := (value #>> '{}')::numeric;
  if (min_value is not null and result < min_value) or (max_value is not null and result > max_value) then
    perform ops_internal.invalid(pg_catalog.format('%s must be from %s to %s', name,
      coalesce(min_value::text, '-infinity'), coalesce(max_value::text, 'infinity')));
  end if;
  return result::bigint;
end;
$$;

create or replace function ops_internal.get_number(
  doc jsonb, path text, key text, required boolean default false,
  min_value numeric default null, max_value numeric default null)
returns numeric
language plpgsql
set search_path = ''
as $$
declare
  name text := ops_internal.field_name(path, key);
  value jsonb := doc -> key;
  result numeric;
begin
  if value is null or value = 'null'::jsonb then
    if required then
      perform ops_internal.invalid(name || ' is required');
    end if;
    return null;
  end if;
  if pg_catalog.jsonb_typeof(value) <> 'number' then
    perform ops_internal.invalid(name || ' must be a number');
  end if;
  result := (value #>> '{}')::numeric;
  if (min_value is not null and result < min_value) or (max_value is not null and result > max_value) then
    perform ops_internal.invalid(pg_catalog.format('%s must be from %s to %s', name,
      coalesce(min_value::text, '-infinity'), coalesce(max_value::text, 'infinity')));
  end if;
  return result;
end;
$$;

create or replace function ops_internal.get_bool(doc jsonb, path text, key text, required boolean default false)
returns boolean
language plpgsql
set search_path = ''
as $$
declare
  name text := ops_internal.field_name(path, key);
  value jsonb := doc -> key;
begin
  if value is null or value = 'null'::jsonb then
    if required then
      perform ops_internal.invalid(name || ' is required');
    end if;
    return null;
  end if;
  if pg_catalog.jsonb_typeof(value) <> 'boolean' then
    perform ops_internal.invalid(name || ' must be true or false');
  end if;
  return (value #>> '{}')::boolean;
end;
$$;

create or replace function ops_internal.get_object(
  doc jsonb, path text, key text, required boolean default false, max_bytes integer default null)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  name text := ops_internal.field_name(path, key);
  value jsonb := doc -> key;
begin
  if value is null or value = 'null'::jsonb then
    if required then
      perform ops_internal.invalid(name || ' is required');
    end if;
    return null;
  end if;
  if pg_catalog.jsonb_typeof(value) <> 'object' then
    perform ops_internal.invalid(name || ' must be a JSON object');
  end if;
  if max_bytes is not null and pg_catalog.octet_length(value::text) > max_bytes then
    perform ops_internal.invalid(pg_catalog.format('%s must be at most %s bytes of JSON', name, max_bytes));
  end if;
  return value;
end;
$$;

-- An array of strings, each matching `pattern`; duplicates removed, order kept.
create or replace function ops_internal.get_text_array(
  doc jsonb, path text, key text, required boolean default false,
  pattern text default null, max_items integer default 100, min_items integer default 0)
returns text[]
language plpgsql
set search_path = ''
as $$
declare
  name text := ops_internal.field_name(path, key);
  value jsonb := doc -> key;
  item jsonb;
  i integer := 0;
  result text[] := '{}'::text[];
begin
  if value is null or value = 'null'::jsonb then
    if required then
      perform ops_internal.invalid(name || ' is required');
    end if;
    return null;
  end if;
  if pg_catalog.jsonb_typeof(value) <> 'array' then
    perform ops_internal.invalid(name || ' must be an array of strings');
  end if;
  if pg_catalog.jsonb_array_length(value) not between min_items and max_items then
    perform ops_internal.invalid(pg_catalog.format('%s must hold %s to %s items', name, min_items, max_items));
  end if;
  for item in select e from pg_catalog.jsonb_array_elements(value) as e loop
    if pg_catalog.jsonb_typeof(item) <> 'string' then
      perform ops_internal.invalid(pg_catalog.format('%s[%s] must be a string', name, i));
    end if;
    if pattern is not null and (item #>> '{}') !~ pattern then
      perform ops_internal.invalid(pg_catalog.format('%s[%s] must match %s', name, i, pattern));
    end if;
    if not (item #>> '{}') = any (result) then
      result := result || (item #>> '{}');
    end if;
    i := i + 1;
  end loop;
  return result;
end;
$$;

-- Policy values. A missing key means that rule is off, except the engine settings, which fall back to the
-- built-ins documented in README (the seed writes the same numbers).
create or replace function ops_internal.policy(key text)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select coalesce((select p.value from public.ops_policy p where p.key = policy.key), '{}'::jsonb);
$$;

create or replace function ops_internal.system_enabled()
returns boolean
language sql
stable
set search_path = ''
as $$
  select coalesce((ops_internal.policy('system') ->> 'enabled')::boolean, true);
$$;

-- One worker_policy setting for a step kind: worker_policy.kinds.<kind>.<name>, else worker_policy.<name>,
-- else the built-in default.
create or replace function ops_internal.worker_setting(policy jsonb, kind text, name text)
returns integer
language sql
immutable
set search_path = ''
as $$
  select coalesce(
    (policy -> 'kinds' -> kind ->> name)::integer,
    (policy ->> name)::integer,
    case name
      when 'lease_seconds' then 1800
      when 'max_attempts' then 3
      when 'backoff_base_seconds' then 10
      when 'backoff_max_seconds' then 3600
      when 'circuit_breaker_threshold' then 3
    end);
$$;

create or replace function ops_internal.heartbeat_setting(name text)
returns integer
language sql
stable
set search_path = ''
as $$
  select coalesce(
    (ops_internal.policy('heartbeat') ->> name)::integer,
    case name
      when 'triggers_budget_ms' then 4000
      when 'reactions_budget_ms' then 3000
      when 'recovery_batch' then 100
      when 'reactions_batch' then 50
    end);
$$;

-- Start of the current UTC day: daily limits and cap gates count from here.
create or replace function ops_internal.utc_day_start()
returns timestamptz
language sql
stable
set search_path = ''
as $$
  select pg_catalog.date_trunc('day', pg_catalog.now() at time zone 'UTC') at time zone 'UTC';
$$;

-- A transaction-scoped advisory lock on a named resource (gates, dedupe keys, cooldowns).
create or replace function ops_internal.lock(resource text)
returns void
language sql
set search_path = ''
as $$
  select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('agent-ops:' || resource, 0));
$$;

-- Internals are never callable by an API role. Each migration that adds internal functions calls this.
create or replace function ops_internal.revoke_api_execute()
returns void
language plpgsql
set search_path = ''
as $$
declare
  fn regprocedure;
begin
  for fn in
    select p.oid::regprocedure from pg_catalog.pg_proc p where p.pronamespace = 'ops_internal'::regnamespace
  loop
    execute pg_catalog.format('revoke all on function %s from public, anon, authenticated, service_role', fn);
  end loop;
end;
$$;

select ops_internal.revoke_api_execute();
