-- The gate counters (20261203007100) equal, after every kind of write, what the counting gates counted before
-- them: the queries below are the gates' old ones, word for word.
begin;
select plan(36);

-- Every counter the gates read, by the old queries and by the counters, for every key either side knows.
create function pg_temp.old_and_new() returns table (counter text, old_count bigint, new_count bigint)
language sql as $$
  with agents as (
    select agent_id as key from public.ops_mission_proposals
    union select key from public.ops_gate_counters where gate = 'daily_proposals'
  ), kinds as (
    select kind as key from public.ops_mission_steps
    union select key from public.ops_gate_counters where gate = 'kind_steps'
  )
  select 'daily_proposals:' || a.key,
         (select count(*) from public.ops_mission_proposals p
           where p.agent_id = a.key and p.created_at >= ops_internal.utc_day_start() and p.status <> 'rejected'),
         (select coalesce(sum(c.used), 0)::bigint from public.ops_gate_counters c
           where c.gate = 'daily_proposals' and c.key = a.key and c.day >= ops_internal.utc_today())
    from agents a
  union all
  select 'kind_steps:' || k.key,
         (select count(*) from public.ops_mission_steps s join public.ops_missions m on m.id = s.mission_id
           where s.kind = k.key and s.created_at >= ops_internal.utc_day_start() and m.status <> 'cancelled'),
         (select coalesce(sum(c.used), 0)::bigint from public.ops_gate_counters c
           where c.gate = 'kind_steps' and c.key = k.key and c.day >= ops_internal.utc_today())
    from kinds k
  union all
  select 'content_drafts',
         (select count(*) from public.ops_mission_steps s join public.ops_missions m on m.id = s.mission_id
           where s.kind = any (ops_internal.content_kinds()) and s.created_at >= ops_internal.utc_day_start()
             and m.status <> 'cancelled'),
         (select coalesce(sum(c.used), 0)::bigint from public.ops_gate_counters c
           where c.gate = 'kind_steps' and c.key = any (ops_internal.content_kinds()) and c.day >= ops_internal.utc_today())
  union all
  select 'active_missions',
         (select count(*) from public.ops_missions m where m.status in ('approved', 'running')),
         (select coalesce(sum(c.used), 0)::bigint from public.ops_gate_counters c
           where c.gate = 'active_missions' and c.key = '*' and c.day = '-infinity')
$$;
create function pg_temp.mismatches() returns setof text language sql as $$
  select counter || ': counted ' || old_count || ', counters say ' || new_count
    from pg_temp.old_and_new() where old_count <> new_count order by 1
$$;
create function pg_temp.counted(which text) returns bigint language sql as $$
  select new_count from pg_temp.old_and_new() where counter = which
$$;
create function pg_temp.propose(agent text, kinds text[]) returns jsonb language sql as $$
  select public.ops_create_proposal(jsonb_build_object('agent_id', agent, 'title', 'counted',
    'steps', (select jsonb_agg(jsonb_build_object('kind', k)) from unnest(kinds) as k)))
