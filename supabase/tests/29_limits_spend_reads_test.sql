-- Reading limits and spend: ops_list_spend, ops_status's spend_today and limits; a probe respects the limits.
begin;
select plan(11);

select throws_ok($$select public.ops_list_spend(0)$$, 'PT400', 'days must be from 1 to 366', 'days is checked');
select is(public.ops_list_spend(), '{"budgets": null, "days": []}'::jsonb, 'nothing spent, no budgets');

select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["llm", "crawl"]}', 't');
select public.ops_set_policy('budgets', '{"agent_daily_usd": 1, "per_agent": {"scout": {"daily_tokens": 100}}}', 't');
select public.ops_set_policy('worker_policy', '{"kinds": {"llm": {"max_running": 2, "per_minute": 10}}}', 't');
select public.ops_create_proposal(jsonb_build_object('agent_id', 'scout', 'title', 't' || g, 'steps', '[{"kind": "llm"}]'::jsonb))
  from generate_series(1, 3) g;
create temp table c1 as select public.ops_claim_next_step('w1', array['llm'], 5) as c;
select public.ops_complete_step((c -> 0 ->> 'id')::bigint, 1, '{}', '{"tokens_in": 80, "tokens_out": 40, "cost_usd": 0.25}') from c1;

select results_eq($$select d ->> 'agent_id', d ->> 'cost_usd', d ->> 'limit_usd', d ->> 'limit_tokens', (d ->> 'exhausted')::boolean
                      from jsonb_array_elements(public.ops_list_spend(1) -> 'days') d$$,
  $$values ('*', '0.25', null, null, false), ('scout', '0.25', '1', '100', true)$$,
  'per agent and day, with each one''s limits and whether it is exhausted');
select is(public.ops_list_spend(1) -> 'budgets', ops_internal.policy('budgets'), 'with the budgets policy');
select is(jsonb_array_length(public.ops_status() -> 'spend_today' -> 'agents'), 2, 'ops_status has today''s spend');
select is(public.ops_status() -> 'spend_today' -> 'agents' -> 1 ->> 'agent_id', 'scout', 'the global row first, then agents');
select is(public.ops_status() -> 'limits' -> 'llm',
  '{"running": 1, "max_running": 2, "last_minute": 2, "per_minute": 10, "queued": 1}'::jsonb,
  'ops_status has each limited kind: running/max_running, the last minute''s hand-outs/per_minute, queued');
select is(public.ops_status() -> 'limits' -> 'crawl', null, 'unlimited kinds are not listed');

-- A probe of an open breaker goes through the kind's limits too.
select public.ops_set_policy('budgets', '{"agent_daily_usd": 1}', 't');
select public.ops_set_policy('worker_policy', '{"kinds": {"llm": {"max_running": 1}}}', 't');
insert into public.ops_kind_breakers (kind, state, consecutive_failures, opened_at, reopen_at, opens)
values ('llm', 'open', 3, now(), now() - interval '1 second', 1);
select ops_internal.set_kind_enabled('llm', false, 'opened by the breaker', 3);
select is(jsonb_array_length(public.ops_claim_next_step('w2', array['llm'], 5)), 0, 'no probe while max_running is reached');
select public.ops_set_policy('worker_policy', '{"kinds": {"llm": {"max_running": 2}}}', 't');
select is(jsonb_array_length(public.ops_claim_next_step('w2', array['llm'], 5)), 1, 'one probe once there is room');
select is((select state from public.ops_kind_breakers where kind = 'llm'), 'half_open', 'the breaker is half-open');

select * from finish();
rollback;
