-- A private schema for agent-ops internals (trigger functions, gate checks, helpers).
-- It is not exposed through the Data API and no API role may use it; only the public ops_* functions,
-- which run as the migration owner, reach into it.

create schema if not exists ops_internal;
revoke all on schema ops_internal from public, anon, authenticated, service_role;

comment on schema ops_internal is
  'agent-ops internals: not part of the API. Call the public ops_* functions instead.';

-- Keeps updated_at honest on the low-traffic tables (the hot step table sets its timestamps itself).
create or replace function ops_internal.touch_updated_at()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := pg_catalog.now();
  return new;
end;
$$;

revoke all on function ops_internal.touch_updated_at() from public, anon, authenticated, service_role;