$$;
-- Claim and complete every step of a mission, in order (each claim takes the mission's next queued step).
create function pg_temp.work(mission bigint) returns text language plpgsql as $$
declare
  step public.ops_mission_steps;
  claimed jsonb;
begin
  loop
    select s.* into step from public.ops_mission_steps s
     where s.mission_id = mission and s.status = 'queued' order by s.position limit 1;
    exit when not found;
    update public.ops_mission_steps s set priority = 100 where s.id = step.id;
    claimed := public.ops_claim_next_step('counter-test', array[step.kind]) -> 0;
    perform public.ops_complete_step((claimed ->> 'id')::bigint, (claimed ->> 'attempt')::integer, '{}');
  end loop;
  return (select m.status from public.ops_missions m where m.id = mission);
end;
$$;

select public.ops_set_policy('auto_approve',
  '{"enabled": true, "allowed_step_kinds": ["crawl", "analyze", "write_content", "draft_tweet", "summarize", "translate", "fetch"]}', 't');
select public.ops_set_policy('step_kind_gates', '{"write_content": {"daily_limit": 6}, "deploy": {"enabled": false}}', 't');
select public.ops_set_policy('content_policy', '{"enabled": true, "max_drafts_per_day": 8}', 't');
select public.ops_set_policy('daily_proposal_limit', '{"limit": 6, "per_agent": {"b": 2}}', 't');
select public.ops_set_policy('max_active_missions', '{"limit": 9}', 't');
delete from public.ops_mission_proposals;  -- a clean start, whatever the database held

-- Intake: accepted, pending (post_tweet needs a human), refused by each gate; steps of many kinds.
create temp table made (name text primary key, result jsonb);
insert into made values
  ('a1', pg_temp.propose('a', array['crawl', 'analyze', 'write_content'])),
  ('a2', pg_temp.propose('a', array['crawl', 'draft_tweet', 'draft_tweet', 'summarize'])),
  ('a3', pg_temp.propose('a', array['post_tweet', 'analyze'])),
  ('b1', pg_temp.propose('b', array['translate', 'crawl'])),
  ('b2', pg_temp.propose('b', array['post_tweet'])),
  ('b3', pg_temp.propose('b', array['crawl'])),
  ('c1', pg_temp.propose('c', array['deploy'])),
  ('c2', pg_temp.propose('c', array['write_content', 'write_content', 'write_content', 'write_content'])),
  ('c3', pg_temp.propose('c', array['write_content', 'write_content'])),
  ('c4', pg_temp.propose('c', array['draft_tweet', 'write_content']));
select results_eq($$select name, result ->> 'status' from made order by name$$,
  $$values ('a1', 'accepted'), ('a2', 'accepted'), ('a3', 'pending'), ('b1', 'accepted'), ('b2', 'pending'),
           ('b3', 'rejected'), ('c1', 'rejected'), ('c2', 'accepted'), ('c3', 'rejected'), ('c4', 'rejected')$$,
  'the mix: accepted, pending and refused proposals');
select is((select result ->> 'reason' from made where name = 'c3'),
  'daily quota for write_content reached (5/6 used today, this proposal needs 2)', 'the kind quota reads its counter');
select is((select result ->> 'reason' from made where name = 'c4'),
  'content_policy.max_drafts_per_day reached (7/8 content steps today, this proposal needs 2)',
  'content_policy sums the content kinds'' counters');
select is((select result ->> 'reason' from made where name = 'b3'), 'daily proposal limit reached for b (2/2)',
  'the daily limit reads its counter');
select is_empty('select pg_temp.mismatches()', 'after intake the counters are the old counts');
select is(pg_temp.counted('daily_proposals:c'), 1::bigint, 'rejected proposals do not count');
select is(pg_temp.counted('kind_steps:crawl'), 3::bigint, 'a kind counts its steps across missions');

-- Decisions: approval (mission and steps), rejection by a person, and rejection by a gate at approval.
select public.ops_set_policy('daily_proposal_limit', '{"limit": 6, "per_agent": {"b": 3}}', 't');
insert into made values ('b4', pg_temp.propose('b', array['post_tweet', 'write_content']));
select is(public.ops_approve_proposal((select (result ->> 'proposal_id')::bigint from made where name = 'a3'), 'ann') ->> 'status',
  'accepted', 'a pending proposal approved');
select is(public.ops_reject_proposal((select (result ->> 'proposal_id')::bigint from made where name = 'b2'), 'no', 'ann') ->> 'status',
  'rejected', 'a pending proposal rejected by a person');
select public.ops_set_policy('step_kind_gates', '{"write_content": {"daily_limit": 5}, "deploy": {"enabled": false}}', 't');
select is(public.ops_approve_proposal((select (result ->> 'proposal_id')::bigint from made where name = 'b4'), 'ann') ->> 'reason',
  'daily quota for write_content reached (5/5 used today, this proposal needs 1)', 'a pending proposal refused by a gate');
select is_empty('select pg_temp.mismatches()', 'after approvals and rejections the counters are the old counts');
select is(pg_temp.counted('daily_proposals:b'), 1::bigint, 'both rejections left b''s count');

-- Cancellation takes the mission's steps out of their kinds (a running step too) and frees the quota.
update public.ops_mission_steps set priority = 100
 where mission_id = (select (result ->> 'mission_id')::bigint from made where name = 'c2') and position = 0;
select is(public.ops_claim_next_step('counter-test', array['write_content']) -> 0 ->> 'mission_id',
  (select result ->> 'mission_id' from made where name = 'c2'), 'one of its steps is running');
select is(public.ops_cancel_mission((select (result ->> 'mission_id')::bigint from made where name = 'c2'), 'enough')
  ->> 'status', 'cancelled', 'a mission with four write_content steps cancelled');
select is_empty('select pg_temp.mismatches()', 'after the cancellation the counters are the old counts');
select is(pg_temp.counted('kind_steps:write_content'), 1::bigint, 'its steps left the kind''s count');
select is(pg_temp.propose('c', array['write_content', 'write_content', 'draft_tweet']) ->> 'status', 'accepted',
  'the quota freed by the cancellation is used again');

-- Finalization: a mission worked to success, one failed, both leave active_missions.
select is(pg_temp.work((select (result ->> 'mission_id')::bigint from made where name = 'a1')), 'succeeded', 'a mission succeeds');
create temp table failing as select public.ops_claim_next_step('counter-test', array['translate']) -> 0 as step;
select is(public.ops_fail_step((select (step ->> 'id')::bigint from failing), 1, 'broken', false) ->> 'mission_status',
  'failed', 'a mission fails');
select is_empty('select pg_temp.mismatches()', 'after finalization the counters are the old counts');
select is(pg_temp.counted('active_missions'),
  (select count(*) from public.ops_missions where status in ('approved', 'running')), 'active missions: approved or running');
select is(pg_temp.counted('kind_steps:translate'), 1::bigint, 'steps of finished missions still count today');

-- Rows moved to yesterday (an UPDATE of created_at, kind or mission) leave today's counters.
update public.ops_mission_steps set created_at = now() - interval '1 day'
 where mission_id = (select (result ->> 'mission_id')::bigint from made where name = 'a2') and kind = 'draft_tweet';
update public.ops_mission_steps set kind = 'analyze'
 where mission_id = (select (result ->> 'mission_id')::bigint from made where name = 'a2') and kind = 'summarize';
update public.ops_mission_proposals set created_at = now() - interval '1 day'
 where id = (select (result ->> 'proposal_id')::bigint from made where name = 'a1');
select is_empty('select pg_temp.mismatches()', 'after rows moved the counters are the old counts');
select is(pg_temp.counted('kind_steps:summarize'), 0::bigint, 'a step whose kind changed left its old kind');

-- Deletes: a step, a whole accepted proposal (cascading to its mission and steps), a cancelled one.
delete from public.ops_mission_steps
 where mission_id = (select (result ->> 'mission_id')::bigint from made where name = 'a3') and kind = 'analyze';
delete from public.ops_mission_proposals where id in
  (select (result ->> 'proposal_id')::bigint from made where name in ('b1', 'c2'));
select is_empty('select pg_temp.mismatches()', 'after deletes the counters are the old counts');

-- Counters split over several rows (shards) read as their sum; writers take the first row nobody holds.
insert into public.ops_gate_counters (gate, key, day, shard, used)
values ('kind_steps', 'crawl', ops_internal.utc_today(), -2, 5), ('kind_steps', 'crawl', ops_internal.utc_today(), -1, -5);
select pg_temp.propose('a', array['crawl']);
select is_empty('select pg_temp.mismatches()', 'a counter of several rows is their sum');
select is((select used from public.ops_gate_counters where gate = 'kind_steps' and key = 'crawl' and shard = -2), 6::bigint,
  'the write went to the first row');

-- Earlier days are not read, and the first row of a counter's new day drops its rows before the day before
-- yesterday.
insert into public.ops_gate_counters (gate, key, day, shard, used)
values ('kind_steps', 'analyze', ops_internal.utc_today() - 1, 0, 100), ('kind_steps', 'fetch', ops_internal.utc_today() - 3, 0, 7),
       ('kind_steps', 'fetch', ops_internal.utc_today() - 2, 0, 7), ('kind_steps', 'fetch', ops_internal.utc_today() - 1, 0, 7);
select is(pg_temp.propose('a', array['fetch']) ->> 'status', 'accepted', 'a step of a new kind');
select is_empty('select pg_temp.mismatches()', 'yesterday''s rows are not read');
select results_eq($$select day - ops_internal.utc_today() from public.ops_gate_counters where key = 'fetch' order by day$$,
  $$values (-2), (-1), (0)$$, 'a counter''s first row of the day drops its rows before the day before yesterday');

-- The backfill and repair: a recount corrects counters that differ, and only those.
update public.ops_gate_counters set used = used + 3 where gate = 'daily_proposals' and key = 'a';
select is(ops_internal.reconcile_gate_counters(), 1::bigint, 'a wrong counter is corrected');
delete from public.ops_gate_counters;
select cmp_ok(ops_internal.reconcile_gate_counters(), '>', 5::bigint, 'an empty table is filled');
select is_empty('select pg_temp.mismatches()', 'the backfill gives the old counts');
select is(ops_internal.reconcile_gate_counters(), 0::bigint, 'and has nothing left to correct');

-- TRUNCATE empties the counters of what it empties.
set local client_min_messages = warning;
truncate public.ops_mission_proposals cascade;
select is_empty('select pg_temp.mismatches()', 'after TRUNCATE the counters are the old counts');
select is((select count(*)::int from public.ops_gate_counters where day >= ops_internal.utc_today() and used <> 0), 0,
  'no counter is left');

select * from finish();
rollback;
