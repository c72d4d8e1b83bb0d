-- `supabase db lint` runs plpgsql_check on plain functions only; trigger functions need their table to be
-- checked. Check every trigger function against each table it is attached to.
begin;
select plan(1);

-- A function shared by an INSERT and an UPDATE trigger is checked with the UPDATE one, whose old and new
-- transition tables cover every branch.
select is_empty($$
  with checked as (
    select distinct on (t.tgrelid, t.tgfoid) t.tgrelid, t.tgfoid, t.tgnewtable, t.tgoldtable
      from pg_trigger t
      join pg_proc p on p.oid = t.tgfoid
      join pg_language l on l.oid = p.prolang and l.lanname = 'plpgsql'
     where not t.tgisinternal and t.tgrelid::regclass::text like 'ops_%'
     order by t.tgrelid, t.tgfoid, (t.tgoldtable is not null) desc
  )
  select t.tgrelid::regclass::text || ' / ' || t.tgfoid::regprocedure::text || ': ' || c.message
    from checked t
    cross join lateral extensions.plpgsql_check_function_tb(t.tgfoid, t.tgrelid,
      newtable => t.tgnewtable, oldtable => t.tgoldtable) c
   where c.level in ('error', 'warning', 'warning extra')
$$, 'every trigger function passes plpgsql_check against its table');

select * from finish();
rollback;
