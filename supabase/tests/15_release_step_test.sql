-- ops_release_step: a running attempt handed back at once, not counted against max_attempts.
begin;
select plan(7);

select public.ops_create_proposal('{"agent_id": "brain", "title": "deploy-safe", "steps": [{"kind": "crawl"}]}');
update public.ops_mission_steps set max_attempts = 1;
create temp table c as select public.ops_claim_next_step('w1') -> 0 as s;
create function pg_temp.sid() returns bigint language sql as $$ select (s ->> 'id')::bigint from c $$;

select is(public.ops_release_step(pg_temp.sid(), 1, 'worker shutdown') ->> 'status', 'queued', 'released');
select results_eq($$select status, last_error, reserved_by, run_after <= now(), attempt, max_attempts
                     from public.ops_mission_steps where id = pg_temp.sid()$$,
  $$values ('queued', 'worker shutdown', null::text, true, 1, 2)$$,
  'queued at once; the interrupted attempt does not use up the step''s last attempt');
select is((select type from public.ops_agent_events where step_id = pg_temp.sid() order by id desc limit 1), 'step:retrying',
  'recorded as a retry');
select is(public.ops_release_step(pg_temp.sid(), 1, 'worker shutdown') ->> 'duplicate', 'true', 'a repeat is harmless');
select is((select public.ops_claim_next_step('w2') -> 0 ->> 'attempt'), '2', 'another worker takes it at once');
select throws_ok(format('select public.ops_release_step(%s, 1, %L)', pg_temp.sid(), 'worker shutdown'), 'PT409', null,
  'a stale attempt cannot release');
select throws_ok(format('select public.ops_release_step(%s, 2, null)', pg_temp.sid()), 'PT400', 'reason is required', 'a reason is required');

select * from finish();
rollback;
