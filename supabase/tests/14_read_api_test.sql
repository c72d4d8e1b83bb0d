-- The read API: lists newest first with filters, one mission with its steps, the status summary.
begin;
select plan(12);

select public.ops_create_proposal('{"agent_id": "brain", "title": "r1", "steps": [{"kind": "crawl"}, {"kind": "analyze"}]}');
select public.ops_create_proposal('{"agent_id": "twitter-alt", "title": "r2", "steps": [{"kind": "post_tweet"}]}');
select public.ops_create_proposal('{"agent_id": "brain", "title": "r3", "steps": [{"kind": "analyze"}]}');
select public.ops_claim_next_step('worker-a', array['crawl']);

select is((select array_agg(x ->> 'title') from jsonb_array_elements(public.ops_list_proposals()) x), array['r3', 'r2', 'r1'],
  'proposals, newest first');
select is((public.ops_list_proposals('pending') -> 0 ->> 'reason'),
  'step kind post_tweet needs a human (not in auto_approve.allowed_step_kinds)', 'pending ones say why they wait');
select is(jsonb_array_length(public.ops_list_proposals(agent_id => 'brain', max_rows => 1)), 1, 'filters and caps');
select is((select array_agg(x ->> 'title') from jsonb_array_elements(public.ops_list_missions(status => 'running')) x), array['r1'],
  'missions by status');
select is((select jsonb_agg(s ->> 'status') from jsonb_array_elements(public.ops_get_mission(
  (select min(id) from public.ops_missions)) -> 'steps') s), '["running", "pending"]'::jsonb, 'a mission comes with its steps in order');
select throws_ok($$select public.ops_get_mission(999999)$$, 'PT404', 'mission 999999 not found', 'unknown mission');
select is(jsonb_array_length(public.ops_list_steps(status => 'queued')), 1, 'steps by status');
select is((select array_agg(x ->> 'type') from jsonb_array_elements(public.ops_list_events(type => 'step:running')) x), array['step:running'],
  'events by type');
select is((select array_agg((x ->> 'id')::bigint) from jsonb_array_elements(
            public.ops_list_events(after_id => (select min(id) from public.ops_agent_events), max_rows => 2)) x),
  (select array_agg(id) from (select id from public.ops_agent_events order by id offset 1 limit 2) x),
  'after_id reads forward, oldest first');
select throws_ok($$select public.ops_list_events(max_rows => 0)$$, 'PT400', 'max_rows must be from 1 to 1000', 'row cap is checked');
select is(public.ops_status() - 'last_heartbeat' - 'recent_missions' - 'proposals' - 'missions' - 'workers' - 'alerts'
    - 'heartbeat_age_seconds' - 'spend_today',
  '{"system_enabled": true, "queue": {"analyze": 1}, "running": {"worker-a": 1}, "reactions_queued": 0, "circuit_breakers": {},
    "stalled": [], "breakers": {}, "limits": {}}'::jsonb,
  'status: queue by kind, running per worker, breakers');
select is(public.ops_status() -> 'proposals' -> 'pending', '1'::jsonb, 'status: pending proposals');

select * from finish();
rollback;
