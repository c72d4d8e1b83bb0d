-- ops_create_proposal: validation, dedupe, gates in seed order, auto-approve, mission + steps, events.
begin;
select plan(42);

create function pg_temp.propose(body jsonb) returns jsonb language sql as $$ select public.ops_create_proposal(body) $$;
create function pg_temp.counts() returns bigint[] language sql as $$
  select array[(select count(*) from public.ops_mission_proposals), (select count(*) from public.ops_missions),
               (select count(*) from public.ops_mission_steps), (select count(*) from public.ops_agent_events)] $$;

-- Auto-approved: accepted, a mission, steps queued/pending by their dependencies.
select is(pg_temp.propose('{"agent_id": "brain", "title": "research", "steps": [{"kind": "crawl", "payload": {"url": "https://example.com"}}, {"kind": "analyze"}, {"kind": "write_content", "depends_on": [0]}]}') - 'proposal_id' - 'mission_id',
  '{"status": "accepted", "reason": null, "duplicate": false}'::jsonb, 'low-risk kinds are auto-approved');
select is((select auto_approved from public.ops_mission_proposals where title = 'research'), true, 'marked auto_approved');
select is((select m.status from public.ops_missions m join public.ops_mission_proposals p on p.id = m.proposal_id where p.title = 'research'),
  'approved', 'the mission starts approved');
select results_eq(
  $$select s.position, s.kind, s.status, s.depends_on, s.payload from public.ops_mission_steps s
     join public.ops_missions m on m.id = s.mission_id join public.ops_mission_proposals p on p.id = m.proposal_id
     where p.title = 'research' order by s.position$$,
  $$values (0, 'crawl', 'queued', '{}'::int[], '{"url": "https://example.com"}'::jsonb),
           (1, 'analyze', 'pending', '{0}'::int[], '{}'::jsonb),
           (2, 'write_content', 'pending', '{0}'::int[], '{}'::jsonb)$$,
  'steps run in order by default; depends_on opens parallel branches');
select is((select max_attempts from public.ops_mission_steps where kind = 'crawl'), 3, 'max_attempts comes from worker_policy');
select results_eq(
  $$select type from public.ops_agent_events e join public.ops_mission_proposals p on p.id = e.proposal_id
     where p.title = 'research' order by e.id$$,
  $$values ('proposal:created'), ('proposal:accepted'), ('mission:approved')$$,
  'proposal and mission events, in order');
select is((select count(*)::int from public.ops_agent_events e
            join public.ops_missions m on m.id = e.mission_id join public.ops_mission_proposals p on p.id = m.proposal_id
           where p.title = 'research' and e.type in ('step:queued', 'step:pending')), 3, 'one event per new step');
select ok((select tags @> array['step:queued', 'step', 'queued', 'crawl'] from public.ops_agent_events where type = 'step:queued' limit 1),
  'step events are tagged with type, parts and kind');

-- Needs a human: pending with the reason, nothing queued.
select is(pg_temp.propose('{"agent_id": "twitter-alt", "title": "tweet it", "steps": [{"kind": "draft_tweet"}, {"kind": "post_tweet"}]}') ->> 'reason',
  'step kind post_tweet needs a human (not in auto_approve.allowed_step_kinds)', 'risky kinds wait for a human');
select is((select status from public.ops_mission_proposals where title = 'tweet it'), 'pending', 'stored as pending');
select is((select count(*)::int from public.ops_missions m join public.ops_mission_proposals p on p.id = m.proposal_id where p.title = 'tweet it'),
  0, 'no mission for a pending proposal');
select lives_ok($$select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["analyze"], "allowed_sources": ["trigger"]}', 'test')$$,
  'auto-approve limited to trigger proposals');
select is(pg_temp.propose('{"agent_id": "brain", "title": "by api", "steps": [{"kind": "analyze"}]}') ->> 'reason',
  'source api needs a human (not in auto_approve.allowed_sources)', 'allowed_sources is honoured');
select is(pg_temp.propose('{"agent_id": "brain", "title": "by trigger", "source": "trigger", "steps": [{"kind": "analyze"}]}') ->> 'status',
  'accepted', 'a listed source passes');
select lives_ok($$select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["analyze", "crawl", "post_tweet", "deploy"]}', 'test')$$,
  'auto-approve widened for the gate tests');

-- Dedupe: the first result again, nothing written.
select is(pg_temp.propose('{"agent_id": "brain", "title": "once", "dedupe_key": "k-1", "steps": [{"kind": "analyze"}]}') ->> 'duplicate', 'false', 'first call creates');
create temp table before_dup as select pg_temp.counts() as c;
select is(pg_temp.propose('{"agent_id": "brain", "title": "once again", "dedupe_key": "k-1", "steps": [{"kind": "crawl"}]}') - 'reason',
  (select jsonb_build_object('proposal_id', p.id, 'status', 'accepted', 'mission_id', m.id, 'duplicate', true)
     from public.ops_mission_proposals p join public.ops_missions m on m.proposal_id = p.id where p.dedupe_key = 'k-1'),
  'same dedupe_key returns the first result, marked duplicate');
select is(pg_temp.counts(), (select c from before_dup), 'a duplicate writes nothing');

