-- The RPC surface: exact names, no overloads, SECURITY DEFINER + VOLATILE + search_path = pg_catalog, pg_temp, EXECUTE for
-- service_role only; internals unreachable; service_role cannot write any table while the functions work.
begin;
select plan(13);

create temp table rpc(name text) on commit drop;
create temp table reads(name text) on commit drop;
insert into rpc values ('ops_create_proposal'), ('ops_approve_proposal'), ('ops_reject_proposal'),
  ('ops_claim_next_step'), ('ops_complete_step'), ('ops_fail_step'), ('ops_extend_lease'),
  ('ops_finalize_mission'), ('ops_cancel_mission'), ('ops_recover_stale_steps'), ('ops_evaluate_triggers'),
  ('ops_process_reactions'), ('ops_heartbeat'), ('ops_emit_event'), ('ops_set_policy'), ('ops_get_policy'),
  ('ops_release_step'), ('ops_worker_heartbeat'), ('ops_worker_sign_off'), ('ops_claim_notifications'),
  ('ops_report_notification');
-- Trigger rules through the API.
insert into rpc values ('ops_set_trigger_rule'), ('ops_set_trigger_enabled'), ('ops_delete_trigger_rule');
-- Batch reports.
insert into rpc values ('ops_report_steps'), ('ops_report_and_claim');
insert into reads values ('ops_list_trigger_rules'), ('ops_get_trigger_rule'), ('ops_preview_trigger_rule');
-- Limits and spend.
insert into reads values ('ops_list_spend');
insert into reads values ('ops_list_proposals'), ('ops_list_missions'), ('ops_get_mission'), ('ops_list_steps'),
  ('ops_list_events'), ('ops_status'), ('ops_list_policy'), ('ops_list_action_runs'), ('ops_preview_gates'),
  ('ops_list_workers'), ('ops_list_notifications'), ('ops_metrics'), ('ops_metrics_history');

select set_eq(
  $$select p.proname::text from pg_proc p where p.pronamespace = 'public'::regnamespace$$,
  $$select name from rpc union all select name from reads$$,
  'public holds exactly the ops_* RPC functions');
select is((select count(*)::int from pg_proc p where p.pronamespace = 'public'::regnamespace),
  (select count(*)::int from rpc) + (select count(*)::int from reads), 'no overloads');
select is((select count(*)::int from pg_proc p where p.pronamespace = 'public'::regnamespace and p.prosecdef),
  (select count(*)::int from rpc) + (select count(*)::int from reads), 'every RPC is SECURITY DEFINER');
select is((select count(*)::int from pg_proc p join rpc on rpc.name = p.proname where p.provolatile = 'v'),
  (select count(*)::int from rpc), 'every RPC that writes is VOLATILE (PostgREST runs it read-write)');
select is((select count(*)::int from pg_proc p join reads on reads.name = p.proname where p.provolatile = 's'),
  (select count(*)::int from reads), 'the read functions are STABLE');
select is((select count(*)::int from pg_proc p
            where p.pronamespace in ('public'::regnamespace, 'ops_internal'::regnamespace)
              and p.proconfig is distinct from array['search_path=pg_catalog, pg_temp']), 0,
  'every function sets search_path = pg_catalog, pg_temp (pg_temp last: see 17_search_path_hijack_test)');
select is((select count(*)::int from pg_proc p where p.pronamespace = 'public'::regnamespace
            and has_function_privilege('service_role', p.oid, 'execute')),
  (select count(*)::int from rpc) + (select count(*)::int from reads), 'service_role may execute every RPC');
select is((select count(*)::int from pg_proc p where p.pronamespace = 'public'::regnamespace
            and (has_function_privilege('anon', p.oid, 'execute')
               or has_function_privilege('authenticated', p.oid, 'execute'))), 0,
  'anon and authenticated may execute none');
select is((select count(*)::int from pg_proc p
            where p.pronamespace = 'ops_internal'::regnamespace
              and (has_function_privilege('anon', p.oid, 'execute') or has_function_privilege('authenticated', p.oid, 'execute')
                   or has_function_privilege('service_role', p.oid, 'execute'))), 0,
  'no API role may execute an internal function');

set local role anon;
select throws_ok($$select public.ops_heartbeat()$$, '42501', null, 'anon is refused at the door');
reset role;

set local role service_role;
select lives_ok(
  $$select public.ops_create_proposal('{"agent_id": "brain", "title": "works through the function", "steps": [{"kind": "analyze"}]}')$$,
  'service_role creates a proposal through the function');
select throws_ok(
  $$insert into public.ops_mission_proposals (agent_id, title, proposed_steps) values ('brain', 'sneaky', '[]')$$,
  '42501', null, 'but cannot insert one directly');
select throws_ok($$update public.ops_missions set status = 'succeeded'$$, '42501', null,
  'nor update a mission directly');
reset role;

select * from finish();
rollback;
