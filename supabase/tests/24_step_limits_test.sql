-- Run-time limits and downtime: the deadline handed out with a claim, recovery past the deadline whatever
-- the lease says, and leases held across a database restart given one lease length to come back.
begin;
select plan(10);

select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["crawl", "analyze"]}', 'test');
select public.ops_set_policy('worker_policy', '{"backoff_base_seconds": 0, "kinds": {"crawl": {"timeout_seconds": 120}}}', 'test');
select public.ops_create_proposal('{"agent_id": "brain", "title": "slow", "steps": [{"kind": "crawl"}]}');
select public.ops_create_proposal('{"agent_id": "brain", "title": "other", "steps": [{"kind": "analyze"}]}');

create temp table claimed as select public.ops_claim_next_step('w1', array['crawl'], 1, 60) -> 0 as c;
select is((select (c ->> 'timeout_seconds')::integer from claimed), 120, 'the claim hands out the kind''s timeout');
select is((select (c ->> 'deadline')::timestamptz from claimed), now() + interval '120 seconds', 'and the attempt''s deadline');
select is((select deadline_at from public.ops_mission_steps where id = (select (c ->> 'id')::bigint from claimed)),
  now() + interval '120 seconds', 'which the step row keeps');

-- Past its deadline, a running step is failed as timed out, even though its lease is fresh.
update public.ops_mission_steps set reserved_at = now() - interval '121 seconds', deadline_at = now() - interval '1 second',
       lease_expires_at = now() + interval '10 minutes' where id = (select (c ->> 'id')::bigint from claimed);
select is(public.ops_recover_stale_steps() ->> 'timed_out', '1', 'recovery fails the attempt past its deadline');
select results_eq($$select status, last_error, deadline_at is null from public.ops_mission_steps
                    where id = (select (c ->> 'id')::bigint from claimed)$$,
  $$values ('queued', 'timed out after 120 s', true)$$, 'retryable, with the reason');
select is((select consecutive_failures from public.ops_kind_breakers where kind = 'crawl'), 1, 'a timeout counts for the breaker');
select is((select payload ->> 'reason' from public.ops_agent_events where type = 'step:recovered'), 'timeout', 'the event says why');

-- Downtime. Three running steps whose leases were last renewed before this server started, all expired:
--   a: a lease long enough to reach past now from the restart (the worker still has time to come back),
--   b: a one-second lease (a lease length from the restart has long passed),
-- and the same as a, checked before any heartbeat ran before the restart (a fresh server: no downtime).
select public.ops_create_proposal(jsonb_build_object('agent_id', 'brain', 'title', 'held ' || g, 'steps', '[{"kind": "analyze"}]'::jsonb))
  from generate_series(1, 2) g;
create temp table held as
  select (e ->> 'id')::bigint as id, row_number() over (order by (e ->> 'id')::bigint) as n
    from jsonb_array_elements(public.ops_claim_next_step('w2', array['analyze'], 3, 60)) e;
update public.ops_mission_steps s
   set lease_renewed_at = pg_postmaster_start_time() - interval '1 second',
       lease_expires_at = now() - interval '1 millisecond'
  from held h where s.id = h.id and h.n = 1;
update public.ops_mission_steps s
   set lease_renewed_at = pg_postmaster_start_time() - interval '2 seconds',
       lease_expires_at = pg_postmaster_start_time() - interval '1 second'
  from held h where s.id = h.id and h.n in (2, 3);
select is((public.ops_recover_stale_steps() - 'missions_finalized'),
  '{"recovered": 3, "requeued": 3, "failed": 0, "timed_out": 0, "waiting_after_restart": 0}'::jsonb,
  'on a fresh server (no heartbeat before it started) every expired lease is recovered');

update public.ops_mission_steps s
   set status = 'running', reserved_by = 'w2', attempt = 1, lease_renewed_at = pg_postmaster_start_time() - interval '1 second',
       lease_expires_at = now() - interval '1 millisecond', deadline_at = now() + interval '1 hour'
  from held h where s.id = h.id and h.n = 1;
update public.ops_mission_steps s
   set status = 'running', reserved_by = 'w2', attempt = 1, lease_renewed_at = pg_postmaster_start_time() - interval '2 seconds',
       lease_expires_at = pg_postmaster_start_time() - interval '1 second', deadline_at = now() + interval '1 hour'
  from held h where s.id = h.id and h.n in (2, 3);
insert into public.ops_action_runs (action, status, started_at, finished_at)
values ('heartbeat', 'succeeded', pg_postmaster_start_time() - interval '1 minute', pg_postmaster_start_time() - interval '1 minute');
select is((public.ops_recover_stale_steps() - 'missions_finalized'),
  '{"recovered": 2, "requeued": 2, "failed": 0, "timed_out": 0, "waiting_after_restart": 1}'::jsonb,
  'after a restart of a running loop, a lease held across it waits one lease length from the restart');
select results_eq($$select h.n, s.status from held h join public.ops_mission_steps s on s.id = h.id order by h.n$$,
  $$values (1::bigint, 'running'), (2, 'queued'), (3, 'queued')$$, 'only the lease still within its length waits');

select * from finish();
rollback;
