-- ops_claim_next_step: kinds, run_after, priority, batch, lease, kill switch, per-kind disable, inputs.
begin;
select plan(21);

select public.ops_create_proposal('{"agent_id": "brain", "title": "m1", "steps": [{"kind": "crawl", "payload": {"n": 1}}, {"kind": "analyze"}]}');
select public.ops_create_proposal('{"agent_id": "growth", "title": "m2", "steps": [{"kind": "analyze", "payload": {"n": 2}}]}');
select public.ops_create_proposal('{"agent_id": "growth", "title": "m3", "steps": [{"kind": "crawl", "payload": {"n": 3}}]}');

select is(public.ops_claim_next_step('w1', array['write_content']), '[]'::jsonb, 'nothing of a kind nobody queued');
create temp table c1 as select public.ops_claim_next_step('w1', array['analyze'], 5, 60) as r;
select is(jsonb_array_length((select r from c1)), 1, 'only queued steps of the asked kinds (m1''s analyze is still pending)');
select is((select r -> 0 -> 'payload' from c1), '{"n": 2}'::jsonb, 'the payload comes back');
select is((select r -> 0 ->> 'agent_id' from c1), 'growth', 'with the mission''s agent');
select results_eq(
  $$select status, attempt, reserved_by, lease_expires_at between now() + interval '59 seconds' and now() + interval '61 seconds'
      from public.ops_mission_steps where id = (select (r -> 0 ->> 'id')::bigint from c1)$$,
  $$values ('running', 1, 'w1', true)$$, 'running, attempt 1, reserved, leased for the asked seconds');
select is((select m.status from public.ops_missions m where m.id = (select (r -> 0 ->> 'mission_id')::bigint from c1)), 'running',
  'the first claim starts the mission');

-- Priority first, then run_after, then id; run_after in the future is not claimable.
update public.ops_mission_steps set priority = 5 where payload = '{"n": 3}';
update public.ops_mission_steps set run_after = now() + interval '1 hour' where payload = '{"n": 1}';
create temp table c2 as select public.ops_claim_next_step('w2', null, 10) as r;
select is(jsonb_array_length((select r from c2)), 1, 'a step waiting for its run_after is skipped');
select is((select r -> 0 -> 'payload' from c2), '{"n": 3}'::jsonb, 'higher priority first');
select is((select lease_expires_at - reserved_at from public.ops_mission_steps where payload = '{"n": 3}'), interval '30 minutes',
  'default lease is worker_policy.lease_seconds (the seed''s 30 minutes)');

-- Inputs: outputs of the steps a step depends on.
update public.ops_mission_steps set run_after = now() where payload = '{"n": 1}';
create temp table c3 as select public.ops_claim_next_step('w3', array['crawl']) as r;
select public.ops_complete_step((select (r -> 0 ->> 'id')::bigint from c3), 1, '{"pages": 7}');
create temp table c4 as select public.ops_claim_next_step('w3', array['analyze']) as r;
select is((select r -> 0 -> 'inputs' from c4), '{"0": {"pages": 7}}'::jsonb, 'inputs hold the outputs of its dependencies');

-- Kill switch and per-kind disable flags.
select public.ops_create_proposal('{"agent_id": "brain", "title": "m4", "steps": [{"kind": "analyze"}]}');
select public.ops_create_proposal('{"agent_id": "brain", "title": "m5", "steps": [{"kind": "crawl"}]}');
select public.ops_set_policy('system', '{"enabled": false}', 'test');
select is(public.ops_claim_next_step('w4', null, 10), '[]'::jsonb, 'the kill switch stops all claiming');
select public.ops_set_policy('system', '{"enabled": true}', 'test');
select public.ops_set_policy('worker:analyze', '{"enabled": false, "reason": "circuit open"}', 'test');
create temp table c5 as select public.ops_claim_next_step('w4', null, 10) as r;
select is((select array_agg(x ->> 'kind') from jsonb_array_elements((select r from c5)) x), array['crawl'],
  'a disabled kind is not claimed');
select public.ops_set_policy('worker:analyze', '{"enabled": true}', 'test');
select is((select public.ops_claim_next_step('w4', null, 10) -> 0 ->> 'kind'), 'analyze', 're-enabled, it is claimed again');

select lives_ok($$select public.ops_set_policy('worker_policy', '{"lease_seconds": 1800, "kinds": {"crawl": {"lease_seconds": 90}}}', 'test')$$, 'per-kind lease');
select public.ops_create_proposal('{"agent_id": "brain", "title": "m6", "steps": [{"kind": "crawl"}]}');
create temp table c6 as select public.ops_claim_next_step('w5') as r;
select is((select lease_expires_at - reserved_at from public.ops_mission_steps where id = (select (r -> 0 ->> 'id')::bigint from c6)),
  interval '90 seconds', 'per-kind lease override applies');

-- Bad input.
select throws_ok($$select public.ops_claim_next_step('w', null, 0)$$, 'PT400', 'max_steps must be from 1 to 100', 'batch too small');
select throws_ok($$select public.ops_claim_next_step('w', null, 101)$$, 'PT400', 'max_steps must be from 1 to 100', 'batch too large');
select throws_ok($$select public.ops_claim_next_step('w', null, 1, 0)$$, 'PT400', 'lease_seconds must be from 1 to 86400', 'lease range');
select throws_ok($$select public.ops_claim_next_step('w', array['ok', 'Not OK'])$$, 'PT400', 'kinds[1] must match ^[a-z][a-z0-9_]{0,63}$', 'kinds are checked');
select throws_ok($$select public.ops_claim_next_step('')$$, 'PT400', 'worker_id must be 1 to 200 characters', 'a worker needs an id');
select throws_ok($$select public.ops_claim_next_step(null)$$, 'PT400', 'worker_id is required', 'worker_id is required');

select * from finish();
rollback;
