-- The gates refuse kinds that cannot run: disabled kinds always, kinds no live worker serves on request.
begin;
select plan(8);

select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["crawl", "analyze"]}', 'test');
select public.ops_set_policy('worker:analyze', '{"enabled": false, "reason": "vendor outage"}', 'ops');
select is(public.ops_create_proposal('{"agent_id": "brain", "title": "t", "steps": [{"kind": "crawl"}, {"kind": "analyze"}]}') - 'proposal_id' - 'duplicate',
  '{"status": "rejected", "mission_id": null, "reason": "step kind analyze is disabled (worker:analyze): vendor outage"}'::jsonb,
  'a proposal naming a disabled kind is rejected at the gate, with the reason');
select is(ops_internal.gate_reason('brain', array['crawl'], true, true), null, 'other kinds pass');

-- A pending proposal for a kind disabled since then is refused on approval too (the same chain).
select public.ops_set_policy('auto_approve', '{"enabled": false}', 'test');
select public.ops_set_policy('worker:analyze', '{"enabled": true}', 'ops');
create temp table p as select (public.ops_create_proposal('{"agent_id": "brain", "title": "later", "steps": [{"kind": "analyze"}]}') ->> 'proposal_id')::bigint as id;
select public.ops_set_policy('worker:analyze', '{"enabled": false, "reason": "again"}', 'ops');
select is(public.ops_approve_proposal((select id from p), 'ops') ->> 'reason', 'step kind analyze is disabled (worker:analyze): again',
  'approval re-runs the gates');
select is((public.ops_preview_gates((select id from p)) ->> 'passes'), null, 'a decided proposal has no preview verdict');

-- require_live_worker: off by default; on, a kind nobody serves is refused, and serving it lets it through.
select is(ops_internal.gate_reason('brain', array['crawl'], true, true), null, 'off: no worker needed');
select public.ops_set_policy('gates', '{"require_live_worker": true}', 'test');
select is(ops_internal.gate_reason('brain', array['crawl'], true, true),
  'no live worker serves step kind crawl (gates.require_live_worker)', 'on: a kind no live worker serves is refused');
select public.ops_worker_heartbeat('{"worker_id": "w1", "kinds": ["crawl"]}');
select is(ops_internal.gate_reason('brain', array['crawl'], true, true), null, 'a live worker serving it lets it through');
select throws_ok($$select public.ops_set_policy('gates', '{"require_live_worker": "yes"}', 'test')$$, 'PT400',
  'value.require_live_worker must be true or false', 'the gates policy is checked');

select * from finish();
rollback;
