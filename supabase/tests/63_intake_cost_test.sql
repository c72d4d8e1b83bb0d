-- Intake cost (20261203007400): the helpers rewritten in plpgsql answer as the SQL ones did, the validation
-- fast paths refuse what they refused, and every rewritten function keeps its search_path.
begin;
select plan(24);

create function pg_temp.propose(body jsonb) returns jsonb language sql as $$ select public.ops_create_proposal(body) $$;

-- Every function the migration redefines still pins its search_path.
select is_empty($$
  select p.oid::regprocedure::text from pg_proc p
   where p.pronamespace in ('ops_internal'::regnamespace, 'public'::regnamespace)
     and p.proname in ('policy', 'system_enabled', 'name_re', 'agent_id_re', 'agent_id_pattern', 'kind_pattern',
       'event_type_pattern', 'source_pattern', 'content_kinds', 'field_name', 'step_kinds', 'worker_setting',
       'changed_statuses', 'utc_today', 'utc_day_start', 'near_quota', 'kind_daily_limit', 'lock', 'agent_budget',
       'budget_exhausted', 'gate_system', 'gate_budget', 'gate_kinds_enabled', 'gate_article_switches',
       'gate_live_workers', 'gate_reason', 'proposal_result', 'check_keys', 'get_text', 'get_object',
       'normalize_proposal')
     and not coalesce(p.proconfig, '{}') @> array['search_path=pg_catalog, pg_temp']
$$, 'every redefined function keeps set search_path = pg_catalog, pg_temp');

-- The helpers' values.
select is(ops_internal.policy('no_such_key'), '{}'::jsonb, 'an unset policy reads as {}');
select is(ops_internal.agent_id_pattern(), '^[a-z0-9][a-z0-9_.:-]{0,63}$', 'agent id pattern');
select is(ops_internal.event_type_pattern(), '^[a-z][a-z0-9_]{0,63}:[a-z][a-z0-9_]{0,63}$', 'event type pattern');
select is(ops_internal.kind_pattern(), '^[a-z][a-z0-9_]{0,63}$', 'kind pattern');
select is(ops_internal.field_name('', 'x'), 'x', 'a top-level field');
select is(ops_internal.field_name('steps[0]', 'kind'), 'steps[0].kind', 'a nested field');
select is(ops_internal.step_kinds('[{"kind": "a"}, {"kind": "b"}]'), array['a', 'b'], 'step kinds in order');
select is(ops_internal.worker_setting('{"kinds": {"k": {"max_attempts": 7}}}', 'k', 'max_attempts'), 7,
  'a per-kind worker setting');
select is(ops_internal.worker_setting('{}', 'k', 'lease_seconds'), 1800, 'a default worker setting');
select is(ops_internal.changed_statuses('{"1": "a", "2": "b"}', '{"1": "a", "2": "c"}'), '{"2": "b"}'::jsonb,
  'changed statuses keep the previous status of the rows that changed');
select ok(ops_internal.near_quota(0, 1, 1, 1) and not ops_internal.near_quota(0, 1, 1000000, 1), 'near_quota');
select is((ops_internal.agent_budget('{"agent_daily_usd": 2, "per_agent": {"a": {"daily_tokens": 5}}}', 'a')).tokens,
  5::bigint, 'a per-agent budget');
select ok(ops_internal.budget_exhausted('{"daily_usd": 1}', '*', 1, 0), 'a budget is exhausted at its limit');

-- Validation: the fast paths refuse what they refused.
select throws_ok($$select pg_temp.propose('{"agent_id": "a", "title": "t", "steps": [{"kind": "k"}], "colour": 1}')$$,
  'PT400', 'colour is not a known field (expected one of: agent_id, title, steps, source, description, dedupe_key, metadata)',
  'an unknown proposal field');
select throws_ok($$select pg_temp.propose('{"agent_id": "a", "title": "t", "steps": [{"kind": "k"}, {"kind": "k", "x": 1}]}')$$,
  'PT400', 'steps[1].x is not a known field (expected one of: kind, payload, depends_on)', 'an unknown step field');
select throws_ok($$select pg_temp.propose('{"agent_id": "a", "title": "t", "steps": [{"kind": "k"}, 3]}')$$,
  'PT400', 'steps[1] must be a JSON object', 'a step that is not an object');
select throws_ok($$select pg_temp.propose('{"agent_id": "a", "title": "t", "steps": [{"kind": "k"}, null]}')$$,
  'PT400', 'steps[1] must be a JSON object', 'a null step');
select throws_ok($$select pg_temp.propose('{"agent_id": "a", "title": "t", "steps": [{"kind": "K"}]}')$$,
  'PT400', 'steps[0].kind must match ^[a-z][a-z0-9_]{0,63}$', 'a kind off the pattern');
select throws_ok($$select pg_temp.propose('{"agent_id": "a", "title": "t", "steps": [{"kind": "k", "payload": []}]}')$$,
  'PT400', 'steps[0].payload must be a JSON object', 'a payload that is not an object');
select throws_ok($$select pg_temp.propose('{"agent_id": "a", "title": " ", "steps": [{"kind": "k"}]}')$$,
  'PT400', 'title must be 1 to 200 characters', 'a blank title');

-- The gates: same order, same reasons.
do $$ begin perform public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["crawl"]}', 'test'); end $$;
do $$ begin perform public.ops_set_policy('step_kind_gates', '{"crawl": {"enabled": false}}', 'test'); end $$;
select is(pg_temp.propose('{"agent_id": "a", "title": "t", "steps": [{"kind": "crawl"}]}') ->> 'reason',
  'step kind crawl is disabled by policy (step_kind_gates.crawl.enabled = false)', 'a disabled kind is refused');
do $$ begin perform public.ops_set_policy('system', '{"enabled": false, "reason": "maintenance"}', 'test'); end $$;
select is(ops_internal.gate_reason('a', array['crawl'], true, true),
  'system disabled by policy (system.enabled = false): maintenance', 'the kill switch comes first');
do $$ begin perform public.ops_set_policy('system', '{"enabled": true}', 'test'); end $$;
do $$ begin perform public.ops_set_policy('step_kind_gates', '{}', 'test'); end $$;
select is(pg_temp.propose('{"agent_id": "a", "title": "t", "steps": [{"kind": "crawl"}]}') ->> 'status', 'accepted',
  'with nothing in the way the proposal is auto-approved');

select * from finish();
rollback;
