-- Reactions: matching at event time (source, all tags, probability roll, cooldown), queueing, and
-- ops_process_reactions turning them into proposals through the proposal service.
begin;
select plan(15);

select public.ops_set_policy('reaction_matrix', '{"enabled": true, "patterns": [
  {"name": "posted", "source": "twitter-alt", "tags": ["tweet", "posted"], "target": "growth", "type": "analyze", "probability": 1, "cooldown": 120, "payload": {"focus": "engagement"}},
  {"name": "never", "source": "*", "tags": ["tweet"], "target": "observer", "type": "analyze", "probability": 0, "cooldown": 0},
  {"name": "failures", "source": "*", "tags": ["mission:failed"], "target": "brain", "type": "diagnose", "step_kind": "analyze", "probability": 1, "cooldown": 60}
]}', 'test');

select public.ops_emit_event('{"type": "tweet:posted", "agent_id": "someone-else", "tags": ["tweet", "posted"]}');
select is((select count(*)::int from public.ops_agent_reactions), 0, 'the source must match');
select public.ops_emit_event('{"type": "tweet:drafted", "agent_id": "twitter-alt", "tags": ["tweet"]}');
select is((select count(*)::int from public.ops_agent_reactions), 0, 'every pattern tag must be present (probability 0 never fires)');
select public.ops_emit_event('{"type": "tweet:posted", "agent_id": "twitter-alt", "payload": {"tweet_id": "t-9"}}');
select results_eq($$select pattern, source_agent, target_agent, reaction_type, step_kind, status, probability, roll < 1
                      from public.ops_agent_reactions$$,
  $$values ('posted', 'twitter-alt', 'growth', 'analyze', 'analyze', 'queued', 1::double precision, true)$$,
  'a match is queued with its roll');
select is((select count(*)::int from public.ops_agent_events where type = 'reaction:queued'), 1, 'reaction:queued is emitted');
select public.ops_emit_event('{"type": "tweet:posted", "agent_id": "twitter-alt"}');
select is((select count(*)::int from public.ops_agent_reactions), 1, 'the cooldown holds a second match back');
update public.ops_agent_reactions set created_at = now() - interval '121 minutes';
select public.ops_emit_event('{"type": "tweet:posted", "agent_id": "twitter-alt"}');
select is((select count(*)::int from public.ops_agent_reactions), 2, 'after the cooldown it reacts again');

-- Processing: through ops_create_proposal with source reaction and dedupe key reaction:<id>.
select is(public.ops_process_reactions() - 'deferred', '{"processed": 2, "done": 2, "skipped": 0, "failed": 0}'::jsonb, 'both processed');
select results_eq($$select p.source, p.dedupe_key, p.status, p.agent_id from public.ops_mission_proposals p
                     join public.ops_agent_reactions r on r.proposal_id = p.id order by r.id$$,
  $$select 'reaction', 'reaction:' || id, 'accepted', 'growth' from public.ops_agent_reactions order by id$$,
  'each became an auto-approved proposal of the target agent');
select is((select s.payload -> 'focus' from public.ops_mission_steps s join public.ops_missions m on m.id = s.mission_id
            join public.ops_agent_reactions r on r.proposal_id = m.proposal_id order by r.id limit 1), '"engagement"'::jsonb,
  'the pattern payload reaches the step');
select ok((select s.payload -> 'event' ? 'type' from public.ops_mission_steps s join public.ops_missions m on m.id = s.mission_id
            join public.ops_agent_reactions r on r.proposal_id = m.proposal_id order by r.id limit 1),
  'with the event it reacts to');
select is(public.ops_process_reactions() ->> 'processed', '0', 'nothing left');

-- A reaction whose proposal a gate rejects is skipped with the reason.
select public.ops_set_policy('step_kind_gates', '{"analyze": {"enabled": false}}', 'test');
select public.ops_create_proposal('{"agent_id": "brain", "title": "will fail", "steps": [{"kind": "crawl"}]}');
select public.ops_fail_step((public.ops_claim_next_step('w', array['crawl']) -> 0 ->> 'id')::bigint, 1, 'boom', false);
select is((select count(*)::int from public.ops_agent_reactions where pattern = 'failures'), 1, 'mission:failed matched');
select is(public.ops_process_reactions() ->> 'skipped', '1', 'the gate rejected its proposal');
select results_eq($$select status, reason from public.ops_agent_reactions where pattern = 'failures'$$,
  $$values ('skipped', 'step kind analyze is disabled by policy (step_kind_gates.analyze.enabled = false)')$$, 'skipped, with the reason');

-- Disabled matrix: no matching at all.
select public.ops_set_policy('reaction_matrix', '{"enabled": false, "patterns": []}', 'test');
select public.ops_emit_event('{"type": "tweet:posted", "agent_id": "twitter-alt"}');
select is((select count(*)::int from public.ops_agent_reactions), 3, 'a disabled matrix queues nothing');

select * from finish();
rollback;
