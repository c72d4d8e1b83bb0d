-- The notification outbox: what is enqueued for whom, claims with leases and rate limits, reports fenced by
-- attempt, retries, 429 pauses, dead letters that cannot loop, retention, the list, and the tables' security.
-- (now() is fixed inside this transaction: due times and leases are moved by hand where time must pass.)
begin;
select plan(62);

select public.ops_set_policy('notifications', '{"enabled": true, "max_attempts": 3, "sinks": [
  {"name": "ops", "url_env": "OPS_HOOK", "format": "slack"},
  {"name": "warn", "url_env": "WARN_HOOK", "tags": ["warning"]}]}', 'test');
select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["crawl"]}', 'test');

-- Events of each kind; only some are wanted.
select public.ops_create_proposal('{"agent_id": "brain", "title": "needs a person", "steps": [{"kind": "post_tweet"}]}');
select public.ops_create_proposal('{"agent_id": "brain", "title": "auto", "steps": [{"kind": "crawl"}]}');
select ops_internal.emit_event('queue:stalled', 'system', 'Queue crawl stalled', '{"kind": "crawl"}', array['warning']);
select ops_internal.emit_event('worker:circuit_open', 'system', 'Circuit open: crawl', '{}', array['warning']);
select ops_internal.emit_event('heartbeat:failed', 'system', 'Heartbeat failed', '{}', array['warning']);
select ops_internal.emit_event('tweet:posted', 'brain', 'posted', '{}');

create temp table enqueued as select ops_internal.enqueue_notifications() as r;
select results_eq($$select event_type, matched from public.ops_notifications where sink = 'ops' order by id$$,
  $$values ('proposal:created', 'proposal:pending'), ('queue:stalled', 'type'), ('worker:circuit_open', 'type'),
           ('heartbeat:failed', 'type')$$,
  'the default sink gets the pending proposal (not the auto-approved one), the stall, the breaker, the failed heartbeat');
select results_eq($$select event_type, matched from public.ops_notifications where sink = 'warn' order by id$$,
  $$values ('queue:stalled', 'tag'), ('worker:circuit_open', 'tag'), ('heartbeat:failed', 'tag')$$,
  'a tag sink gets the events with its tag');
select is((select r -> 'enqueued' from enqueued), '7'::jsonb, 'enqueue counts what it added');
select is((select r -> 'sinks' from enqueued), '{"ops": 4, "warn": 3}'::jsonb, 'per sink');
select is((select status from public.ops_notifications group by status), 'pending', 'all pending');
select is(ops_internal.enqueue_notifications() -> 'enqueued', '0'::jsonb, 'a second call adds nothing');
select is((select count(*)::int from public.ops_notification_cursors
            where last_event_id = (select max(id) from public.ops_agent_events) and hold_at is null), 2,
  'both cursors stand at the newest event');

-- A gap in the ids (a transaction that drew an id and has not committed, or rolled back): the events after
-- it are enqueued at once, but the cursor waits below it under a hold.
select nextval(pg_get_serial_sequence('public.ops_agent_events', 'id'));
select ops_internal.emit_event('mission:failed', 'brain', 'Mission #9 failed', '{}', array['warning']);
select ops_internal.enqueue_notifications();
select is((select count(*)::int from public.ops_notifications where event_type = 'mission:failed'), 2,
  'an event after a gap is enqueued at once');
select results_eq($$select last_event_id, hold_event_id from public.ops_notification_cursors where sink = 'ops'$$,
  $$select max(id) - 2, max(id) from public.ops_agent_events$$, 'the cursor waits below the gap, holding up to what it saw');
select ops_internal.enqueue_notifications();
select is((select last_event_id from public.ops_notification_cursors where sink = 'ops'),
  (select max(id) - 2 from public.ops_agent_events), 'while the transactions that might fill it could still commit');
update public.ops_notification_cursors set hold_at = now() - interval '5 minutes' where hold_at is not null;
select ops_internal.enqueue_notifications();
select results_eq($$select last_event_id, hold_event_id from public.ops_notification_cursors where sink = 'ops'$$,
  $$select max(id), null::bigint from public.ops_agent_events$$, 'once the hold expires the cursor passes the gap');
