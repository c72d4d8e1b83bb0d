-- ops_metrics(): everything /metrics shows in one read (queue, running per kind and worker, live workers,
-- breakers, stalls, counters and histograms from the rollup, heartbeat, notifications); ops_metrics_history():
-- the console's charts, one value per minute.
begin;
select plan(24);

select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["crawl", "analyze"]}', 'test');
select public.ops_create_proposal(pg_catalog.format('{"agent_id": "brain", "title": "t%s", "steps": [{"kind": "crawl"}]}', i)::jsonb)
  from generate_series(1, 4) i;
select public.ops_create_proposal('{"agent_id": "brain", "title": "a", "steps": [{"kind": "analyze"}]}');
select public.ops_worker_heartbeat('{"worker_id": "w1", "kinds": ["crawl", "analyze"], "concurrency": 4}');
select public.ops_worker_heartbeat('{"worker_id": "w2", "kinds": ["crawl"]}');
update public.ops_workers set last_seen_at = now() - interval '1 hour' where worker_id = 'w2';
select public.ops_claim_next_step('w1', array['crawl'], 2);
select public.ops_claim_next_step('w9', array['analyze'], 1);
update public.ops_mission_steps set run_after = now() - interval '90 seconds' where kind = 'crawl' and status = 'queued'
   and id = (select min(id) from public.ops_mission_steps where kind = 'crawl' and status = 'queued');
update public.ops_mission_steps set run_after = now() + interval '1 hour' where kind = 'crawl' and status = 'queued'
   and id = (select max(id) from public.ops_mission_steps where kind = 'crawl' and status = 'queued');

create temp table m as select public.ops_metrics() as doc;
create temp table crawl as select k as doc from m cross join jsonb_array_elements(m.doc -> 'kinds') k where k ->> 'kind' = 'crawl';

select results_eq($$select (doc ->> 'queued')::int, (doc ->> 'ready')::int, (doc ->> 'oldest_ready_age_seconds')::numeric from crawl$$,
  $$values (2, 1, 90.000)$$, 'queue depth, ready steps and the oldest ready step''s age per kind');
select is((select (doc ->> 'running')::int from crawl), 2, 'running steps per kind');
select is((select doc -> 'running_by_worker' from m), '{"w1": 2, "w9": 1}'::jsonb,
  'running steps per worker, whether or not the worker is live');
select is((select (doc ->> 'live_workers')::int from crawl), 1, 'live workers serving the kind (w2, not seen for an hour, is not)');
select is((select pg_catalog.jsonb_agg(w ->> 'worker_id' order by w ->> 'worker_id') from m cross join jsonb_array_elements(m.doc -> 'workers') w),
  '["w1", "w9"]'::jsonb, 'live workers only: w2 was not seen for an hour');
select is((select w -> 'running' from m cross join jsonb_array_elements(m.doc -> 'workers') w where w ->> 'worker_id' = 'w1'),
  '2'::jsonb, 'each live worker with the steps it runs');
select is((select doc -> 'breaker' ->> 'state' from crawl), 'closed', 'a kind without a breaker row is closed');
select is((select doc -> 'stalled' from crawl), 'null'::jsonb, 'and not stalled');
select is((select doc -> 'duration' from crawl), '{"le": [], "sum": 0, "count": 0}'::jsonb, 'nothing finished: an empty histogram');
select is((select k ->> 'enabled' from m cross join jsonb_array_elements(m.doc -> 'kinds') k where k ->> 'kind' = 'deploy'),
  'false', 'a kind disabled by the gates is listed, disabled');
select is((select doc -> 'heartbeat' ->> 'late' from m), 'true', 'no heartbeat has run: late');
select is((select doc -> 'heartbeat' -> 'last' from m), 'null'::jsonb, 'and none to show');

-- Breakers, stalls, counters, heartbeats, notifications.
insert into public.ops_kind_breakers (kind, state, consecutive_failures, last_error, opened_at, reopen_at, opens)
values ('crawl', 'open', 3, 'boom', now(), now() + interval '10 minutes', 1);
insert into public.ops_queue_stalls (kind, reason, since, oldest_ready_at, queued)
values ('crawl', 'workers_busy', now() - interval '20 minutes', now() - interval '30 minutes', 2);
insert into public.ops_metrics_totals (kind, succeeded, failed, retried, duration_buckets, duration_sum)
values ('crawl', 7, 2, 1, '{1,0,2,0,0,0,0,0,0,0,0,0,0,4}', 9000.5);
update public.ops_metrics_state set heartbeats = 10, heartbeat_failures = 1, heartbeat_ms_sum = 500,
  notifications_sent = 4, notifications_dead = 1, rolled_until = date_trunc('minute', now(), 'UTC');
