-- Claims and batch reports find their steps by key at any table size: with thousands of steps (where the
-- planner used to hash-join the whole table) no call scans ops_mission_steps sequentially.
begin;
select plan(4);

select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["noop"]}', 't');
-- 3,000 finished 3-step missions of history, written in bulk (status triggers off), then analyzed.
set local session_replication_role = replica;
insert into public.ops_mission_proposals (agent_id, title, proposed_steps, source, status, auto_approved, decided_by, decided_at)
select 'old', 'history ' || g, '[{"kind": "noop"}, {"kind": "noop"}, {"kind": "noop"}]', 'api', 'accepted', true, 'auto', now()
  from generate_series(1, 3000) g;
insert into public.ops_missions (proposal_id, agent_id, title, status, started_at, finalized_at)
select p.id, p.agent_id, p.title, 'succeeded', now(), now() from public.ops_mission_proposals p where p.title like 'history %';
insert into public.ops_mission_steps (mission_id, position, kind, depends_on, status, output, attempt, finished_at)
select m.id, k.n, 'noop', case when k.n = 0 then '{}'::int[] else array[k.n - 1] end, 'succeeded', '{}', 1, now()
  from public.ops_missions m cross join generate_series(0, 2) as k(n) where m.title like 'history %';
set local session_replication_role = origin;
analyze public.ops_missions;
analyze public.ops_mission_steps;

select public.ops_create_proposal(jsonb_build_object('agent_id', 'a', 'title', 'live ' || g,
  'steps', '[{"kind": "noop"}, {"kind": "noop"}]'::jsonb)) from generate_series(1, 4) g;

create temp table scans as
  select seq_scan from pg_stat_xact_user_tables where relid = 'public.ops_mission_steps'::regclass;
create temp table claimed as select public.ops_claim_next_step('w', array['noop'], 4) as steps;
select is((select jsonb_array_length(steps) from claimed), 4, 'four steps claimed');
create temp table answered as select public.ops_report_and_claim('w',
  (select jsonb_agg(jsonb_build_object('step_id', e -> 'id', 'attempt', e -> 'attempt', 'output', '{}'::jsonb))
     from claimed, jsonb_array_elements(steps) e), array['noop'], 4) as a;
select is((select count(*)::int from answered, jsonb_array_elements(a -> 'reports') r where r ->> 'status' = 'succeeded'),
  4, 'four reports succeeded');
select is((select jsonb_array_length(a -> 'claimed') from answered), 4, 'and the promoted steps were claimed with them');
select is((select x.seq_scan - s.seq_scan from pg_stat_xact_user_tables x, scans s
            where x.relid = 'public.ops_mission_steps'::regclass), 0::bigint,
  'no sequential scan of ops_mission_steps in the claim, the reports or the claim that rode with them');

select * from finish();
rollback;
