-- Policy `notifications`: where notifications go and which events each sink wants.
--
--   {"enabled": true, "max_attempts": 8, "retain_days": 7,
--    "sinks": [{"name": "ops-slack", "url_env": "SLACK_WEBHOOK_URL", "format": "slack",
--               "types": ["mission:failed"], "tags": ["warning"], "per_minute": 20}]}
--
-- A sink wants an event when the event's type is in `types` or one of its tags is in `tags`. With neither,
-- it wants the defaults of ops_internal.notification_default_types(). The type `proposal:pending` stands for
-- a proposal:created event whose proposal still waits for a person when the outbox is filled. `format` is
-- slack, discord or json (the default); `per_minute` caps deliveries to the sink (a token bucket);
-- `enabled: false` mutes one sink. A sink never holds its URL: `url_env` names the environment variable of
-- the deliverer that does, because policy values are readable by service_role, shown in the console and
-- copied into policy:updated events.
--
-- Each sink starts at the end of the event stream when it first appears (or is enabled again): it hears
-- about what happens from then on, never the history. A trigger on ops_policy keeps
-- ops_notification_cursors in step with the sinks.

create or replace function ops_internal.notification_default_types()
returns text[]
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select array['proposal:pending', 'worker:circuit_open', 'queue:stalled', 'heartbeat:failed', 'mission:failed'];
$$;

-- An environment variable name: what url_env holds, never a URL.
create or replace function ops_internal.env_name_pattern()
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select '^[A-Za-z_][A-Za-z0-9_]{0,127}$';
$$;

create or replace function ops_internal.validate_notification_sink(sink jsonb, path text)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  secret_key text;
begin
  perform ops_internal.require_object(sink, path);
  select k into secret_key from pg_catalog.jsonb_object_keys(sink) as k
   where k in ('url', 'webhook_url', 'webhook', 'endpoint') order by k limit 1;
  if secret_key is not null then
    perform ops_internal.invalid(pg_catalog.format(
      '%s.%s is not allowed: a webhook URL is a secret and policy is not; put the URL in an environment '
      'variable of the deliverer and name that variable in %s.url_env', path, secret_key, path));
  end if;
  perform ops_internal.check_keys(sink, path, array['name', 'url_env', 'format', 'types', 'tags', 'per_minute',
    'enabled']);
  perform ops_internal.get_text(sink, path, 'url_env', true, ops_internal.env_name_pattern());
  perform ops_internal.get_text(sink, path, 'format', false, '^(slack|discord|json)$');
  perform ops_internal.get_text_array(sink, path, 'types', false, ops_internal.event_type_pattern(), 50, 1);
  perform ops_internal.get_text_array(sink, path, 'tags', false, ops_internal.agent_id_pattern(), 50, 1);
  perform ops_internal.get_int(sink, path, 'per_minute', false, 1, 10000);
  perform ops_internal.get_bool(sink, path, 'enabled');
  return ops_internal.get_text(sink, path, 'name', true, ops_internal.agent_id_pattern());
end;
$$;

