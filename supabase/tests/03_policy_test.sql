-- ops_set_policy / ops_get_policy: validation of every known key, the policy:updated event.
begin;
select plan(26);

-- The seed itself passes the validator.
select lives_ok(format('select ops_internal.validate_policy(%L, %L::jsonb)', key, value), 'seeded ' || key || ' is valid')
  from public.ops_policy order by key;

select is(public.ops_get_policy('system') -> 'value', '{"enabled": true}'::jsonb, 'get returns the stored value');
select is(public.ops_get_policy('worker:post_tweet') -> 'value', 'null'::jsonb, 'an unset per-kind flag reads as null');
select throws_ok($$select public.ops_get_policy('nope')$$, 'PT400',
  'key must be one of: alerts, auto_approve, budgets, content_policy, daily_proposal_limit, gates, heartbeat, max_active_missions, model_prices, notifications, reaction_matrix, retention, step_kind_gates, system, worker_policy, workers, x_autopost, x_daily_quota, worker:<kind>',
  'unknown keys are refused by name');

select is(public.ops_set_policy('max_active_missions', '{"limit": 3}', 'alice') ->> 'updated_by', 'alice',
  'set returns who changed it');
select is((select value from public.ops_policy where key = 'max_active_missions'), '{"limit": 3}'::jsonb, 'and stores it');
select is((select payload -> 'previous' from public.ops_agent_events where type = 'policy:updated' order by id desc limit 1),
  '{"limit": 25}'::jsonb, 'policy:updated carries the previous value');

select throws_ok($$select public.ops_set_policy('system', '{"enabled": "yes"}', 'alice')$$, 'PT400',
  'value.enabled must be true or false', 'types are checked');
select throws_ok($$select public.ops_set_policy('system', '{"enabled": true, "typo": 1}', 'alice')$$, 'PT400',
  'value.typo is not a known field (expected one of: enabled, reason)', 'unknown fields are refused');
select throws_ok($$select public.ops_set_policy('daily_proposal_limit', '{"limit": -1}', 'alice')$$, 'PT400',
  'value.limit must be from 0 to 1000000', 'ranges are checked');
select throws_ok($$select public.ops_set_policy('step_kind_gates', '{"Post": {"daily_limit": 1}}', 'alice')$$, 'PT400',
  'value has key "Post", which must match ^[a-z][a-z0-9_]{0,63}$', 'gate keys are step kinds');
select throws_ok($$select public.ops_set_policy('worker_policy', '{"backoff_base_seconds": 60, "backoff_max_seconds": 10}', 'alice')$$,
  'PT400', 'value.backoff_max_seconds must be at least backoff_base_seconds', 'cross-field rules are checked');
select throws_ok($$select public.ops_set_policy('reaction_matrix', '{"patterns": [{"source": "*", "tags": [], "target": "brain", "type": "analyze", "probability": 1, "cooldown": 5}]}', 'alice')$$,
  'PT400', 'value.patterns[0].tags must hold 1 to 20 items', 'patterns are validated item by item');
select throws_ok($$select public.ops_set_policy('reaction_matrix', '{"patterns": [{"name": "a", "source": "*", "tags": ["x"], "target": "b", "type": "t", "probability": 1.5, "cooldown": 5}]}', 'alice')$$,
  'PT400', 'value.patterns[0].probability must be from 0 to 1', 'probabilities are 0..1');
select throws_ok($$select public.ops_set_policy('worker:Bad', '{"enabled": false}', 'alice')$$, 'PT400', null,
  'per-kind flags need a valid kind');
select lives_ok($$select public.ops_set_policy('worker:post_tweet', '{"enabled": false, "reason": "circuit open", "failures": 3}', 'worker-1')$$,
  'per-kind flags can be written');
select throws_ok($$select public.ops_set_policy('system', '{"enabled": false}', '  ')$$, 'PT400',
  'updated_by must be 1 to 200 characters', 'who changed it is required');
select is((select value from public.ops_policy where key = 'system'), '{"enabled": true}'::jsonb,
  'a refused change writes nothing');

select * from finish();
rollback;