select is((select count(*)::int from public.ops_notifications where event_type = 'mission:failed'), 2,
  'and nothing was enqueued twice');

-- Claims.
select throws_ok($$select public.ops_claim_notifications(null)$$, 'PT400', 'deliverer is required', 'deliverer is required');
select throws_ok($$select public.ops_claim_notifications('d', 0)$$, 'PT400', 'max_items must be from 1 to 100', 'max_items is 1..100');
create temp table claim1 as select public.ops_claim_notifications('deliverer-1', 2) as r;
select is(jsonb_array_length((select r from claim1)), 2, 'a claim takes at most max_items');
select ok((select bool_and(item ?& array['id', 'sink', 'attempt', 'format', 'url_env', 'matched', 'idempotency_key',
                                         'lease_expires_at', 'lease_seconds', 'event'])
             from claim1, jsonb_array_elements(r) item), 'each item carries what a deliverer needs');
select is((select r -> 0 ->> 'idempotency_key' from claim1), 'agent-ops-' || (select r -> 0 ->> 'id' from claim1),
  'the idempotency key names the outbox row');
select is((select r -> 0 -> 'event' ->> 'type' from claim1), 'proposal:created', 'oldest first, with its event');
select is((select r -> 0 ->> 'format' from claim1) || ' ' || (select r -> 0 ->> 'url_env' from claim1), 'slack OPS_HOOK',
  'the sink''s format and the name of the variable with its URL, never a URL');
select is((select r -> 0 ->> 'lease_seconds' from claim1)::numeric, 60::numeric, 'a lease of 30 s + 15 s per item asked for');
select results_eq($$select status, attempts, claimed_by from public.ops_notifications
                     where id in (select (item ->> 'id')::bigint from claim1, jsonb_array_elements(r) item)$$,
  $$values ('sending', 1, 'deliverer-1'), ('sending', 1, 'deliverer-1')$$, 'claimed rows are sending, attempt 1');
create temp table claim2 as select public.ops_claim_notifications('deliverer-2', 100) as r;
select is((select count(*)::int from claim2, jsonb_array_elements(r) item
            where item ->> 'id' in (select item1 ->> 'id' from claim1, jsonb_array_elements(claim1.r) item1)), 0,
  'a second deliverer never gets a row under a live lease');
select is(jsonb_array_length((select r from claim2)), 7, 'it gets the rest');

-- Reports, fenced by attempt.
create temp table ids as
  select (item ->> 'id')::bigint as id, row_number() over (order by (item ->> 'id')::bigint) as n
    from (select jsonb_array_elements(r) item from claim1 union all select jsonb_array_elements(r) from claim2) x;
create function pg_temp.nid(n integer) returns bigint language sql as $$ select id from ids where ids.n = nid.n $$;

select is(public.ops_report_notification(pg_temp.nid(1), 1, true, 200) ->> 'status', 'sent', 'delivered: sent');
select is(public.ops_report_notification(pg_temp.nid(1), 1, true, 200) ->> 'duplicate', 'true', 'a repeated report is a duplicate');
select throws_ok(format('select public.ops_report_notification(%s, 2, true)', pg_temp.nid(1)), 'PT409', null,
  'a report for another attempt is refused');
select throws_ok($$select public.ops_report_notification(999999, 1, true)$$, 'PT404', 'notification 999999 not found',
  'unknown ids are PT404');
select throws_ok(format('select public.ops_report_notification(%s, 1, false)', pg_temp.nid(2)), 'PT400',
  'error or http_status is required when delivered is false', 'a failure says why');
select throws_ok(format('select public.ops_report_notification(%s, 1, null)', pg_temp.nid(2)), 'PT400',
  'delivered is required (true or false)', 'delivered is required');
select throws_ok(format('select public.ops_report_notification(%s, 1, false, 42)', pg_temp.nid(2)), 'PT400',
  'http_status must be from 100 to 599', 'statuses are HTTP statuses');

