-- The minute rollup (ops_internal.rollup_metrics_at, the heartbeat's `metrics` task): closed minutes only,
-- each counted once into the running totals, the run-time histogram, the loop's heartbeats and notifications,
-- queue samples (deepest wins), a bounded catch-up and pruning after 8 days.
begin;
select plan(27);

select is(ops_internal.metric_bucket(0), 1, 'a zero run time is in the first bucket');
select is(ops_internal.metric_bucket(0.01), 1, 'a run time equal to a bound is in that bound''s bucket (le)');
select is(ops_internal.metric_bucket(0.011), 2, 'just above a bound: the next bucket');
select is(ops_internal.metric_bucket(3601), pg_catalog.cardinality(ops_internal.metric_buckets()) + 1,
  'above the largest bound: the +Inf bucket');
select is(ops_internal.add_counts('{1,2,3}', '{10,20}'), '{11,22,3}'::bigint[], 'bucket arrays add element-wise');

-- Work in the current minute: two crawl steps succeed (0.3 s and 4 s), one fails for good, one is retried.
select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["crawl", "analyze"]}', 'test');
select public.ops_set_policy('worker_policy', '{"max_attempts": 1, "kinds": {"analyze": {"max_attempts": 3}}}', 'test');
select public.ops_create_proposal(pg_catalog.format('{"agent_id": "brain", "title": "t%s", "steps": [{"kind": "crawl"}]}', i)::jsonb)
  from generate_series(1, 3) i;
select public.ops_create_proposal('{"agent_id": "brain", "title": "r", "steps": [{"kind": "analyze"}]}');
create temp table claimed as
  select (c ->> 'id')::bigint as id, c ->> 'kind' as kind
    from (select pg_catalog.jsonb_array_elements(public.ops_claim_next_step('w1', array['crawl', 'analyze'], 10)) as c) x;
update public.ops_mission_steps set reserved_at = now() - interval '0.3 seconds'
 where id = (select min(id) from claimed where kind = 'crawl');
update public.ops_mission_steps set reserved_at = now() - interval '4 seconds'
 where id = (select min(id) + 1 from claimed where kind = 'crawl');
select public.ops_complete_step(id, 1, '{}') from claimed where kind = 'crawl' and id < (select max(id) from claimed where kind = 'crawl');
select public.ops_fail_step(id, 1, 'boom', true) from claimed where kind = 'crawl' and id = (select max(id) from claimed where kind = 'crawl');
select public.ops_fail_step(id, 1, 'flaky', true) from claimed where kind = 'analyze';

select is(ops_internal.rollup_metrics_at(now() + interval '1 minute') ->> 'kinds', '0',
  'a minute is not closed until a full minute after it ended');
select is((select count(*)::int from public.ops_metrics_minutely where succeeded + failed + retried > 0), 0,
  'so nothing of the current minute is counted yet');

select is(ops_internal.rollup_metrics_at(now() + interval '2 minutes') ->> 'kinds', '2', 'then it is closed');
select results_eq(
  $$select kind, succeeded, failed, retried from public.ops_metrics_minutely where succeeded + failed + retried > 0 order by kind$$,
  $$values ('analyze', 0, 0, 1), ('crawl', 2, 1, 0)$$,
  'per kind: succeeded, failed for good, back to the queue');
select is((select minute from public.ops_metrics_minutely where kind = 'crawl' and succeeded > 0),
  date_trunc('minute', now(), 'UTC'), 'in the minute the reports were written');
select is((select duration_buckets[4] + duration_buckets[7] from public.ops_metrics_minutely where kind = 'crawl' and succeeded > 0),
  2, 'the run times land in their buckets (le 0.5 s and le 5 s)');
select is((select duration_buckets from public.ops_metrics_totals where kind = 'analyze'),
  pg_catalog.array_fill(0::bigint, array[14]), 'a retried attempt adds no run time');
select results_eq($$select kind, succeeded, failed, retried from public.ops_metrics_totals order by kind$$,
  $$values ('analyze', 0::bigint, 0::bigint, 1::bigint), ('crawl', 2::bigint, 1::bigint, 0::bigint)$$,
  'the running totals hold the closed minute');

select is(ops_internal.rollup_metrics_at(now() + interval '2 minutes') ->> 'closed_minutes', '0', 'a second run closes nothing');
select is((select succeeded from public.ops_metrics_totals where kind = 'crawl'), 2::bigint, 'and counts nothing twice');

