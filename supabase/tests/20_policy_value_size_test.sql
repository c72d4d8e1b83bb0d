-- ops_set_policy: a value is at most 256 KiB of JSON, whatever its key.
begin;
select plan(3);

select is(ops_internal.max_policy_bytes(), 262144, 'the documented limit');
select throws_ok($$select public.ops_set_policy('step_kind_gates',
    (select jsonb_object_agg('kind_' || g, jsonb_build_object('daily_limit', g, 'enabled', true)) from generate_series(1, 7000) g),
    'test')$$,
  'PT400', 'value must be at most 262144 bytes of JSON', 'a map of 7,000 kinds is refused');
select lives_ok($$select public.ops_set_policy('step_kind_gates',
    (select jsonb_object_agg('kind_' || g, jsonb_build_object('daily_limit', g, 'enabled', true)) from generate_series(1, 100) g),
    'test')$$, 'a hundred kinds are fine');

select * from finish();
rollback;
