-- ops_approve_proposal / ops_reject_proposal: human decisions, gates re-run on approval.
begin;
select plan(14);

create temp table p as
  select (public.ops_create_proposal('{"agent_id": "twitter-alt", "title": "tweet a", "steps": [{"kind": "post_tweet"}]}') ->> 'proposal_id')::bigint as a,
         (public.ops_create_proposal('{"agent_id": "twitter-alt", "title": "tweet b", "steps": [{"kind": "post_tweet"}]}') ->> 'proposal_id')::bigint as b,
         (public.ops_create_proposal('{"agent_id": "twitter-alt", "title": "tweet c", "steps": [{"kind": "post_tweet"}]}') ->> 'proposal_id')::bigint as c;
select is((select count(*)::int from public.ops_mission_proposals where status = 'pending'), 3, 'three proposals wait for a human');

select is(public.ops_approve_proposal((select a from p), 'alice') - 'mission_id' - 'proposal_id',
  '{"status": "accepted", "reason": null, "duplicate": false}'::jsonb, 'approval accepts');
select is((select decided_by from public.ops_mission_proposals where id = (select a from p)), 'alice', 'records who decided');
select is((select auto_approved from public.ops_mission_proposals where id = (select a from p)), false, 'not auto-approved');
select is((select count(*)::int from public.ops_mission_steps s join public.ops_missions m on m.id = s.mission_id
            where m.proposal_id = (select a from p) and s.status = 'queued'), 1, 'its step is queued');

-- Gates are re-run at approval: the quota filled up since the proposal was made.
select lives_ok($$select public.ops_set_policy('step_kind_gates', '{"post_tweet": {"daily_limit": 1}}', 'test')$$, 'quota now 1');
select is(public.ops_approve_proposal((select b from p), 'alice') ->> 'reason',
  'daily quota for post_tweet reached (1/1 used today, this proposal needs 1)', 'approval can end as rejected by a gate');
select is((select status from public.ops_mission_proposals where id = (select b from p)), 'rejected', 'stored as rejected');
select is((select count(*)::int from public.ops_mission_steps where kind = 'post_tweet'), 1, 'nothing queued for it');

select is(public.ops_reject_proposal((select c from p), 'off-brand', 'bob') ->> 'reason', 'off-brand', 'a human rejects with a reason');
select throws_ok(format('select public.ops_approve_proposal(%s, %L)', (select c from p), 'alice'), 'PT409',
  format('proposal %s is not pending (it is rejected)', (select c from p)), 'decided proposals cannot be decided again');
select throws_ok($$select public.ops_approve_proposal(999999, 'alice')$$, 'PT404', 'proposal 999999 not found', 'unknown proposal');
select throws_ok(format('select public.ops_reject_proposal(%s, %L, %L)', (select c from p), '', 'bob'), 'PT400',
  'reason must be 1 to 1000 characters', 'a rejection needs a reason');
select throws_ok(format('select public.ops_approve_proposal(%s, null)', (select c from p)), 'PT400',
  'decided_by is required', 'an approval needs a name');

select * from finish();
rollback;