-- A later minute adds to the totals; heartbeats and notifications of that minute are counted for the loop.
insert into public.ops_agent_events (type, payload, step_id, created_at)
select 'step:succeeded', '{"kind": "crawl"}', id, date_trunc('minute', now(), 'UTC') + interval '2 minutes 10 seconds' from claimed where kind = 'crawl' limit 1;
insert into public.ops_action_runs (action, status, duration_ms, started_at, finished_at)
select 'heartbeat', s, d, date_trunc('minute', now(), 'UTC') + interval '2 minutes' + t,
       date_trunc('minute', now(), 'UTC') + interval '2 minutes' + t
  from (values ('succeeded', 40, interval '10 seconds'), ('failed', 90, interval '40 seconds')) as v(s, d, t);
insert into public.ops_notifications (sink, event_id, event_type, matched, status, sent_at)
values ('ops', 1, 'mission:failed', 'type', 'sent', date_trunc('minute', now(), 'UTC') + interval '2 minutes 5 seconds');
insert into public.ops_notifications (sink, event_id, event_type, matched, status, dead_at)
values ('ops', 2, 'mission:failed', 'type', 'dead', date_trunc('minute', now(), 'UTC') + interval '2 minutes 5 seconds');
select ops_internal.rollup_metrics_at(now() + interval '4 minutes');
select is((select succeeded from public.ops_metrics_totals where kind = 'crawl'), 3::bigint, 'later minutes add to the totals');
select results_eq(
  $$select heartbeats, heartbeat_failures, heartbeat_ms_max, heartbeat_ms_sum, notifications_sent, notifications_dead
      from public.ops_metrics_system_minutely where minute = date_trunc('minute', now(), 'UTC') + interval '2 minutes'$$,
  $$values (2, 1, 90, 130::bigint, 1, 1)$$,
  'heartbeats (count, failures, longest, total) and notifications sent and dead, per minute');
select results_eq(
  $$select heartbeats, heartbeat_failures, heartbeat_ms_sum, notifications_sent, notifications_dead from public.ops_metrics_state$$,
  $$values (2::bigint, 1::bigint, 130::bigint, 1::bigint, 1::bigint)$$, 'and in the loop''s running totals');
select is((select count(*)::int from public.ops_metrics_system_minutely where heartbeats = 0),
  (select count(*)::int - 1 from public.ops_metrics_system_minutely), 'every closed minute has a row, with or without heartbeats');

-- Queue samples: the deepest seen in the minute.
select is((select queued from public.ops_metrics_minutely where kind = 'analyze' and minute = date_trunc('minute', now(), 'UTC')),
  null, 'no sample in a minute the rollup did not look at the queue');
select ops_internal.rollup_metrics_at(now());
select is((select queued from public.ops_metrics_minutely where kind = 'analyze' and minute = date_trunc('minute', now(), 'UTC')),
  1, 'the queue depth is sampled into the current minute');
update public.ops_metrics_minutely set queued = 5 where kind = 'analyze' and minute = date_trunc('minute', now(), 'UTC');
select ops_internal.rollup_metrics_at(now());
select is((select queued from public.ops_metrics_minutely where kind = 'analyze' and minute = date_trunc('minute', now(), 'UTC')),
  5, 'a shallower sample later in the minute keeps the deepest');

-- A backlog is worked off in bounded runs: fewer than 20,000 events per run, at least one minute.
update public.ops_metrics_state set rolled_until = date_trunc('minute', now(), 'UTC') - interval '3 hours';
insert into public.ops_agent_events (type, created_at)
select 'tweet:posted', date_trunc('minute', now(), 'UTC') - interval '2 hours' from generate_series(1, 20001);
select is((ops_internal.rollup_metrics_at(now()) ->> 'rolled_until')::timestamptz,
  date_trunc('minute', now(), 'UTC') - interval '2 hours', 'a run stops before the minute holding the 20,001st event');
select is((ops_internal.rollup_metrics_at(now()) ->> 'rolled_until')::timestamptz,
  date_trunc('minute', now(), 'UTC') - interval '2 hours' + interval '1 minute', 'a busy minute is closed alone');
select is((ops_internal.rollup_metrics_at(now()) ->> 'rolled_until')::timestamptz,
  date_trunc('minute', now(), 'UTC') - interval '1 minute', 'then the rest up to the last closed minute');

-- Pruning and the heartbeat.
insert into public.ops_metrics_minutely (minute, kind, queued) values (now() - interval '9 days', 'crawl', 1);
insert into public.ops_metrics_system_minutely (minute) values (date_trunc('minute', now(), 'UTC') - interval '9 days');
select is(ops_internal.rollup_metrics_at(now()) ->> 'pruned', '2', 'rows older than 8 days are pruned');
select ok(public.ops_heartbeat() -> 'metrics' ? 'closed_minutes', 'the heartbeat runs the rollup as its metrics task');

select * from finish();
rollback;
