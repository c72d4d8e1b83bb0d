-- worker_policy gains run-time limits and the circuit breaker's cool-down (global, per kind overridable):
--   timeout_seconds               the longest one attempt may run (default 3600); past it the worker gives up
--                                 and stale recovery fails the attempt, whatever its lease says
--   breaker_cooldown_seconds      how long an opened breaker waits before one probe step (default 600)
--   breaker_cooldown_max_seconds  the cap as the cool-down doubles on each re-open (default 21600)

create or replace function ops_internal.validate_worker_settings(value jsonb, path text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  base bigint;
  cap bigint;
begin
  perform ops_internal.require_object(value, path);
  perform ops_internal.check_keys(value, path, array['lease_seconds', 'max_attempts', 'backoff_base_seconds',
    'backoff_max_seconds', 'circuit_breaker_threshold', 'timeout_seconds', 'breaker_cooldown_seconds',
    'breaker_cooldown_max_seconds']);
  perform ops_internal.get_int(value, path, 'lease_seconds', false, 1, 86400);
  perform ops_internal.get_int(value, path, 'max_attempts', false, 1, 100);
  base := ops_internal.get_int(value, path, 'backoff_base_seconds', false, 0, 86400);
  cap := ops_internal.get_int(value, path, 'backoff_max_seconds', false, 0, 604800);
  perform ops_internal.get_int(value, path, 'circuit_breaker_threshold', false, 1, 1000);
  perform ops_internal.get_int(value, path, 'timeout_seconds', false, 1, 604800);
  if base is not null and cap is not null and cap < base then
    perform ops_internal.invalid(path || '.backoff_max_seconds must be at least backoff_base_seconds');
  end if;
  base := ops_internal.get_int(value, path, 'breaker_cooldown_seconds', false, 1, 604800);
  cap := ops_internal.get_int(value, path, 'breaker_cooldown_max_seconds', false, 1, 2592000);
  if base is not null and cap is not null and cap < base then
    perform ops_internal.invalid(path || '.breaker_cooldown_max_seconds must be at least breaker_cooldown_seconds');
  end if;
end;
$$;

-- One worker_policy setting for a step kind: worker_policy.kinds.<kind>.<name>, else worker_policy.<name>,
-- else the built-in default.
create or replace function ops_internal.worker_setting(policy jsonb, kind text, name text)
returns integer
language sql
immutable
set search_path = pg_catalog, pg_temp
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
      when 'timeout_seconds' then 3600
      when 'breaker_cooldown_seconds' then 600
      when 'breaker_cooldown_max_seconds' then 21600
    end);
$$;
