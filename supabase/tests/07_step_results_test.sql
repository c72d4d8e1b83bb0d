-- ops_complete_step / ops_fail_step / ops_extend_lease: attempt fencing, idempotent repeats, promotion of
-- dependent steps, retries with backoff, permanent failure.
begin;
select plan(31);

-- A diamond: 0 -> (1, 2) -> 3.
select public.ops_create_proposal('{"agent_id": "brain", "title": "diamond", "steps": [{"kind": "crawl"}, {"kind": "analyze", "depends_on": [0]}, {"kind": "analyze", "depends_on": [0]}, {"kind": "write_content", "depends_on": [1, 2]}]}');
create temp table s as select position, id from public.ops_mission_steps;
create function pg_temp.step(pos int) returns bigint language sql as $$ select id from s where position = pos $$;
create function pg_temp.status(pos int) returns text language sql as $$ select status from public.ops_mission_steps where id = pg_temp.step(pos) $$;

select public.ops_claim_next_step('w1', array['crawl']);
select is(public.ops_complete_step(pg_temp.step(0), 1, '{"pages": 3}') - 'step_id' - 'mission_id',
  '{"status": "succeeded", "attempt": 1, "duplicate": false, "mission_status": "running", "retry_at": null, "attempts_left": null}'::jsonb, 'completion succeeds');
select is(array[pg_temp.status(1), pg_temp.status(2), pg_temp.status(3)], array['queued', 'queued', 'pending'],
  'both branches are queued; the join waits');
select is(public.ops_complete_step(pg_temp.step(0), 1, '{"pages": 3}') ->> 'duplicate', 'true',
  'repeating the same completion succeeds again');
select throws_ok(format('select public.ops_complete_step(%s, 1, %L)', pg_temp.step(0), '{"pages": 4}'), 'PT409',
  format('step %s attempt 1 already succeeded with a different output', pg_temp.step(0)), 'a different output for the same attempt conflicts');
select is((select output from public.ops_mission_steps where id = pg_temp.step(0)), '{"pages": 3}'::jsonb, 'the first output stays');

select public.ops_claim_next_step('w1', array['analyze'], 2);
select public.ops_complete_step(pg_temp.step(1), 1, '{}');
select is(pg_temp.status(3), 'pending', 'one branch done is not enough');
select public.ops_complete_step(pg_temp.step(2), 1, '{}');
select is(pg_temp.status(3), 'queued', 'both branches done: the join is queued');

-- Fencing: a stale attempt changes nothing.
select public.ops_claim_next_step('w1', array['write_content'], 1, 60);
select throws_ok(format('select public.ops_complete_step(%s, 2, %L)', pg_temp.step(3), '{}'), 'PT409',
  format('step %s attempt 2 is no longer running (status running, attempt 1)', pg_temp.step(3)), 'the wrong attempt is refused');
select throws_ok(format('select public.ops_extend_lease(%s, 2)', pg_temp.step(3)), 'PT409',
  format('lease lost: step %s attempt 2 is no longer running (status running, attempt 1)', pg_temp.step(3)), 'extension is fenced too');
update public.ops_mission_steps set lease_expires_at = now() + interval '1 second' where id = pg_temp.step(3);
select is((public.ops_extend_lease(pg_temp.step(3), 1, 600) ->> 'lease_expires_at')::timestamptz, now() + interval '600 seconds',
  'the running attempt extends its lease');

-- Retryable failure: back to the queue with exponential backoff and jitter.
select is(public.ops_fail_step(pg_temp.step(3), 1, 'rate limited') ->> 'status', 'queued', 'a retryable failure is retried');
select results_eq(
  $$select status, last_error, reserved_by, run_after >= now() + interval '10 seconds', run_after <= now() + interval '12.5 seconds'
      from public.ops_mission_steps where id = pg_temp.step(3)$$,
  $$values ('queued', 'rate limited', null::text, true, true)$$, 'first retry after 10 s plus up to 25 % jitter');
select is((select type from public.ops_agent_events where step_id = pg_temp.step(3) order by id desc limit 1), 'step:retrying',
  'step:retrying is emitted');
