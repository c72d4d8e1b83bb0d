-- JSON nesting is bounded at 64 levels in every input: proposals, events, policy values and step outputs.
begin;
select plan(13);

create function pg_temp.nested(levels integer) returns jsonb language sql as $$
  select (pg_catalog.repeat('[', levels) || pg_catalog.repeat(']', levels))::jsonb
$$;

select is(ops_internal.max_json_depth(), 64, 'the documented limit');
select ok(not ops_internal.json_too_deep(pg_temp.nested(64)), '64 nested arrays are allowed');
select ok(ops_internal.json_too_deep(pg_temp.nested(65)), '65 are too deep');
select ok(ops_internal.json_too_deep(pg_temp.nested(3000)), 'the 12 KiB payload of 3,000 arrays is too deep');
select ok(not ops_internal.json_too_deep('{"a": {"b": [1, 2, {"c": "d"}]}}'), 'ordinary documents pass');

select throws_ok(
  $$select public.ops_create_proposal(jsonb_build_object('agent_id', 'brain', 'title', 't',
      'steps', jsonb_build_array(jsonb_build_object('kind', 'crawl', 'payload', jsonb_build_object('x', pg_temp.nested(3000))))))$$,
  'PT400', 'proposal.steps[0].payload must not nest arrays and objects more than 64 levels deep',
  'a proposal names the step payload that nests too deep');
select throws_ok(
  $$select public.ops_create_proposal(jsonb_build_object('agent_id', 'brain', 'title', 't',
      'steps', jsonb_build_array(jsonb_build_object('kind', 'crawl')), 'metadata', jsonb_build_object('m', pg_temp.nested(80))))$$,
  'PT400', 'proposal.metadata.m must not nest arrays and objects more than 64 levels deep', 'and its metadata');
select throws_ok(
  $$select public.ops_emit_event(jsonb_build_object('type', 'tweet:posted', 'agent_id', 'x',
      'payload', jsonb_build_object('thread', pg_temp.nested(3000))))$$,
  'PT400', 'event.payload.thread must not nest arrays and objects more than 64 levels deep', 'event payloads');
select throws_ok(
  $$select public.ops_set_policy('system', jsonb_build_object('enabled', true, 'reason', pg_temp.nested(100)), 't')$$,
  'PT400', 'value.reason must not nest arrays and objects more than 64 levels deep', 'policy values');

select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["crawl"]}', 'test');
select public.ops_create_proposal('{"agent_id": "brain", "title": "deep output", "steps": [{"kind": "crawl"}]}');
create temp table claimed as select s from jsonb_array_elements(public.ops_claim_next_step('w1', array['crawl'], 1, 60)) as s;
select throws_ok(
  $$select public.ops_complete_step((s ->> 'id')::bigint, (s ->> 'attempt')::integer, pg_temp.nested(3000)) from claimed$$,
  'PT400', 'output must not nest arrays and objects more than 64 levels deep', 'step outputs');
select is((select status from public.ops_mission_steps where id = (select (s ->> 'id')::bigint from claimed)), 'running',
  'a refused output leaves the step as it was');
select is((select public.ops_complete_step((s ->> 'id')::bigint, (s ->> 'attempt')::integer, pg_temp.nested(64)) ->> 'status'
             from claimed), 'succeeded', 'an output 64 levels deep is stored');
select is((select count(*)::int from public.ops_agent_events where type = 'tweet:posted'), 0, 'refused inputs write nothing');

select * from finish();
rollback;