-- 500: retried with exponential backoff.
select is(public.ops_report_notification(pg_temp.nid(2), 1, false, 500, 'HTTP 500 Internal Server Error') ->> 'status',
  'pending', 'a 500 is retried');
select is((select next_attempt_at - now() from public.ops_notifications where id = pg_temp.nid(2)), interval '10 seconds',
  'after 10 s');
select is(public.ops_claim_notifications('d', 100), '[]'::jsonb, 'not before');
update public.ops_notifications set next_attempt_at = now() where id = pg_temp.nid(2);
create temp table retry as select public.ops_claim_notifications('d', 100) as r;
select is((select (r -> 0 ->> 'id')::bigint || '/' || (r -> 0 ->> 'attempt') from retry), pg_temp.nid(2) || '/2',
  'then claimed again as attempt 2, same row and key');
select public.ops_report_notification(pg_temp.nid(2), 2, false, 503, 'unavailable');
select is((select next_attempt_at - now() from public.ops_notifications where id = pg_temp.nid(2)), interval '20 seconds',
  'the backoff doubles');
update public.ops_notifications set next_attempt_at = now() where id = pg_temp.nid(2);
select public.ops_claim_notifications('d', 100);
select is(public.ops_report_notification(pg_temp.nid(2), 3, false, 500, 'still down') ->> 'status', 'dead',
  'the last of max_attempts goes dead');
select results_eq(format($$select type, tags, payload ->> 'sink', (payload ->> 'notification_id')::bigint, payload ->> 'error'
                      from public.ops_agent_events where type = 'notification:dead'$$),
  format($$values ('notification:dead', array['notification:dead', 'notification', 'dead', 'warning'], 'ops', %s::bigint,
                   'still down')$$, pg_temp.nid(2)),
  'with one notification:dead event, tagged warning');

-- 429: Retry-After honoured, and the whole sink pauses.
select is(public.ops_report_notification(pg_temp.nid(3), 1, false, 429, 'rate limited', 120) ->> 'status', 'pending',
  'a 429 is retried');
select is((select next_attempt_at - now() from public.ops_notifications where id = pg_temp.nid(3)), interval '120 seconds',
  'after its Retry-After');
select is((select paused_until - now() from public.ops_notification_cursors
            where sink = (select sink from public.ops_notifications where id = pg_temp.nid(3))), interval '120 seconds',
  'and its sink pauses as long');
update public.ops_notifications set next_attempt_at = now() where id = pg_temp.nid(3);
select is(jsonb_path_query_array(public.ops_claim_notifications('d', 100), '$[*] ? (@.sink == "ops").id'), '[]'::jsonb,
  'a paused sink gets nothing, even what is due');
update public.ops_notification_cursors set paused_until = now() - interval '1 second';
select is((public.ops_claim_notifications('d', 100) -> 0 ->> 'id')::bigint, pg_temp.nid(3), 'after the pause it is sent again');

-- A 4xx that no retry fixes: dead at once.
select is(public.ops_report_notification(pg_temp.nid(4), 1, false, 404, 'no_service') ->> 'status', 'dead',
  'a 404 goes dead at once');

-- A lease that expires: the row is claimed again under the same key, the late report is refused.
update public.ops_notifications set lease_expires_at = now() - interval '1 second' where id = pg_temp.nid(5);
create temp table reclaim as select public.ops_claim_notifications('deliverer-3', 100) as r;
select is((select r -> 0 ->> 'idempotency_key' || ' attempt ' || (r -> 0 ->> 'attempt') from reclaim),
  'agent-ops-' || pg_temp.nid(5) || ' attempt 2', 'an expired lease is claimed again: same key, next attempt');
select throws_ok(format('select public.ops_report_notification(%s, 1, true, 200)', pg_temp.nid(5)), 'PT409', null,
  'the stopped deliverer''s late report is refused');
update public.ops_notifications set lease_expires_at = now() - interval '1 second', attempts = 3 where id = pg_temp.nid(6);
select public.ops_claim_notifications('d', 1);
select is((select status || ': ' || last_error from public.ops_notifications where id = pg_temp.nid(6)),
  'dead: the deliverer deliverer-2 stopped before reporting attempt 3, the last', 'an expired last attempt goes dead');