insert into public.ops_action_runs (action, status, duration_ms, started_at, finished_at)
values ('heartbeat', 'failed', 42, now() - interval '10 seconds', now());
insert into public.ops_notifications (sink, event_id, event_type, matched, status, attempts)
values ('ops', 1, 'mission:failed', 'type', 'pending', 2), ('ops', 2, 'mission:failed', 'type', 'pending', 0);
insert into public.ops_notifications (sink, event_id, event_type, matched, status, dead_at)
values ('ops', 3, 'mission:failed', 'type', 'dead', now());

delete from m;
insert into m select public.ops_metrics();
delete from crawl;
insert into crawl select k from m cross join jsonb_array_elements(m.doc -> 'kinds') k where k ->> 'kind' = 'crawl';
select is((select doc -> 'breaker' from crawl),
  jsonb_build_object('state', 'open', 'consecutive_failures', 3, 'opens', 1, 'reopen_at', now() + interval '10 minutes',
    'last_error', 'boom'), 'the breaker''s state, failures, opens, next probe and last error');
select is((select doc -> 'stalled' ->> 'reason' from crawl), 'workers_busy', 'a stalled kind with its reason');
select is((select (doc -> 'stalled' ->> 'stalled_seconds')::numeric from crawl), 1200.000, 'and how long it has been stalled');
select results_eq($$select (doc ->> 'succeeded')::int, (doc ->> 'failed')::int, (doc ->> 'retried')::int from crawl$$,
  $$values (7, 2, 1)$$, 'the counters from the running totals');
select is((select doc -> 'duration' from crawl),
  '{"le": [1, 1, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3], "sum": 9000.5, "count": 7}'::jsonb,
  'the histogram, cumulative per bound, with its count (the +Inf bucket) and sum');
select is((select (doc -> 'heartbeat') - 'age_seconds'::text from m),
  jsonb_build_object('runs', 10, 'failures', 1, 'duration_ms_sum', 500, 'late', false,
    'last', jsonb_build_object('id', (select max(id) from public.ops_action_runs), 'status', 'failed',
      'started_at', now() - interval '10 seconds', 'duration_ms', 42)),
  'the heartbeat: totals, the last run, not late');
select is((select doc -> 'notifications' from m),
  '{"outbox": {"pending": 2, "sending": 0, "sent": 0, "dead": 1}, "retrying": 1, "sent_total": 4, "dead_total": 1}'::jsonb,
  'the outbox by status, retries waiting, and deliveries and dead letters so far');

-- History for the charts.
insert into public.ops_metrics_minutely (minute, kind, succeeded, failed, queued)
values (date_trunc('minute', now(), 'UTC') - interval '2 minutes', 'crawl', 5, 1, 3),
       (date_trunc('minute', now(), 'UTC') - interval '2 minutes', 'analyze', 2, 0, null),
       (date_trunc('minute', now(), 'UTC'), 'crawl', 0, 0, 4);
insert into public.ops_metrics_system_minutely (minute, heartbeats, heartbeat_failures, heartbeat_ms_max)
values (date_trunc('minute', now(), 'UTC') - interval '2 minutes', 1, 0, 35);
create temp table h as select public.ops_metrics_history(1) as doc;
select results_eq($$select (doc ->> 'minutes')::int, jsonb_array_length(doc -> 'succeeded'), (doc ->> 'from')::timestamptz from h$$,
  $$values (60, 60, date_trunc('minute', now(), 'UTC') - interval '59 minutes')$$, 'one value per minute, ending with this one');
select is((select doc -> 'succeeded' -> 57 from h), '7'::jsonb, 'steps per minute, all kinds together');
select is((select pg_catalog.jsonb_build_array(doc -> 'failed' -> 57, doc -> 'heartbeat_ms_max' -> 57, doc -> 'succeeded' -> 58,
  doc -> 'succeeded' -> 59) from h), '[1, 35, 0, null]'::jsonb, 'null for minutes not closed yet');
select is((select pg_catalog.jsonb_build_array(doc -> 'queued' -> 'crawl' -> 57, doc -> 'queued' -> 'crawl' -> 59,
  doc -> 'queued' -> 'crawl' -> 0, doc -> 'queued' ? 'analyze') from h), '[3, 4, 0, false]'::jsonb,
  'queue depth per kind that had a queue, 0 where not sampled');
select throws_ok($$select public.ops_metrics_history(193)$$, 'PT400', 'hours must be from 1 to 192', 'the window is bounded');

select * from finish();
rollback;
