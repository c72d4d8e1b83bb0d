-- Fleet-wide limits per kind at claim time: max_running across workers, per_minute as a sliding window,
-- both only through the claim; unlimited kinds are claimed alongside, in priority order.
begin;
select plan(16);

-- The settings: per kind only; worker_policy.enabled is the articles' flag and may only be false.
select throws_ok($$select public.ops_set_policy('worker_policy', '{"max_running": 3}', 't')$$, 'PT400',
  'value.max_running is set per kind: value.kinds.<kind>.max_running', 'max_running is refused at the top level');
select throws_ok($$select public.ops_set_policy('worker_policy', '{"kinds": {"crawl": {"per_minute": -1}}}', 't')$$, 'PT400',
  'value.kinds.crawl.per_minute must be from 0 to 10000', 'per_minute is checked');
select throws_ok($$select public.ops_set_policy('worker_policy', '{"kinds": {"crawl": {"max_running": 1.5}}}', 't')$$, 'PT400',
  'value.kinds.crawl.max_running must be an integer', 'max_running is a whole number');
select is(ops_internal.limited_kinds('{"kinds": {"b": {"per_minute": 1}, "a": {"max_running": 0}, "c": {"lease_seconds": 5}}}',
  array['c', 'b', 'a', 'b']), array['a', 'b'], 'limited_kinds: the wanted kinds with a limit, sorted (the lock order)');

select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["crawl", "analyze", "noop"]}', 't');
select public.ops_set_policy('worker_policy',
  '{"kinds": {"crawl": {"max_running": 2}, "analyze": {"per_minute": 3}}}', 't');
select public.ops_create_proposal(jsonb_build_object('agent_id', 'a', 'title', k || g, 'steps', jsonb_build_array(jsonb_build_object('kind', k))))
  from generate_series(1, 4) g, unnest(array['crawl', 'analyze', 'noop']) k;

-- max_running: two crawl steps run at once across workers, however many are asked for.
create temp table c1 as select public.ops_claim_next_step('w1', array['crawl'], 10) as c;
select is((select jsonb_array_length(c) from c1), 2, 'one claimer gets max_running steps');
select is(jsonb_array_length(public.ops_claim_next_step('w2', array['crawl'], 10)), 0, 'another gets none while both run');
select public.ops_complete_step((c -> 0 ->> 'id')::bigint, 1) from c1;
select is(jsonb_array_length(public.ops_claim_next_step('w2', array['crawl'], 10)), 1, 'a finished step frees one slot');

-- per_minute: three analyze hand-outs per 60 s window, logged with the claim time (also their reserved_at).
select is(jsonb_array_length(public.ops_claim_next_step('w1', array['analyze'], 10)), 3, 'the window allows per_minute');
select is(jsonb_array_length(public.ops_claim_next_step('w1', array['analyze'], 10)), 0, 'then nothing until it slides');
select is((select cardinality(claimed_at) from public.ops_kind_claims where kind = 'analyze'), 3, 'the log holds the hand-outs');
select ok((select bool_and(s.reserved_at = any (c.claimed_at)) from public.ops_mission_steps s, public.ops_kind_claims c
            where s.kind = 'analyze' and s.status = 'running' and c.kind = 'analyze'), 'stamped with the claim time');
update public.ops_kind_claims set claimed_at = array[clock_timestamp() - interval '61 seconds',
  clock_timestamp() - interval '61 seconds', clock_timestamp() - interval '59 seconds'] where kind = 'analyze';
select is(jsonb_array_length(public.ops_claim_next_step('w1', array['analyze'], 10)), 1,
  'hand-outs older than a minute leave the window (one is still inside it: 3 - 1 = 2 free, 1 queued)');
select is((select cardinality(claimed_at) from public.ops_kind_claims where kind = 'analyze'), 2, 'and leave the log');

-- An all-kinds claim mixes limited and unlimited kinds; a limit of 0 holds the kind.
select public.ops_set_policy('worker_policy', '{"kinds": {"crawl": {"max_running": 0}}}', 't');
select ops_internal.touch_worker('w3', null);
select results_eq($$select e ->> 'kind', count(*) from jsonb_array_elements(public.ops_claim_next_step('w3', null, 10)) e group by 1 order by 1$$,
  $$values ('noop', 4::bigint)$$, 'max_running 0 holds crawl; noop is claimed with no limit');
select is((ops_internal.kind_allowance('crawl', '{"kinds": {"crawl": {"max_running": 5}}}')).allowed, 3,
  'kind_allowance: max_running minus the running steps');
select is((ops_internal.kind_allowance('noop', '{}')).allowed, 100, 'no limit: the largest batch');

select * from finish();
rollback;
