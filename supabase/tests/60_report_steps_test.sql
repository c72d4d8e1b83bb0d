-- Batch reports and report-and-claim: each report fenced like the single calls, set-based, one answer each.
begin;
select plan(19);

select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["noop", "crawl"]}', 't');
select public.ops_set_policy('worker_policy', '{"backoff_base_seconds": 0, "max_attempts": 2}', 't');
-- Three two-step missions and one single-step one.
select public.ops_create_proposal(jsonb_build_object('agent_id', 'a', 'title', 'm' || g,
  'steps', '[{"kind": "noop"}, {"kind": "noop"}]'::jsonb)) from generate_series(1, 3) g;
select public.ops_create_proposal('{"agent_id": "a", "title": "single", "steps": [{"kind": "crawl"}]}');
create temp table c as select (e ->> 'id')::bigint as id, (e ->> 'attempt')::int as attempt, e ->> 'kind' as kind,
  row_number() over (order by (e ->> 'id')::bigint) as n
  from jsonb_array_elements(public.ops_claim_next_step('w1', null, 10)) e;
select is((select count(*)::int from c), 4, 'four first steps running');

-- Input is checked as a whole: nothing is written when one report is invalid.
select throws_ok($$select public.ops_report_steps('[]')$$, 'PT400', 'reports must hold 1 to 100 reports', 'empty is refused');
select throws_ok(format($$select public.ops_report_steps('[{"step_id": %s, "attempt": 1}, {"step_id": 1, "attempt": 0}]')$$,
  (select id from c where n = 1)), 'PT400', 'reports[1].attempt must be from 1 to 100', 'the field is named');
select throws_ok($$select public.ops_report_steps('[{"step_id": 1, "attempt": 1, "output": {}, "error": "x"}]')$$, 'PT400',
  'reports[0] carries output and error: a report is one or the other', 'a report is one or the other');
select throws_ok($$select public.ops_report_steps('[{"step_id": 1, "attempt": 1, "usage": {"tokens_in": -1}}]')$$, 'PT400',
  'reports[0].usage.tokens_in must be from 0 to 1000000000', 'usage is checked and named');
select throws_ok(format($$select public.ops_report_steps('[{"step_id": %s, "attempt": 1}, {"step_id": %s, "attempt": 1}]')$$,
  (select id from c where n = 1), (select id from c where n = 1)), 'PT400',
  'reports[1].step_id repeats a step reported earlier in this call', 'a step once per call');
select is((select count(*)::int from public.ops_mission_steps where status = 'running'), 4, 'nothing was written');

-- One call: two successes, a retryable failure, a terminal failure... and a stale report.
create temp table r as select public.ops_report_steps(jsonb_build_array(
  jsonb_build_object('step_id', (select id from c where n = 1), 'attempt', 1, 'output', '{"x": 1}'::jsonb,
                     'usage', '{"tokens_in": 10, "cost_usd": 0.5}'::jsonb),
  jsonb_build_object('step_id', (select id from c where n = 2), 'attempt', 1),
  jsonb_build_object('step_id', (select id from c where n = 3), 'attempt', 1, 'error', 'flaky'),
  jsonb_build_object('step_id', (select id from c where n = 4), 'attempt', 1, 'error', 'broken', 'retryable', false),
  jsonb_build_object('step_id', (select id from c where n = 1), 'attempt', 2, 'output', '{}'::jsonb) - 'output'
    || '{"step_id": 999999}'::jsonb)) as a;
select is((select jsonb_array_length(a) from r), 5, 'one answer per report, in order');
select results_eq($$select e ->> 'status', e ->> 'mission_status', (e ->> 'duplicate')::boolean
                      from r, jsonb_array_elements(a) with ordinality x(e, n) where n <= 4 order by n$$,
  $$values ('succeeded', 'running', false), ('succeeded', 'running', false), ('queued', 'running', false), ('failed', 'failed', false)$$,
  'what the single calls would answer');
select is((select a -> 4 -> 'error' from r), '{"code": "PT404", "message": "step 999999 not found"}'::jsonb,
  'an unknown step is answered, not raised');
select is((select count(*)::int from public.ops_mission_steps s
            where s.status = 'queued' and s.position = 1 and s.mission_id in
              (select mission_id from public.ops_mission_steps where id in (select id from c where n in (1, 2)))), 2,
  'the next steps of both missions are promoted');
select is((select usage from public.ops_mission_steps where id = (select id from c where n = 1)),
  '{"tokens_in": 10, "tokens_out": 0, "cost_usd": 0.5}'::jsonb, 'usage is kept');
select is((select cost_usd from public.ops_spend_daily where agent_id = 'a'), 0.5::numeric, 'and spent');
select is((select count(*)::int from public.ops_agent_events where type = 'step:succeeded'), 2, 'status events as usual');

-- A repeat is a duplicate; a different output for the same attempt is a conflict, answered.
select is(public.ops_report_steps(jsonb_build_array(
  jsonb_build_object('step_id', (select id from c where n = 1), 'attempt', 1, 'output', '{"x": 1}'::jsonb))) -> 0 ->> 'duplicate',
  'true', 'a repeated report is a duplicate');
select is(public.ops_report_steps(jsonb_build_array(
  jsonb_build_object('step_id', (select id from c where n = 1), 'attempt', 1, 'output', '{"x": 2}'::jsonb))) -> 0 -> 'error' ->> 'code',
  'PT409', 'a different output is a conflict');
select is((select cost_usd from public.ops_spend_daily where agent_id = 'a'), 0.5::numeric, 'repeats spend nothing');

-- Report and claim in one call: the promoted next step can be claimed at once.
create temp table rc as select public.ops_report_and_claim('w1', jsonb_build_array(
  jsonb_build_object('step_id', (select id from c where n = 3), 'attempt', 1, 'error', 'flaky')), array['noop'], 5) as a;
select is((select jsonb_array_length(a -> 'claimed') from rc), 3,
  'reports (a duplicate here) and claims in one call: the two promoted steps and the retried one');
select is(public.ops_report_and_claim('w1', null, null, 0), '{"reports": [], "claimed": [], "busy": false}'::jsonb, 'max_steps 0 claims nothing');

select * from finish();
rollback;
