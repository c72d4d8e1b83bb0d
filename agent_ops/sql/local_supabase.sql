-- Local only: make a plain PostgreSQL look like a Supabase project for what agent-ops relies on.
-- Supabase projects already have all of this; it must never appear in supabase/migrations/.
-- Idempotent: applied at every `agent-ops db start` to `postgres` and `template1`.

do $bootstrap$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
exception
  -- two first starts racing on a fresh cluster: the other one created the role
  when duplicate_object or unique_violation then null;
end
$bootstrap$;

grant anon, authenticated, service_role to authenticator;

-- Supabase's API role timeouts, so local calls through the PostgREST stand-in feel the same limits.
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
alter role authenticator set statement_timeout = '8s';

create schema if not exists extensions;
grant usage on schema public, extensions to anon, authenticated, service_role;

-- The permissive defaults older Supabase projects still have: everything created in public is granted to
-- the API roles. Our migrations must therefore state every grant and revoke explicitly, and the tests
-- prove they do against this worst case.
alter default privileges for role postgres in schema public
  grant all on tables to anon, authenticated, service_role;
alter default privileges for role postgres in schema public
  grant all on functions to anon, authenticated, service_role;
alter default privileges for role postgres in schema public
  grant all on sequences to anon, authenticated, service_role;