create or replace function ops_internal.validate_policy_notifications(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  sink jsonb;
  i integer := 0;
  names text[] := '{}'::text[];
  name text;
begin
  perform ops_internal.check_keys(value, 'value', array['enabled', 'sinks', 'max_attempts', 'retain_days']);
  perform ops_internal.get_bool(value, 'value', 'enabled', true);
  perform ops_internal.get_int(value, 'value', 'max_attempts', false, 1, 100);
  perform ops_internal.get_int(value, 'value', 'retain_days', false, 1, 365);
  if value -> 'sinks' is null or value -> 'sinks' = 'null'::jsonb then
    perform ops_internal.invalid('value.sinks is required (an array of sinks, [] for none)');
  end if;
  if pg_catalog.jsonb_typeof(value -> 'sinks') <> 'array' then
    perform ops_internal.invalid('value.sinks must be an array of sinks {name, url_env, format?, types?, tags?, '
      'per_minute?, enabled?}');
  end if;
  if pg_catalog.jsonb_array_length(value -> 'sinks') > 20 then
    perform ops_internal.invalid('value.sinks must hold 0 to 20 sinks');
  end if;
  for sink in select e from pg_catalog.jsonb_array_elements(value -> 'sinks') as e loop
    name := ops_internal.validate_notification_sink(sink, pg_catalog.format('value.sinks[%s]', i));
    if name = any (names) then
      perform ops_internal.invalid(pg_catalog.format('value.sinks[%s].name must be unique (%s repeats)', i, name));
    end if;
    names := names || name;
    i := i + 1;
  end loop;
end;
$$;

-- The sinks that receive notifications now: none while the key is absent or disabled, else every sink not
-- muted by its own `enabled: false`, with its filter resolved (the defaults when it names no types or tags).
create or replace function ops_internal.notification_sinks(settings jsonb)
returns table (name text, format text, url_env text, types text[], tags text[], per_minute integer)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select s ->> 'name',
         coalesce(s ->> 'format', 'json'),
         s ->> 'url_env',
         case when pg_catalog.jsonb_typeof(s -> 'types') = 'array'
                then array(select pg_catalog.jsonb_array_elements_text(s -> 'types'))
              when pg_catalog.jsonb_typeof(s -> 'tags') = 'array' then '{}'::text[]
              else ops_internal.notification_default_types() end,
         case when pg_catalog.jsonb_typeof(s -> 'tags') = 'array'
                then array(select pg_catalog.jsonb_array_elements_text(s -> 'tags'))
              else '{}'::text[] end,
         (s ->> 'per_minute')::integer
    from pg_catalog.jsonb_array_elements(
           case when pg_catalog.jsonb_typeof(settings -> 'sinks') = 'array' then settings -> 'sinks'
                else '[]'::jsonb end) with ordinality as e(s, n)
   where coalesce((settings ->> 'enabled')::boolean, false)
     and pg_catalog.jsonb_typeof(s) = 'object'
     and pg_catalog.jsonb_typeof(s -> 'name') = 'string'
     and coalesce((s ->> 'enabled')::boolean, true)
   order by e.n;
$$;

-- max_attempts and retain_days, else their defaults.
create or replace function ops_internal.notification_setting(settings jsonb, name text)
returns integer
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce((settings ->> name)::integer,
                  case name when 'max_attempts' then 8 when 'retain_days' then 7 end);
$$;

-- Where a new cursor starts: after the last event id drawn, so neither history nor the ids of rolled-back
-- transactions lie ahead of it.
create or replace function ops_internal.newest_event_id()
returns bigint
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(pg_catalog.pg_sequence_last_value(
           pg_catalog.pg_get_serial_sequence('public.ops_agent_events', 'id')::regclass), 0);
$$;

-- Cursors follow the sinks that receive notifications: a sink that starts receiving (new, unmuted, or all of
-- them when the key is enabled again) starts at the newest event, so it hears what happens from then on and
-- never the history or what happened while it was muted; a sink that stops receiving loses its cursor.
create or replace function ops_internal.sync_notification_cursors()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  newest bigint;
  active text[] := '{}'::text[];
  was_active text[] := '{}'::text[];
begin
  if tg_op <> 'DELETE' then
    active := array(select s.name from ops_internal.notification_sinks(new.value) s);
  end if;
  if tg_op <> 'INSERT' then
    was_active := array(select s.name from ops_internal.notification_sinks(old.value) s);
  end if;
  delete from public.ops_notification_cursors c where c.sink <> all (active);
  newest := ops_internal.newest_event_id();
  insert into public.ops_notification_cursors as c (sink, last_event_id)
  select a.name, newest from pg_catalog.unnest(active) as a(name)
  on conflict (sink) do update
     set last_event_id = excluded.last_event_id, hold_event_id = null, hold_at = null
   where c.sink <> all (was_active);
  return null;
end;
$$;

create trigger ops_policy_notification_cursors
  after insert or update on public.ops_policy
  for each row when (new.key = 'notifications')
  execute function ops_internal.sync_notification_cursors();
create trigger ops_policy_notification_cursors_delete
  after delete on public.ops_policy
  for each row when (old.key = 'notifications')
  execute function ops_internal.sync_notification_cursors();

select ops_internal.revoke_api_execute();
