-- ops_emit_event: domain events from executors; reserved entities; references checked.
begin;
select plan(9);

select public.ops_create_proposal('{"agent_id": "twitter-alt", "title": "tweet", "steps": [{"kind": "draft_tweet"}]}');
create temp table e as select public.ops_emit_event(jsonb_build_object(
  'type', 'tweet:posted', 'agent_id', 'twitter-alt', 'tags', jsonb_build_array('tweet', 'posted', 'launch'),
  'payload', jsonb_build_object('tweet_id', 't-1'), 'mission_id', (select max(id) from public.ops_missions),
  'step_id', (select max(id) from public.ops_mission_steps))) as r;
select is((select r -> 'tags' from e), '["tweet:posted", "tweet", "posted", "launch"]'::jsonb, 'type and parts come first, no duplicates');
select results_eq($$select agent_id, source, title, payload from public.ops_agent_events where id = (select (r ->> 'event_id')::bigint from e)$$,
  $$values ('twitter-alt', 'api', 'tweet:posted', '{"tweet_id": "t-1"}'::jsonb)$$, 'stored as given, with defaults');
select throws_ok($$select public.ops_emit_event('{"type": "mission:failed", "agent_id": "brain"}')$$, 'PT400',
  'type mission:failed uses the reserved entity mission: those events come only from state changes', 'the loop''s own events cannot be faked');
select throws_ok($$select public.ops_emit_event('{"type": "Tweet posted", "agent_id": "x"}')$$, 'PT400',
  'type must match ^[a-z][a-z0-9_]{0,63}:[a-z][a-z0-9_]{0,63}$', 'types are entity:what');
select throws_ok($$select public.ops_emit_event('{"type": "tweet:posted"}')$$, 'PT400', 'agent_id is required', 'an agent is required');
select throws_ok($$select public.ops_emit_event('{"type": "tweet:posted", "agent_id": "x", "mission_id": 999999}')$$, 'PT404',
  'mission 999999 not found', 'references must exist');
select throws_ok($$select public.ops_emit_event('{"type": "tweet:posted", "agent_id": "x", "payload": [1]}')$$, 'PT400',
  'payload must be a JSON object', 'payload is an object');
select throws_ok($$select public.ops_emit_event('{"type": "tweet:posted", "agent_id": "x", "colour": "red"}')$$, 'PT400',
  'colour is not a known field (expected one of: type, agent_id, source, tags, title, summary, payload, proposal_id, mission_id, step_id)',
  'unknown fields are refused');
select is((select count(*)::int from public.ops_agent_events where type like 'tweet:%'), 1, 'refused events write nothing');

select * from finish();
rollback;
