-- Every function of ours resolves names with search_path = pg_catalog, pg_temp.
--
-- `search_path = ''` still searches the session's temporary schema first for unqualified *type* names
-- (`jsonb`, `text`, ...): a caller could create `pg_temp.jsonb` as a domain whose CHECK runs its own code,
-- and a SECURITY DEFINER function would then run that code as its owner. Naming pg_temp last, as the
-- PostgreSQL manual advises for SECURITY DEFINER functions, makes pg_catalog win every such lookup. Trigger
-- and internal functions run inside definer calls, so they get the same setting. Functions created by later
-- migrations set it themselves; supabase/tests/17_search_path_hijack_test.sql checks all of them.

do $$
declare
  fn regprocedure;
begin
  for fn in
    select p.oid::regprocedure
      from pg_catalog.pg_proc p
     where p.pronamespace in ('public'::regnamespace, 'ops_internal'::regnamespace)
       and not exists (select 1 from pg_catalog.pg_depend d
                        where d.classid = 'pg_catalog.pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
  loop
    execute pg_catalog.format('alter function %s set search_path = pg_catalog, pg_temp', fn);
  end loop;
end;
$$;
