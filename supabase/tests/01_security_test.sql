-- Security from the first migration: RLS everywhere, no policies, explicit grants.
-- The local bootstrap grants everything in public to the API roles by default (like older Supabase
-- projects), so these checks prove our migrations revoke it.
begin;
-- Every table in public, whichever migration added it: five checks each, and nine more.
create temp table ops_tables as
  select c.relname::text as name from pg_class c
   where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' order by 1;
grant select on ops_tables to anon, authenticated, service_role;
select plan((select count(*)::int * 5 + 9 from ops_tables));
select cmp_ok((select count(*)::int from ops_tables), '>=', 11, 'the tables are found in the catalog');

select ok(c.relrowsecurity, t.name || ' has row level security enabled')
  from ops_tables t join pg_class c on c.oid = ('public.' || t.name)::regclass;
select policies_are('public', t.name, array[]::name[], t.name || ' has no RLS policies (RPC-only)')
  from ops_tables t;
select table_privs_are('public', t.name, 'anon', array[]::text[], 'anon has no privilege on ' || t.name)
  from ops_tables t;
select table_privs_are('public', t.name, 'authenticated', array[]::text[], 'authenticated has no privilege on ' || t.name)
  from ops_tables t;
select table_privs_are('public', t.name, 'service_role', array['SELECT'], 'service_role may only SELECT ' || t.name)
  from ops_tables t;

select ok(not has_schema_privilege('anon', 'ops_internal', 'usage'), 'anon cannot use ops_internal');
select ok(not has_schema_privilege('service_role', 'ops_internal', 'usage'), 'service_role cannot use ops_internal');

-- Behaviour, not only catalog entries.
set local role anon;
select throws_ok('select * from public.ops_missions', '42501', null, 'anon cannot read missions');
reset role;
set local role authenticated;
select throws_ok('select * from public.ops_agent_events', '42501', null, 'authenticated cannot read events');
reset role;
set local role service_role;
select lives_ok('select * from public.ops_missions', 'service_role can read missions');
select throws_ok($$insert into public.ops_policy (key, value) values ('system', '{}')$$, '42501', null,
  'service_role cannot insert policy');
select throws_ok($$update public.ops_mission_steps set status = 'queued'$$, '42501', null,
  'service_role cannot update steps');
select throws_ok($$delete from public.ops_agent_events$$, '42501', null,
  'service_role cannot delete events');
reset role;

select * from finish();
rollback;
