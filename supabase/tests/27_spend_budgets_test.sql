-- Spend budgets: usage on reports (checked, priced, stored per step, summed per agent and day), the budget
-- gate, spending steps held at claim time, and one budget:exhausted per crossing.
begin;
select plan(30);

-- Policies are checked.
select throws_ok($$select public.ops_set_policy('model_prices', '{"gpt-x": {"input_per_million": -1, "output_per_million": 1}}', 't')$$,
  'PT400', 'value.gpt-x.input_per_million must be from 0 to 1000000', 'prices are checked');
select throws_ok($$select public.ops_set_policy('budgets', '{"per_agent": {"scout": {"daily_usd": "5"}}}', 't')$$,
  'PT400', 'value.per_agent.scout.daily_usd must be a number', 'per-agent budgets are checked');
select throws_ok($$select public.ops_set_policy('budgets', '{"kinds": ["Bad Kind"]}', 't')$$,
  'PT400', null, 'spending kinds must be kinds');

-- check_usage prices from model_prices when the report gives no cost, and keeps a given one.
select public.ops_set_policy('model_prices', '{"gpt-x": {"input_per_million": 2, "output_per_million": 10}}', 't');
select is(ops_internal.check_usage('{"tokens_in": 1000, "tokens_out": 500, "model": "gpt-x"}'),
  '{"tokens_in": 1000, "tokens_out": 500, "cost_usd": 0.007, "model": "gpt-x"}'::jsonb, 'priced from model_prices');
select is(ops_internal.check_usage('{"tokens_in": 10, "model": "unknown"}') ->> 'cost_usd', '0', 'an unpriced model costs 0');
select is(ops_internal.check_usage('{"cost_usd": 0.5, "model": "gpt-x", "tokens_in": 1000}') ->> 'cost_usd', '0.5', 'a given cost is kept');
select throws_ok($$select ops_internal.check_usage('{"tokens_in": -1}')$$, 'PT400',
  'usage.tokens_in must be from 0 to 1000000000', 'usage fields are checked, named');
select throws_ok($$select ops_internal.check_usage('{"tokens": 1}')$$, 'PT400', null, 'unknown usage fields are refused');

select is(ops_internal.add_usage('{"tokens_in": 1, "tokens_out": 2, "cost_usd": 0.5, "model": "a"}',
  '{"tokens_in": 10, "tokens_out": 20, "cost_usd": 0.25, "model": "b"}'),
  '{"tokens_in": 11, "tokens_out": 22, "cost_usd": 0.75, "model": "b"}'::jsonb, 'add_usage sums a step''s attempts');
select is(ops_internal.spending_kinds('{}'), array['llm'], 'spending kinds default to llm');
select is(ops_internal.spending_kinds('{"kinds": ["llm", "embed"]}'), array['llm', 'embed'], 'or the budgets policy''s list');

-- Reports store usage per step and sum it per agent and day ('*' is everyone).
select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["llm", "crawl"]}', 't');
select public.ops_create_proposal(jsonb_build_object('agent_id', a, 'title', a || g, 'steps', '[{"kind": "llm"}]'::jsonb))
  from unnest(array['scout', 'scout', 'scout', 'other']) with ordinality as x(a, g);
select public.ops_create_proposal('{"agent_id": "scout", "title": "crawl", "steps": [{"kind": "crawl"}]}');
create temp table c1 as select public.ops_claim_next_step('w1', array['llm'], 2) as c;
select is((select array_agg(e ->> 'agent_id') from jsonb_array_elements((select c from c1)) e), array['scout', 'scout'], 'two scout steps run');
select public.ops_complete_step((c -> 0 ->> 'id')::bigint, 1, '{}', '{"tokens_in": 1000, "tokens_out": 500, "model": "gpt-x"}') from c1;
select is((select usage from public.ops_mission_steps where id = (select (c -> 0 ->> 'id')::bigint from c1)),
  '{"tokens_in": 1000, "tokens_out": 500, "cost_usd": 0.007, "model": "gpt-x"}'::jsonb, 'the step keeps its usage');
select results_eq($$select agent_id, cost_usd, tokens_in + tokens_out, steps from public.ops_spend_daily order by agent_id$$,
  $$values ('*', 0.007::numeric, 1500::bigint, 1), ('scout', 0.007::numeric, 1500::bigint, 1)$$, 'summed per agent and for everyone');
