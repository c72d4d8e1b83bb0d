-- ops_recover_stale_steps: expired leases become failed attempts; fresh ones and finished steps are untouched.
begin;
select plan(12);

select public.ops_create_proposal('{"agent_id": "brain", "title": "crashy", "steps": [{"kind": "crawl"}]}');
select public.ops_create_proposal('{"agent_id": "brain", "title": "healthy", "steps": [{"kind": "analyze"}]}');
create temp table c as select public.ops_claim_next_step('w1', null, 10, 600) as r;
create temp table ids as
  select (select (x ->> 'id')::bigint from jsonb_array_elements((select r from c)) x where x ->> 'kind' = 'crawl') as crashy,
         (select (x ->> 'id')::bigint from jsonb_array_elements((select r from c)) x where x ->> 'kind' = 'analyze') as healthy;
-- The crawl worker died 31 minutes ago.
update public.ops_mission_steps set lease_expires_at = now() - interval '1 minute', lease_renewed_at = now() - interval '31 minutes'
 where id = (select crashy from ids);

select is(public.ops_recover_stale_steps(), '{"recovered": 1, "requeued": 1, "failed": 0, "timed_out": 0, "waiting_after_restart": 0, "missions_finalized": 0}'::jsonb,
  'one expired lease recovered');
select results_eq($$select status, last_error, reserved_by, attempt from public.ops_mission_steps where id = (select crashy from ids)$$,
  $$values ('queued', 'Stale: no progress for 31 minutes', null::text, 1)$$, 'treated as a failed attempt and requeued');
select is((select status from public.ops_mission_steps where id = (select healthy from ids)), 'running', 'a live lease is left alone');
select ok((select tags @> array['step:recovered', 'crawl', 'warning'] from public.ops_agent_events where type = 'step:recovered'),
  'step:recovered is emitted');
select is((select payload ->> 'outcome' from public.ops_agent_events where type = 'step:recovered'), 'requeued', 'saying what happened');
select throws_ok(format('select public.ops_complete_step(%s, 1, %L)', (select crashy from ids), '{}'), 'PT409', null,
  'the crashed attempt''s late completion is refused');
select is((select status from public.ops_mission_steps where id = (select crashy from ids)), 'queued', 'and changed nothing');
select is(public.ops_recover_stale_steps() ->> 'recovered', '0', 'recovering again finds nothing');

-- The last attempt going stale fails the step and the mission.
update public.ops_mission_steps set max_attempts = 2, run_after = now() where id = (select crashy from ids);
select public.ops_claim_next_step('w2', array['crawl']);
update public.ops_mission_steps set lease_expires_at = now() - interval '1 second' where id = (select crashy from ids);
select is(public.ops_recover_stale_steps() - 'recovered' - 'requeued', '{"failed": 1, "timed_out": 0, "waiting_after_restart": 0, "missions_finalized": 1}'::jsonb,
  'out of attempts: failed, and its mission finalized');
select is((select m.status from public.ops_missions m join public.ops_mission_steps s on s.mission_id = m.id where s.id = (select crashy from ids)),
  'failed', 'and its mission finalized as failed');

-- A step whose lease expired but which completed before recovery ran is never overwritten.
update public.ops_mission_steps set lease_expires_at = now() - interval '1 second' where id = (select healthy from ids);
select public.ops_complete_step((select healthy from ids), 1, '{"late": "but in time"}');
select is(public.ops_recover_stale_steps() ->> 'recovered', '0', 'a completed step is not recovered');
select is((select status from public.ops_mission_steps where id = (select healthy from ids)), 'succeeded', 'it stays succeeded');

select * from finish();
rollback;
