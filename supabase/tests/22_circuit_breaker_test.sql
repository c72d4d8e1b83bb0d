-- The circuit breaker in SQL: distinct failing steps count, a success resets, it opens once at the threshold,
-- claims and gates refuse the kind, one probe after the cool-down, the probe closes or re-opens it.
begin;
select plan(22);

select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["crawl"]}', 'test');
select public.ops_set_policy('worker_policy', '{"max_attempts": 5, "backoff_base_seconds": 0, "circuit_breaker_threshold": 3,
  "breaker_cooldown_seconds": 600, "breaker_cooldown_max_seconds": 1000}', 'test');
select public.ops_create_proposal(jsonb_build_object('agent_id', 'brain', 'title', 'poison ' || g, 'steps', '[{"kind": "crawl"}]'::jsonb))
  from generate_series(1, 8) g;

create function pg_temp.claim_one(worker text) returns jsonb language sql as $$
  select public.ops_claim_next_step(worker, array['crawl'], 1, 60) -> 0
$$;
create function pg_temp.fail(claimed jsonb, retryable boolean default true) returns jsonb language sql as $$
  select public.ops_fail_step((claimed ->> 'id')::bigint, (claimed ->> 'attempt')::integer, 'boom', retryable)
$$;
create function pg_temp.breaker() returns public.ops_kind_breakers language sql as $$
  select b.* from public.ops_kind_breakers b where b.kind = 'crawl'
$$;

-- One poison step retried counts once, and a success ends the run of failures.
create temp table a as select pg_temp.claim_one('w1') as c;
select pg_temp.fail((select c from a));
select is((select (pg_temp.breaker()).consecutive_failures), 1, 'a first failure counts');
select is((pg_temp.claim_one('w2') ->> 'id'), (select c ->> 'id' from a), 'the failed step comes back first (retry, no backoff)');
select pg_temp.fail((select jsonb_set(c, '{attempt}', '2') from a));
select is((select (pg_temp.breaker()).consecutive_failures), 1, 'its retry failing again is not counted twice');
select public.ops_complete_step((c ->> 'id')::bigint, (c ->> 'attempt')::integer, '{}') from (select pg_temp.claim_one('w1') as c) x;
select is((select (pg_temp.breaker()).consecutive_failures), 0, 'a success resets the count');

-- Three distinct failing steps, from two workers, open it.
select pg_temp.fail(pg_temp.claim_one('w1'), false);
select pg_temp.fail(pg_temp.claim_one('w2'), false);
select is((select (pg_temp.breaker()).state), 'closed', 'below the threshold it stays closed');
select pg_temp.fail(pg_temp.claim_one('w1'), false);
select is((select (pg_temp.breaker()).state), 'open', 'three distinct failing steps across two workers open it');
select is((select count(*)::int from public.ops_agent_events where type = 'worker:circuit_open'), 1, 'one worker:circuit_open');
select is((select value ->> 'enabled' from public.ops_policy where key = 'worker:crawl'), 'false', 'worker:crawl is disabled');
select matches((select value ->> 'reason' from public.ops_policy where key = 'worker:crawl'),
  '^circuit breaker: 3 consecutive failures \(last: boom\); one probe step after ', 'with the reason');
select is((select updated_by from public.ops_policy where key = 'worker:crawl'), 'circuit_breaker', 'written by the breaker');

-- Open: nothing is handed out, and the gates refuse new work for the kind.
update public.ops_mission_steps set run_after = now() where kind = 'crawl' and status = 'queued';
select is(public.ops_claim_next_step('w1', array['crawl'], 5, 60), '[]'::jsonb, 'an open kind is not claimed');
select matches(public.ops_create_proposal('{"agent_id": "brain", "title": "more", "steps": [{"kind": "crawl"}]}') ->> 'reason',
  '^step kind crawl is disabled \(worker:crawl\): circuit breaker', 'the gates reject the kind with the reason');

-- After the cool-down: exactly one probe, whoever asks.
update public.ops_kind_breakers set reopen_at = now() - interval '1 second' where kind = 'crawl';
create temp table probe as select public.ops_claim_next_step('w1', array['crawl'], 5, 60) as r;
select is(jsonb_array_length((select r from probe)), 1, 'one probe step is handed out');
select is(public.ops_claim_next_step('w2', null, 5, 60), '[]'::jsonb, 'and no second one while it runs');
select is((select (pg_temp.breaker()).state), 'half_open', 'half-open while the probe runs');

-- A failed probe re-opens it with the cool-down doubled (capped).
select pg_temp.fail((select r -> 0 from probe));
select is((select (pg_temp.breaker()).state), 'open', 'a failed probe re-opens it');
select ok((select (pg_temp.breaker()).reopen_at between now() + interval '999 seconds' and now() + interval '1001 seconds'),
  'after the doubled cool-down, capped at breaker_cooldown_max_seconds');
select is((select count(*)::int from public.ops_agent_events where type = 'worker:circuit_open'), 2, 're-opening is announced');

-- A successful probe closes it and re-enables the kind.
update public.ops_kind_breakers set reopen_at = now() - interval '1 second' where kind = 'crawl';
update public.ops_mission_steps set run_after = now() where kind = 'crawl' and status = 'queued';
select public.ops_complete_step((r -> 0 ->> 'id')::bigint, (r -> 0 ->> 'attempt')::integer, '{}')
  from (select public.ops_claim_next_step('w1', array['crawl'], 5, 60) as r) x;
select is((select (pg_temp.breaker()).state), 'closed', 'a successful probe closes it');
select is((select value ->> 'enabled' from public.ops_policy where key = 'worker:crawl'), 'true', 'and re-enables the kind');
select is((select count(*)::int from public.ops_agent_events where type = 'worker:circuit_closed'), 1, 'one worker:circuit_closed');

-- A person closes it by hand.
update public.ops_kind_breakers set state = 'open', reopen_at = now() + interval '1 hour', consecutive_failures = 3 where kind = 'crawl';
select public.ops_set_policy('worker:crawl', '{"enabled": true}', 'ops@example');
select is((select (pg_temp.breaker()).state || '/' || (pg_temp.breaker()).consecutive_failures), 'closed/0',
  're-enabling the kind by hand closes the breaker');

select * from finish();
rollback;
