-- ops_finalize_mission (idempotent, all steps decide) and ops_cancel_mission.
begin;
select plan(15);

select public.ops_create_proposal('{"agent_id": "brain", "title": "two steps", "steps": [{"kind": "crawl"}, {"kind": "analyze"}]}');
create temp table m as select max(id) as id from public.ops_missions;
select is(public.ops_finalize_mission((select id from m)) ->> 'status', 'approved', 'nothing to decide yet');
select public.ops_complete_step((public.ops_claim_next_step('w', array['crawl']) -> 0 ->> 'id')::bigint, 1, '{}');
select is(public.ops_finalize_mission((select id from m)) ->> 'status', 'running', 'one step done is not success (pitfall 5)');
select public.ops_complete_step((public.ops_claim_next_step('w', array['analyze']) -> 0 ->> 'id')::bigint, 1, '{}');
select is((select status from public.ops_missions where id = (select id from m)), 'succeeded', 'the last completion finalizes');
select is(public.ops_finalize_mission((select id from m)) - 'finalized_at',
  jsonb_build_object('mission_id', (select id from m), 'status', 'succeeded', 'finalized', true, 'reason', null),
  'finalizing again reports the same outcome');
select is(public.ops_finalize_mission((select id from m)) ->> 'status', 'succeeded', 'and again');
select is((select count(*)::int from public.ops_agent_events where mission_id = (select id from m) and type = 'mission:succeeded'), 1,
  'exactly one terminal event');

-- A mission left running with every step finished (e.g. a crash between writes) is finalized on demand.
select public.ops_create_proposal('{"agent_id": "brain", "title": "orphan", "steps": [{"kind": "crawl"}]}');
create temp table o as select max(id) as id from public.ops_missions;
update public.ops_mission_steps set status = 'failed', last_error = 'lost', finished_at = now(), attempt = 1, reserved_by = 'w'
 where mission_id = (select id from o);
select is(public.ops_finalize_mission((select id from o)) ->> 'reason', 'step 0 (crawl) failed: lost', 'any failed step fails the mission');
select throws_ok($$select public.ops_finalize_mission(999999)$$, 'PT404', 'mission 999999 not found', 'unknown mission');

-- Cancellation.
select public.ops_create_proposal('{"agent_id": "brain", "title": "cancel me", "steps": [{"kind": "crawl"}, {"kind": "analyze"}]}');
create temp table c as select max(id) as id from public.ops_missions;
create temp table claimed as select public.ops_claim_next_step('w', array['crawl']) -> 0 as step;
select is(public.ops_cancel_mission((select id from c), 'not needed any more') ->> 'cancelled_steps', '2',
  'running and pending steps are cancelled');
select results_eq($$select status, failure_reason from public.ops_missions where id = (select id from c)$$,
  $$values ('cancelled', 'not needed any more')$$, 'the mission is cancelled with the reason');
select throws_ok(format('select public.ops_complete_step(%s, 1)', (select step ->> 'id' from claimed)), 'PT409', null,
  'the worker''s late result is refused');
select throws_ok(format('select public.ops_cancel_mission(%s, %L)', (select id from c), 'again'), 'PT409',
  format('mission %s is already cancelled', (select id from c)), 'a finished mission cannot be cancelled');
select throws_ok(format('select public.ops_cancel_mission(%s, null)', (select id from c)), 'PT400', 'reason is required',
  'cancelling needs a reason');
select is((select count(*)::int from public.ops_agent_events where mission_id = (select id from c) and type = 'step:cancelled'), 2,
  'each cancelled step has its event');
select is((select count(*)::int from public.ops_agent_events where mission_id = (select id from c) and type = 'mission:cancelled'), 1,
  'and the mission too');

select * from finish();
rollback;
