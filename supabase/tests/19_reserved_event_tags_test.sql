-- Domain events cannot carry the loop's own tags, so a reaction pattern for mission:failed sees only real failures.
begin;
select plan(7);

select throws_ok($$select public.ops_emit_event('{"type": "tweet:oops", "agent_id": "brain", "tags": ["mission:failed"]}')$$,
  'PT400', 'tags[0] (mission:failed) names the reserved entity mission: only the loop''s own events carry it',
  'the forged mission:failed tag is refused');
select throws_ok($$select public.ops_emit_event('{"type": "tweet:oops", "agent_id": "brain", "tags": ["launch", "mission"]}')$$,
  'PT400', 'tags[1] (mission) names the reserved entity mission: only the loop''s own events carry it',
  'so is the bare entity, which patterns may match with the status');
select is((select count(*)::int from unnest(ops_internal.reserved_event_entities()) as e
            where e in ('proposal', 'mission', 'step', 'reaction', 'trigger', 'policy', 'heartbeat', 'worker', 'queue')), 9,
  'proposals, missions, steps, reactions, triggers, policy, heartbeats, workers and queues are reserved');
select lives_ok($$select public.ops_emit_event('{"type": "tweet:posted", "agent_id": "twitter-alt", "tags": ["viral", "failed", "queued_later"]}')$$,
  'domain tags, even words like failed, are fine');

-- A pattern on mission:failed: the forged event queues nothing, a real failure queues the reaction.
select public.ops_set_policy('reaction_matrix', '{"enabled": true, "patterns": [{"name": "diagnose_failures", "source": "*",
  "tags": ["mission:failed"], "target": "brain", "type": "diagnose", "step_kind": "analyze", "probability": 1.0, "cooldown": 0}]}', 'test');
select throws_ok($$select public.ops_emit_event('{"type": "tweet:oops", "agent_id": "brain", "tags": ["mission:failed"]}')$$,
  'PT400', null, 'the forgery is refused before it is written');
select is((select count(*)::int from public.ops_agent_reactions), 0, 'no reaction was queued by it');

select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["crawl"]}', 'test');
select public.ops_create_proposal('{"agent_id": "brain", "title": "fails", "steps": [{"kind": "crawl"}]}');
select public.ops_fail_step((s ->> 'id')::bigint, (s ->> 'attempt')::integer, 'boom', false)
  from jsonb_array_elements(public.ops_claim_next_step('w1', array['crawl'], 1, 60)) as s;
select is((select count(*)::int from public.ops_agent_reactions where reaction_type = 'diagnose'), 1,
  'a real mission:failed still matches the pattern by its type tag');

select * from finish();
rollback;
