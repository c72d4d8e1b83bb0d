-- Stall detection: one queue:stalled per kind per episode with the reason, its reason kept current,
-- queue:recovered when it clears; the heartbeat runs it; ops_status shows it and the alerts summary.
begin;
select plan(12);

select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["crawl", "analyze"]}', 'test');
select public.ops_set_policy('alerts', '{"queued_age_seconds": 600}', 'test');
select public.ops_create_proposal('{"agent_id": "brain", "title": "waits", "steps": [{"kind": "crawl"}]}');
select is(ops_internal.check_stalls(), '{"stalled": 0, "opened": 0, "recovered": 0}'::jsonb, 'fresh work is not stalled');

update public.ops_mission_steps set run_after = now() - interval '11 minutes' where kind = 'crawl';
select is(ops_internal.check_stalls(), '{"stalled": 1, "opened": 1, "recovered": 0}'::jsonb, 'older than alerts.queued_age_seconds: stalled');
select results_eq($$select type, payload ->> 'kind', payload ->> 'reason', tags from public.ops_agent_events where type like 'queue:%'$$,
  $$values ('queue:stalled', 'crawl', 'no_worker', array['queue:stalled', 'queue', 'stalled', 'crawl', 'warning'])$$,
  'one event, with the reason: no live worker serves the kind');
select is(ops_internal.check_stalls(), '{"stalled": 1, "opened": 0, "recovered": 0}'::jsonb, 'the next heartbeat opens no new episode');

select public.ops_worker_heartbeat('{"worker_id": "w1", "kinds": ["crawl"]}');
select ops_internal.check_stalls();
select is((select reason from public.ops_queue_stalls where kind = 'crawl'), 'workers_busy', 'a live worker serves it: workers busy');
select public.ops_set_policy('worker:crawl', '{"enabled": false, "reason": "maintenance"}', 'ops');
select ops_internal.check_stalls();
select is((select reason from public.ops_queue_stalls where kind = 'crawl'), 'disabled', 'a disabled kind says so');
select is((select count(*)::int from public.ops_agent_events where type = 'queue:stalled'), 1, 'still one event for the episode');

select is((public.ops_status() -> 'stalled' -> 0 ->> 'kind'), 'crawl', 'status lists the stalled kind');
select is((public.ops_status() -> 'alerts' ->> 'stalled_kinds'), '1', 'and counts it among the alerts');

select public.ops_set_policy('worker:crawl', '{"enabled": true}', 'ops');
select public.ops_complete_step((c ->> 'id')::bigint, 1, '{}') from (select public.ops_claim_next_step('w1', array['crawl']) -> 0 as c) x;
select is((public.ops_heartbeat() -> 'stalls'), '{"stalled": 0, "opened": 0, "recovered": 1}'::jsonb, 'the heartbeat closes the episode');
select is((select count(*)::int from public.ops_agent_events where type = 'queue:recovered' and payload ->> 'kind' = 'crawl'), 1,
  'with one queue:recovered');
select throws_ok($$select public.ops_set_policy('alerts', '{"queued_age_seconds": 1}', 'test')$$, 'PT400',
  'value.queued_age_seconds must be from 10 to 604800', 'the alerts policy is checked');

select * from finish();
rollback;