-- Gates, in order. Cap gate: post_tweet daily_limit 8 counts today's steps in missions not cancelled.
select lives_ok($$select public.ops_set_policy('step_kind_gates', '{"post_tweet": {"daily_limit": 2}, "deploy": {"enabled": false}}', 'test')$$, 'quota of 2 tweets');
select is(pg_temp.propose('{"agent_id": "twitter-alt", "title": "t1", "steps": [{"kind": "post_tweet"}]}') ->> 'status', 'accepted', 'tweet 1 fits');
select is(pg_temp.propose('{"agent_id": "twitter-alt", "title": "t23", "steps": [{"kind": "post_tweet"}, {"kind": "post_tweet"}]}') ->> 'reason',
  'daily quota for post_tweet reached (1/2 used today, this proposal needs 2)', 'a proposal that would overflow the quota is rejected');
select is(pg_temp.propose('{"agent_id": "twitter-alt", "title": "t2", "steps": [{"kind": "post_tweet"}]}') ->> 'status', 'accepted', 'tweet 2 fits');
select is(pg_temp.propose('{"agent_id": "twitter-alt", "title": "t3", "steps": [{"kind": "post_tweet"}]}') ->> 'reason',
  'daily quota for post_tweet reached (2/2 used today, this proposal needs 1)', 'tweet 3 is rejected at the gate');
select is((select count(*)::int from public.ops_mission_steps where kind = 'post_tweet'), 2, 'nothing reached the queue (pitfall 3)');
select ok((select tags @> array['proposal:rejected', 'warning'] from public.ops_agent_events where type = 'proposal:rejected' order by id desc limit 1),
  'a rejection is a warning event');
select is((select rejection_reason from public.ops_mission_proposals where title = 't3'),
  'daily quota for post_tweet reached (2/2 used today, this proposal needs 1)', 'rejected proposals are kept with their reason');
update public.ops_missions set status = 'cancelled', failure_reason = 'test', finalized_at = now()
 where id = (select m.id from public.ops_missions m join public.ops_mission_proposals p on p.id = m.proposal_id where p.title = 't2');
select is(pg_temp.propose('{"agent_id": "twitter-alt", "title": "t4", "steps": [{"kind": "post_tweet"}]}') ->> 'status', 'accepted',
  'steps of cancelled missions do not count');
select is(pg_temp.propose('{"agent_id": "ops", "title": "ship", "steps": [{"kind": "deploy"}]}') ->> 'reason',
  'step kind deploy is disabled by policy (step_kind_gates.deploy.enabled = false)', 'a disabled kind is rejected');

-- Per-agent daily proposal limit: pending and accepted proposals of today count.
select lives_ok($$select public.ops_set_policy('daily_proposal_limit', '{"limit": 100, "per_agent": {"chatty": 2}}', 'test')$$, 'chatty may propose twice');
select is(pg_temp.propose('{"agent_id": "chatty", "title": "c1", "steps": [{"kind": "analyze"}]}') ->> 'status', 'accepted', 'first');
select is(pg_temp.propose('{"agent_id": "chatty", "title": "c2", "steps": [{"kind": "draft_tweet"}]}') ->> 'status', 'pending', 'second (pending counts)');
select is(pg_temp.propose('{"agent_id": "chatty", "title": "c3", "steps": [{"kind": "analyze"}]}') ->> 'reason',
  'daily proposal limit reached for chatty (2/2)', 'third is over the limit');

-- Max active missions, only when a mission would be created.
select lives_ok(format($$select public.ops_set_policy('max_active_missions', '{"limit": %s}', 'test')$$,
  (select count(*) from public.ops_missions where status in ('approved', 'running'))), 'no room for another mission');
select is(pg_temp.propose('{"agent_id": "brain", "title": "one more", "steps": [{"kind": "analyze"}]}') ->> 'reason',
  format('too many active missions (%s/%s)', (select count(*) from public.ops_missions where status in ('approved', 'running')),
         (select count(*) from public.ops_missions where status in ('approved', 'running'))), 'a full house rejects');
select is(pg_temp.propose('{"agent_id": "brain", "title": "for later", "steps": [{"kind": "draft_tweet"}]}') ->> 'status', 'pending',
  'a proposal that waits for a human does not need a slot yet');

-- Kill switch first of all.
select lives_ok($$select public.ops_set_policy('system', '{"enabled": false, "reason": "maintenance"}', 'test')$$, 'kill switch off');
select is(pg_temp.propose('{"agent_id": "brain", "title": "blocked", "steps": [{"kind": "draft_tweet"}]}') ->> 'reason',
  'system disabled by policy (system.enabled = false): maintenance', 'everything is rejected while the system is off');

-- Bad input: PT400 naming the field and the rule, nothing written.
create temp table before_bad as select pg_temp.counts() as c;
select throws_ok($$select pg_temp.propose('[]')$$, 'PT400', 'proposal must be a JSON object', 'not an object');
select throws_ok($$select pg_temp.propose('{"agent_id": "brain", "title": "x", "steps": [{"kind": "a"}, {"kind": "b"}, {"kind": "Bad-Kind"}]}')$$,
  'PT400', 'steps[2].kind must match ^[a-z][a-z0-9_]{0,63}$', 'the issue''s example message');
select throws_ok($$select pg_temp.propose(jsonb_build_object('agent_id', 'brain', 'title', repeat('x', 201), 'steps', '[{"kind": "a"}]'::jsonb))$$,
  'PT400', 'title must be 1 to 200 characters', 'title length');
select throws_ok($$select pg_temp.propose('{"agent_id": "brain", "title": "x", "steps": []}')$$, 'PT400', 'steps must hold 1 to 50 steps', 'no empty missions');
select is(pg_temp.counts(), (select c from before_bad), 'refused input writes nothing');

select * from finish();
rollback;