-- Dead letters cannot loop: notification:dead goes to the other sinks that want it, never to its own.
select ops_internal.enqueue_notifications();
select results_eq($$select n.sink, count(*)::int from public.ops_notifications n
                     where n.event_type = 'notification:dead' group by n.sink$$,
  $$values ('warn', 2)$$,
  'notification:dead events of sink ops reach warn (it wants warnings); ops, whose failures they are, gets none');
update public.ops_notifications set next_attempt_at = now() where status = 'pending';
update public.ops_notification_cursors set paused_until = null;
select public.ops_claim_notifications('d', 100);
select public.ops_report_notification(n.id, n.attempts, false, 410, 'gone')
  from public.ops_notifications n where n.event_type = 'notification:dead' and n.status = 'sending';
select is((select count(*)::int from public.ops_agent_events where type = 'notification:dead'), 3,
  'a dead notification about a notification emits nothing more (2 + the one from the expired lease)');

-- Rate limit: per_minute is a token bucket.
select public.ops_set_policy('notifications', '{"enabled": true, "sinks": [{"name": "slow", "url_env": "SLOW", "tags": ["burst"], "per_minute": 3}]}', 'test');
select ops_internal.emit_event('test:burst', 'system', 'burst ' || g, '{}', array['burst']) from generate_series(1, 5) g;
select is(jsonb_array_length(public.ops_claim_notifications('d', 100)), 3, 'per_minute 3: three at once');
select is(public.ops_claim_notifications('d', 100), '[]'::jsonb, 'then none until the bucket refills');
-- 20 s later, as the bucket sees it: the next token is due.
update public.ops_notification_cursors set rate_tat = rate_tat - interval '20 seconds' where sink = 'slow';
select is(jsonb_array_length(public.ops_claim_notifications('d', 100)), 1, 'one every 20 s after that');

-- Disabled: nothing is claimed.
select public.ops_set_policy('notifications', '{"enabled": false, "sinks": [{"name": "slow", "url_env": "SLOW", "tags": ["burst"]}]}', 'test');
update public.ops_notifications set next_attempt_at = now() - interval '1 minute' where status = 'pending';
select is(public.ops_claim_notifications('d', 100), '[]'::jsonb, 'a disabled policy delivers nothing');

-- The list.
select is(jsonb_array_length(public.ops_list_notifications('dead')),
  (select count(*)::int from public.ops_notifications where status = 'dead'), 'the list filters by status');
select ok((select bool_and(item ?& array['id', 'sink', 'status', 'attempts', 'event_id', 'event_type', 'event_title',
                                         'idempotency_key', 'last_status', 'last_error', 'created_at', 'dead_at'])
             from jsonb_array_elements(public.ops_list_notifications('dead', 5)) item), 'with what the console shows');
select throws_ok($$select public.ops_list_notifications('lost')$$, 'PT400',
  'status must be one of: pending, sending, sent, dead', 'unknown statuses are refused');

-- Retention: sent and dead rows older than retain_days go.
update public.ops_notifications set sent_at = now() - interval '8 days' where status = 'sent';
update public.ops_notifications set dead_at = now() - interval '6 days' where status = 'dead';
select is((ops_internal.enqueue_notifications() ->> 'pruned')::int, 1, 'sent rows older than 7 days are pruned');
select is((select count(*)::int from public.ops_notifications where status = 'sent'), 0, 'and gone');

-- Security: RLS, no policies, service_role reads only.
select ok(c.relrowsecurity, c.relname || ' has row level security enabled')
  from pg_class c where c.oid in ('public.ops_notifications'::regclass, 'public.ops_notification_cursors'::regclass);
select table_privs_are('public', t, 'service_role', array['SELECT'], 'service_role may only SELECT ' || t)
  from unnest(array['ops_notifications', 'ops_notification_cursors']) t;
set local role service_role;
select throws_ok($$update public.ops_notifications set status = 'sent'$$, '42501', null, 'service_role cannot update the outbox');
reset role;

select * from finish();
rollback;
