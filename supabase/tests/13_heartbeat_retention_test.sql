-- ops_heartbeat: all tasks, one audit row, errors isolated, kill switch; retention pruning in batches.
begin;
select plan(16);

select public.ops_create_proposal('{"agent_id": "brain", "title": "hb", "steps": [{"kind": "crawl"}]}');
select public.ops_claim_next_step('w', array['crawl']);
update public.ops_mission_steps set lease_expires_at = now() - interval '1 minute' where kind = 'crawl';

create temp table hb as select public.ops_heartbeat() as r;
select is((select r ->> 'ok' from hb), 'true', 'a clean heartbeat is ok');
select is((select r -> 'recovery' ->> 'recovered' from hb), '1', 'it recovered the stale step');
select ok((select r ? 'triggers' and r ? 'reactions' and r ? 'retention' from hb), 'and ran every task');
select results_eq($$select action, status, result ->> 'run_id' is null, duration_ms >= 0 from public.ops_action_runs$$,
  $$values ('heartbeat', 'succeeded', true, true)$$, 'one ops_action_runs row per run');
select is((select r ->> 'run_id' from hb)::bigint, (select max(id) from public.ops_action_runs), 'the result names its audit row');

-- One failing task does not stop the others; the run is marked failed and a warning event emitted.
update public.ops_policy set value = '{"enabled": true, "patterns": "broken"}' where key = 'reaction_matrix';
select lives_ok($$select public.ops_emit_event('{"type": "tweet:posted", "agent_id": "x"}')$$,
  'a matrix written around the validator cannot break event writes');
insert into public.ops_agent_reactions (pattern, source_agent, target_agent, reaction_type, step_kind, probability, roll)
values ('p', 'a', 'Not A Valid Agent', 'analyze', 'analyze', 1, 0.5);
create temp table hb2 as select public.ops_heartbeat() as r;
select is((select r -> 'reactions' ->> 'failed' from hb2), '1', 'a bad reaction fails alone');
select is((select status from public.ops_action_runs order by id desc limit 1), 'succeeded', 'its failure is recorded on the reaction, not the run');
update public.ops_policy set value = '{"backoff_base_seconds": "bad"}' where key = 'worker_policy';
update public.ops_mission_steps set lease_expires_at = now() - interval '1 minute', status = 'running', reserved_by = 'w', run_after = now(),
       attempt = 1 where kind = 'crawl';
create temp table hb3 as select public.ops_heartbeat() as r;
select ok((select (r -> 'errors' -> 0 ->> 'task') = 'recovery' and r ? 'retention' from hb3), 'a task that throws is reported; the rest still ran');
select is((select status from public.ops_action_runs order by id desc limit 1), 'failed', 'the run is marked failed');
select ok((select tags @> array['heartbeat:failed', 'warning'] from public.ops_agent_events where type = 'heartbeat:failed'), 'with a warning event');

-- Kill switch: triggers and reactions wait.
select public.ops_set_policy('system', '{"enabled": false}', 'test');
select is((public.ops_heartbeat() -> 'triggers'), '{"skipped": "system disabled"}'::jsonb, 'triggers wait while the system is off');

-- Retention: history older than the policy allows is pruned, in batches.
insert into public.ops_agent_events (type, created_at) select 'test:old', now() - interval '40 days' from generate_series(1, 5);
select public.ops_set_policy('retention', '{"events_days": 30, "batch_size": 3}', 'test');
select is((ops_internal.prune_history() ->> 'events')::int, 3, 'at most one batch per run');
select is((select count(*)::int from public.ops_agent_events where type = 'test:old'), 2, 'oldest first, newer history kept');

-- Retention reads prunable rows by age through partial indexes, so its cost does not grow with history.
select has_index('public', 'ops_mission_proposals', 'ops_mission_proposals_rejected_idx', array['decided_at'],
  'rejected proposals are found by decision age');
select has_index('public', 'ops_agent_reactions', 'ops_agent_reactions_processed_idx', array['processed_at'],
  'processed reactions are found by age');

select * from finish();
rollback;
