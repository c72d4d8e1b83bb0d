-- The pg_temp type hijack, attempted against every SECURITY DEFINER function in the catalog.
--
-- A service_role session plants domains named like the built-in types (jsonb, text, ...) in its temporary
-- schema, each with a CHECK that counts the calls made as anyone but service_role, i.e. as a definer
-- function's owner, in a temporary sequence (a sequence, so the count survives the errors the calls raise).
-- The harness and pgTAP itself run as service_role or while the trap is disarmed. A control function with
-- the old `search_path = ''` shows the trap springs; ours must not.
begin;
select plan(7);

-- The control: how every function was declared before 20261203000100_ops_function_search_path.
create function public.hijack_control() returns pg_catalog.text
language plpgsql security definer set search_path = ''
as $$
declare
  doc jsonb := '{"a": 1}';
begin
  return doc ->> 'a';
end;
$$;
grant execute on function public.hijack_control() to service_role;

set local role service_role;
create sequence pg_temp.hijack_counter;
create function pg_temp.hijack_hits() returns bigint language sql as $$
  select coalesce(pg_catalog.pg_sequence_last_value('pg_temp.hijack_counter'), 0)
$$;
create function pg_temp.hijack(value anyelement) returns pg_catalog.bool language plpgsql as $$
begin
  if pg_catalog.current_setting('hijack.armed', true) = 'on' and current_user <> 'service_role' then
    perform pg_catalog.nextval('pg_temp.hijack_counter');
  end if;
  return true;
end;
$$;
do $$
declare
  shadow record;
begin
  -- The name a function might write, and the built-in type it means (keywords such as bigint map to int8).
  for shadow in
    select * from (values ('jsonb', 'jsonb'), ('json', 'json'), ('text', 'text'), ('varchar', 'varchar'),
      ('bpchar', 'bpchar'), ('int2', 'int2'), ('int4', 'int4'), ('int8', 'int8'), ('bigint', 'int8'),
      ('integer', 'int4'), ('smallint', 'int2'), ('boolean', 'bool'), ('bool', 'bool'), ('float8', 'float8'),
      ('float4', 'float4'), ('numeric', 'numeric'), ('timestamptz', 'timestamptz'), ('timestamp', 'timestamp'),
      ('date', 'date'), ('interval', 'interval'), ('uuid', 'uuid'), ('name', 'name'), ('oid', 'oid'),
      ('regclass', 'regclass'), ('regprocedure', 'regprocedure'), ('bytea', 'bytea'), ('jsonpath', 'jsonpath'))
      as v(name, base)
  loop
    execute pg_catalog.format(
      'create domain pg_temp.%I as pg_catalog.%I check (pg_temp.hijack(value))', shadow.name, shadow.base);
  end loop;
end;
$$;
reset role;

-- Every definer function, called as service_role with null arguments; errors are expected and ignored.
create temp table definer_calls(fn regprocedure, outcome text);
grant select, update on definer_calls to service_role;
insert into definer_calls(fn)
  select p.oid::regprocedure from pg_catalog.pg_proc p
   where p.prosecdef and p.pronamespace in ('public'::regnamespace, 'ops_internal'::regnamespace)
     and p.proname <> 'hijack_control';

set local role service_role;
set local hijack.armed = 'on';
do $$
declare
  call record;
  statement pg_catalog.text;
begin
  for call in
    select c.fn, p.oid, p.proname, n.nspname,
           pg_catalog.array_to_string(array(
             select 'null::' || pg_catalog.quote_ident(tn.nspname) || '.' || pg_catalog.quote_ident(t.typname)
               from pg_catalog.unnest(p.proargtypes::oid[]) with ordinality as a(type_oid, position)
               join pg_catalog.pg_type t on t.oid = a.type_oid
               join pg_catalog.pg_namespace tn on tn.oid = t.typnamespace
              order by a.position), ', ') as args
      from definer_calls c
      join pg_catalog.pg_proc p on p.oid = c.fn
      join pg_catalog.pg_namespace n on n.oid = p.pronamespace
  loop
    statement := pg_catalog.format('select %I.%I(%s)', call.nspname, call.proname, call.args);
    begin
      execute statement;
      update definer_calls set outcome = 'returned' where fn = call.fn;
    exception when others then
      update definer_calls set outcome = 'raised ' || sqlstate where fn = call.fn;
    end;
  end loop;
end;
$$;
set local hijack.armed = 'off';
reset role;

select cmp_ok((select count(*)::int from definer_calls), '>=', 26, 'every RPC was called as service_role');
select is(pg_temp.hijack_hits(), 0::bigint, 'no definer function resolved a type through pg_temp');

-- The whole loop, as service_role with the trap still set: propose, approve, claim, complete, heartbeat.
set local role service_role;
set local hijack.armed = 'on';
select lives_ok($$
  select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["hijack_kind"]}', 'test');
  select public.ops_create_proposal('{"agent_id": "brain", "title": "hijack?", "steps": [{"kind": "hijack_kind"}]}');
  select public.ops_complete_step((s ->> 'id')::bigint, (s ->> 'attempt')::integer, '{"ok": true}')
    from pg_catalog.jsonb_array_elements(public.ops_claim_next_step('w1', array['hijack_kind'], 5, 60)) as s;
  select public.ops_emit_event('{"type": "tweet:posted", "agent_id": "brain", "payload": {"n": 1}}');
  select public.ops_heartbeat();
  select public.ops_status();
$$, 'the loop runs as service_role');
set local hijack.armed = 'off';
reset role;
select is(pg_temp.hijack_hits(), 0::bigint, 'nor any trigger or internal function along the loop');

-- The control proves the trap works: a definer function with search_path = '' runs the planted CHECK.
set local role service_role;
set local hijack.armed = 'on';
select is(public.hijack_control(), '1', 'the control function runs');
set local hijack.armed = 'off';
reset role;
select cmp_ok(pg_temp.hijack_hits(), '>', 0::bigint, 'the control function (search_path = '''') is hijacked');

select is((select count(*)::int from pg_catalog.pg_proc p
            where p.pronamespace in ('public'::regnamespace, 'ops_internal'::regnamespace)
              and p.proname <> 'hijack_control'
              and p.proconfig is distinct from array['search_path=pg_catalog, pg_temp']), 0,
  'every function of ours sets search_path = pg_catalog, pg_temp');

select * from finish();
rollback;
