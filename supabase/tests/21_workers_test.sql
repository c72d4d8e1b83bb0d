-- Worker presence: ops_worker_heartbeat, claims, ops_list_workers, sign-off, lost workers, the workers policy.
begin;
select plan(16);

create temp table hb as select public.ops_worker_heartbeat(
  '{"worker_id": "vps-1", "host": "vps", "kinds": ["crawl", "analyze"], "concurrency": 4, "version": "0.2.0"}') as r;
select is((select r - 'started_at' - 'last_seen_at' from hb),
  '{"worker_id": "vps-1", "host": "vps", "kinds": ["crawl", "analyze"], "concurrency": 4, "version": "0.2.0",
    "stopping": false, "live": true, "running": []}'::jsonb, 'a heartbeat registers the worker and answers with it');
select is((select count(*)::int from public.ops_agent_events where type = 'worker:joined' and payload ->> 'worker_id' = 'vps-1'), 1,
  'joining is an event');
select public.ops_worker_heartbeat('{"worker_id": "vps-1", "kinds": ["crawl", "analyze"]}');
select is((select count(*)::int from public.ops_agent_events where type = 'worker:joined'), 1, 'a known worker does not join again');
select throws_ok($$select public.ops_worker_heartbeat('{"host": "x"}')$$, 'PT400', 'worker.worker_id is required', 'worker_id is required');
select throws_ok($$select public.ops_worker_heartbeat('{"worker_id": "w", "kinds": ["Bad Kind"]}')$$, 'PT400',
  'worker.kinds[0] must match ^[a-z][a-z0-9_]{0,63}$', 'kinds are checked');
select throws_ok($$select public.ops_worker_heartbeat('{"worker_id": "w", "colour": 1}')$$, 'PT400', null, 'unknown fields are refused');

-- A claim is a sign of life too, and announces the kinds it asks for.
select public.ops_create_proposal('{"agent_id": "brain", "title": "w", "steps": [{"kind": "crawl"}]}');
select public.ops_claim_next_step('vps-2', array['crawl'], 1, 60);
select is((select kinds from public.ops_workers where worker_id = 'vps-2'), array['crawl'], 'a claim registers its worker and kinds');
create temp table listed as select public.ops_list_workers() as r;
select is((select jsonb_array_length(r) from listed), 2, 'both workers are listed');
select is((select e -> 'running' -> 0 ->> 'kind' from listed, jsonb_array_elements(r) e where e ->> 'worker_id' = 'vps-2'), 'crawl',
  'with the steps each runs');
select ok(ops_internal.kind_served('crawl') and not ops_internal.kind_served('write_content'), 'which kinds a live worker serves');

-- Presence expires by policy; the heartbeat forgets lost workers with a warning.
select public.ops_set_policy('workers', '{"presence_seconds": 30}', 'test');
update public.ops_workers set last_seen_at = now() - interval '31 seconds' where worker_id = 'vps-1';
select is((select e ->> 'live' from jsonb_array_elements(public.ops_list_workers()) e where e ->> 'worker_id' = 'vps-1'), 'false',
  'not seen for longer than workers.presence_seconds: not live');
select is(ops_internal.forget_lost_workers(), '{"lost": 1}'::jsonb, 'the heartbeat task forgets it');
select is((select tags from public.ops_agent_events where type = 'worker:lost'), array['worker:lost', 'worker', 'lost', 'warning'],
  'with a warning event');

select is(public.ops_worker_sign_off('vps-2'), '{"worker_id": "vps-2", "signed_off": true}'::jsonb, 'a clean stop signs off');
select is(public.ops_worker_sign_off('vps-2'), '{"worker_id": "vps-2", "signed_off": false}'::jsonb, 'twice is harmless');
select throws_ok($$select public.ops_set_policy('workers', '{"presence_seconds": 1}', 'test')$$, 'PT400',
  'value.presence_seconds must be from 5 to 86400', 'the presence policy is checked');

select * from finish();
rollback;