select is(public.ops_fail_step(pg_temp.step(3), 1, 'rate limited') ->> 'duplicate', 'true', 'repeating the failure report is harmless');
update public.ops_mission_steps set run_after = now() where id = pg_temp.step(3);
select is((select public.ops_claim_next_step('w2', array['write_content']) -> 0 ->> 'attempt'), '2', 'the retry is attempt 2');
select throws_ok(format('select public.ops_complete_step(%s, 1, %L)', pg_temp.step(3), '{}'), 'PT409', null,
  'the first attempt can no longer report');
select is(public.ops_fail_step(pg_temp.step(3), 2, 'rate limited again') ->> 'retry_at' is not null, true, 'retried again');
select cmp_ok((select run_after from public.ops_mission_steps where id = pg_temp.step(3)), '>=', now() + interval '20 seconds',
  'the second backoff doubles');

-- Out of attempts, or not retryable: failed for good; the mission fails and the rest is cancelled.
select public.ops_create_proposal('{"agent_id": "brain", "title": "doomed", "steps": [{"kind": "crawl"}, {"kind": "analyze"}, {"kind": "analyze", "depends_on": []}]}');
create temp table d as select position, id, mission_id from public.ops_mission_steps
  where mission_id = (select max(mission_id) from public.ops_mission_steps);
select public.ops_claim_next_step('w3', array['crawl']);
select is(public.ops_fail_step((select id from d where position = 0), 1, 'HTTP 404', false) - 'step_id' - 'mission_id',
  '{"status": "failed", "attempt": 1, "duplicate": false, "mission_status": "failed", "retry_at": null, "attempts_left": null}'::jsonb, 'a permanent failure ends the mission');
select results_eq($$select s.status from public.ops_mission_steps s join d using (id) order by d.position$$,
  $$values ('failed'), ('cancelled'), ('cancelled')$$, 'its remaining steps are cancelled');
select is((select failure_reason from public.ops_missions where id = (select max(mission_id) from d)), 'step 0 (crawl) failed: HTTP 404',
  'the mission says which step failed and why');
select is((select count(*)::int from public.ops_agent_events where type = 'mission:failed' and mission_id = (select max(mission_id) from d)), 1,
  'one mission:failed event');
select ok((select tags @> array['mission:failed', 'mission', 'failed'] from public.ops_agent_events where type = 'mission:failed' limit 1),
  'tagged so the seed pattern ["mission:failed"] matches');
select is(public.ops_fail_step((select id from d where position = 0), 1, 'HTTP 404', false) ->> 'duplicate', 'true',
  'repeating a final failure is harmless');

select public.ops_create_proposal('{"agent_id": "brain", "title": "flaky", "steps": [{"kind": "crawl"}]}');
update public.ops_mission_steps set max_attempts = 1 where mission_id = (select max(id) from public.ops_missions);
select public.ops_claim_next_step('w4', array['crawl']);
select is(public.ops_fail_step((select max(id) from public.ops_mission_steps), 1, 'boom') ->> 'status', 'failed',
  'retryable, but out of attempts: failed');

-- Bad input and unknown steps.
select throws_ok($$select public.ops_complete_step(999999, 1)$$, 'PT404', 'step 999999 not found', 'unknown step');
select throws_ok($$select public.ops_complete_step(null, 1)$$, 'PT400', 'step_id is required', 'step_id is required');
select throws_ok(format('select public.ops_complete_step(%s, 0)', pg_temp.step(0)), 'PT400', 'attempt must be from 1 to 100', 'attempts start at 1');
select throws_ok(format('select public.ops_complete_step(%s, 1, jsonb_build_object(%L, repeat(%L, 1048577)))', pg_temp.step(0), 'x', 'y'), 'PT400',
  'output must be at most 1048576 bytes of JSON', 'output size is capped');
select throws_ok(format('select public.ops_extend_lease(%s, 1, 86401)', pg_temp.step(0)), 'PT400', 'lease_seconds must be from 1 to 86400', 'lease range');
select throws_ok(format('select public.ops_fail_step(%s, 1, %L)', pg_temp.step(0), ' '), 'PT400', 'error must not be blank', 'a failure needs an error');

select * from finish();
rollback;