select public.ops_complete_step((c -> 0 ->> 'id')::bigint, 1, '{}', '{"tokens_in": 1000, "tokens_out": 500, "model": "gpt-x"}') from c1;
select is((select steps from public.ops_spend_daily where agent_id = 'scout'), 1, 'a replayed report is not counted twice');

-- An agent budget: the crossing report writes one budget:exhausted; further reports do not.
select public.ops_set_policy('budgets', '{"agent_daily_usd": 0.01}', 't');
select is(ops_internal.gate_budget('scout'), null, 'under budget, the gate passes');
select public.ops_fail_step((c -> 1 ->> 'id')::bigint, 1, 'rate limited', true, '{"cost_usd": 0.005}') from c1;
select is((select count(*)::int from public.ops_agent_events where type = 'budget:exhausted'), 1, 'crossing writes budget:exhausted');
select is((select payload ->> 'agent_id' from public.ops_agent_events where type = 'budget:exhausted'), 'scout', 'for the agent');
select is(ops_internal.gate_budget('scout'),
  'daily budget exhausted for scout (0.0120 USD, 1500 tokens today; limits 0.01 USD, no tokens)', 'the gate says why');
select is(public.ops_create_proposal('{"agent_id": "scout", "title": "more", "steps": [{"kind": "crawl"}]}') ->> 'reason',
  'daily budget exhausted for scout (0.0120 USD, 1500 tokens today; limits 0.01 USD, no tokens)',
  'new proposals of the agent are rejected with the reason');
select is(public.ops_create_proposal('{"agent_id": "other", "title": "fine", "steps": [{"kind": "crawl"}]}') ->> 'status',
  'accepted', 'other agents are not');

-- Held at claim time: the exhausted agent's llm steps stay queued; other agents' and other kinds run.
select results_eq($$select e ->> 'agent_id', e ->> 'kind' from jsonb_array_elements(public.ops_claim_next_step('w1', null, 10)) e order by 1, 2$$,
  $$values ('other', 'crawl'), ('other', 'llm'), ('scout', 'crawl')$$, 'scout''s llm steps are held, not claimed');
select is((select count(*)::int from public.ops_mission_steps s join public.ops_missions m on m.id = s.mission_id
            where m.agent_id = 'scout' and s.kind = 'llm' and s.status = 'queued'), 2, 'and stay queued (not failed)');

-- Raising the budget releases them; crossing it again is a new episode.
select public.ops_set_policy('budgets', '{"agent_daily_usd": 1}', 't');
select is(jsonb_array_length(public.ops_claim_next_step('w1', array['llm'], 10)), 1,
  'a raised budget releases the held step (the failed one waits out its backoff)');
select public.ops_set_policy('budgets', '{"daily_usd": 0.02}', 't');
select public.ops_complete_step(id, attempt, '{}', '{"cost_usd": 0.01}') from public.ops_mission_steps
 where kind = 'llm' and status = 'running' order by id limit 1;
select is((select count(*)::int from public.ops_agent_events where type = 'budget:exhausted' and payload ->> 'agent_id' = '*'), 1,
  'the global budget has its own episode');
select is(ops_internal.held_agents(ops_internal.policy('budgets')), array['*'], 'the global budget holds every agent');
select is(public.ops_create_proposal('{"agent_id": "newcomer", "title": "x", "steps": [{"kind": "crawl"}]}') ->> 'reason',
  'global daily budget exhausted (0.0220 USD, 1500 tokens today; limits 0.02 USD, no tokens)', 'and refuses everyone');

-- A limit of 0 holds and refuses before anything is spent.
select public.ops_set_policy('budgets', '{"per_agent": {"fresh": {"daily_usd": 0}}}', 't');
select is(ops_internal.held_agents(ops_internal.policy('budgets')), array['fresh'], 'a zero budget holds the agent at once');
select is(ops_internal.gate_budget('fresh'), 'daily budget exhausted for fresh (0.0000 USD, 0 tokens today; limits 0 USD, no tokens)',
  'and refuses its proposals');
select public.ops_set_policy('budgets', '{"agent_daily_tokens": 0}', 't');
select ok('*' = any (ops_internal.held_agents(ops_internal.policy('budgets'))), 'a zero default holds every agent');

select * from finish();
rollback;
