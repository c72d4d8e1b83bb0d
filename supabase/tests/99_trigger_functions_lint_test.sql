-- `supabase db lint` runs plpgsql_check on plain functions only; trigger functions need their table to be
-- checked. Check every trigger function against each table it is attached to.
begin;
select plan(1);

select is_empty($$
  select t.tgrelid::regclass::text || ' / ' || t.tgfoid::regprocedure::text || ': ' || c.message
    from pg_trigger t
    join pg_proc p on p.oid = t.tgfoid
    join pg_language l on l.oid = p.prolang and l.lanname = 'plpgsql'
    cross join lateral extensions.plpgsql_check_function_tb(t.tgfoid, t.tgrelid) c
   where not t.tgisinternal
     and t.tgrelid::regclass::text like 'ops_%'
     and c.level in ('error', 'warning', 'warning extra')
$$, 'every trigger function passes plpgsql_check against its table');

select * from finish();
rollback;
