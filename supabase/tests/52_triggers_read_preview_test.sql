-- ops_list_trigger_rules, ops_get_trigger_rule and the dry run ops_preview_trigger_rule: bookkeeping, the
-- fire history from trigger:fired events, and what a rule would propose now, writing nothing.
begin;
select plan(30);

create function pg_temp.ops_rows() returns bigint language sql as $$
  select (select count(*) from public.ops_mission_proposals) + (select count(*) from public.ops_missions)
       + (select count(*) from public.ops_mission_steps) + (select count(*) from public.ops_agent_events)
       + (select count(*) from public.ops_trigger_rules) + (select count(*) from public.ops_policy)
$$;

-- The list.
select is((select array_agg(r ->> 'name' order by n) from jsonb_array_elements(public.ops_list_trigger_rules()) with ordinality as x(r, n)),
  array['content_published', 'insight_promoted', 'mission_failed', 'proactive_analyze_ops', 'proactive_draft_tweet',
        'proactive_research', 'proactive_scan_signals', 'tweet_high_engagement'], 'every rule, by name');
select is((select r - 'id' - 'created_at' - 'updated_at' from jsonb_array_elements(public.ops_list_trigger_rules()) r
            where r ->> 'name' = 'mission_failed'),
  '{"name": "mission_failed", "trigger_event": "event", "conditions": {"event_type": "mission:failed", "lookback_minutes": 60},
    "action_config": {"agent_id": "brain", "title": "Diagnose failed mission #{{event.mission_id}}", "steps": [{"kind": "analyze",
      "payload": {"task": "diagnose", "mission_id": "{{event.mission_id}}", "reason": "{{event.payload.reason}}"}}]},
    "cooldown_minutes": 60, "skip_probability": 0, "jitter_minutes": 0, "enabled": false, "fire_count": 0,
    "last_fired_at": null, "last_evaluated_at": null, "next_due_at": null, "due": false, "recent_fires": []}'::jsonb,
  'a rule: its definition, its bookkeeping, no next firing while disabled');

-- The dry run of a rule whose checker finds nothing.
select is(public.ops_preview_trigger_rule('mission_failed') - 'checker',
  '{"name": "mission_failed", "trigger_event": "event", "saved": true, "enabled": false, "due": false, "next_due_at": null,
    "matches": false, "error": null, "dedupe_key": null, "duplicate_of": null, "skip_probability": 0, "proposal": null,
    "invalid": null, "outcome": null, "would_propose": false}'::jsonb, 'no failed mission: nothing to propose');
select is(public.ops_preview_trigger_rule('mission_failed') ->> 'checker',
  format('no mission:failed event since %s', now() - interval '60 minutes'), 'the checker says why');

-- A failed mission: the dry run shows the proposal the heartbeat then makes.
select public.ops_create_proposal('{"agent_id": "growth", "title": "doomed", "steps": [{"kind": "crawl"}]}');
select public.ops_fail_step((public.ops_claim_next_step('w', array['crawl']) -> 0 ->> 'id')::bigint, 1, 'HTTP 500', false);
select public.ops_set_trigger_enabled('mission_failed', true, 'ada');
create temp table counted as select pg_temp.ops_rows() as n;
create temp table preview as select public.ops_preview_trigger_rule('mission_failed') as p;
select is(pg_temp.ops_rows(), (select n from counted), 'the dry run writes nothing');
select results_eq($$select p ->> 'matches', p ->> 'due', p ->> 'would_propose', p -> 'outcome' from preview$$,
  $$values ('true', 'true', 'true', '{"status": "accepted", "reason": null}'::jsonb)$$,
  'it matches, is due, and the proposal service would accept');
select is((select p ->> 'checker' from preview),
  (select format('mission:failed event #%s at %s', e.id, to_jsonb(e.created_at) #>> '{}') from public.ops_agent_events e
    where e.type = 'mission:failed'), 'the checker names the event it found');
select is((select p -> 'proposal' ->> 'title' from preview),
  (select 'Diagnose failed mission #' || id from public.ops_missions where status = 'failed'), 'the template is filled in');
select is(public.ops_evaluate_triggers() ->> 'fired', '1', 'the heartbeat fires it');
select results_eq(
  $$select agent_id, title, description, source, dedupe_key, metadata, proposed_steps
      from public.ops_mission_proposals where source = 'trigger'$$,
  $$select p -> 'proposal' ->> 'agent_id', p -> 'proposal' ->> 'title', p -> 'proposal' ->> 'description',
           p -> 'proposal' ->> 'source', p ->> 'dedupe_key', p -> 'proposal' -> 'metadata',
           (select jsonb_agg(s || '{"depends_on": []}' order by n) from jsonb_array_elements(p -> 'proposal' -> 'steps') with ordinality x(s, n))
      from preview$$,
  'with exactly the proposal the dry run showed');
select results_eq($$select p ->> 'due', p ->> 'duplicate_of', p ->> 'would_propose' from (select public.ops_preview_trigger_rule('mission_failed') p) x$$,
  $$select 'false', (select id::text from public.ops_mission_proposals where source = 'trigger'), 'false'$$,
  'afterwards: resting, and that event already made its proposal');

-- The firing in the list and in one rule.
select results_eq($$select (r ->> 'fire_count')::int, (r ->> 'last_fired_at')::timestamptz, (r ->> 'next_due_at')::timestamptz,
                           r -> 'recent_fires' -> 0 -> 'proposal_id', r -> 'recent_fires' -> 0 ->> 'status'
                      from jsonb_array_elements(public.ops_list_trigger_rules()) r where r ->> 'name' = 'mission_failed'$$,
  $$select 1, now(), now() + interval '60 minutes', to_jsonb((select id from public.ops_mission_proposals where source = 'trigger')), 'accepted'$$,
  'fire count, last and next firing, and the firing with its proposal');
select is((public.ops_get_trigger_rule('mission_failed') -> 'recent_fires' -> 0 ->> 'event_id')::bigint,
  (select id from public.ops_agent_events where type = 'trigger:fired'), 'each firing is its trigger:fired event');
insert into public.ops_agent_events (type, title, payload)
select 'trigger:fired', 'fired ' || g, jsonb_build_object('rule_id', (select id from public.ops_trigger_rules where name = 'mission_failed'),
  'proposal_id', 1000 + g, 'status', 'accepted')
  from generate_series(1, 30) g;
select is(jsonb_array_length((select r -> 'recent_fires' from jsonb_array_elements(public.ops_list_trigger_rules()) r
                                where r ->> 'name' = 'mission_failed')), 5, 'the list shows the 5 latest firings');
select is(jsonb_array_length(public.ops_get_trigger_rule('mission_failed') -> 'recent_fires'), 20, 'one rule its 20 latest');
select is(public.ops_get_trigger_rule('mission_failed') -> 'recent_fires' -> 0 -> 'proposal_id', '1030'::jsonb, 'newest first');
select throws_ok($$select public.ops_get_trigger_rule('nope')$$, 'PT404', 'trigger rule "nope" not found', 'get: unknown');
select throws_ok($$select public.ops_get_trigger_rule(null)$$, 'PT400', 'name is required', 'get: no name');

-- The outcome is the proposal service's decision now: a human, or a gate.
select results_eq($$select p ->> 'would_propose', p -> 'outcome' ->> 'status', p -> 'outcome' ->> 'reason', p ->> 'saved'
                      from (select public.ops_preview_trigger_rule(rule => '{"name": "quiet", "trigger_event": "absence",
                              "conditions": {"event_type": "tweet:posted", "lookback_minutes": 30}, "enabled": true,
                              "action_config": {"agent_id": "twitter-alt", "title": "Nothing posted in {{lookback_minutes}} min",
                                                "steps": [{"kind": "post_tweet"}]}}') as p) x$$,
  $$values ('true', 'pending', 'step kind post_tweet needs a human (not in auto_approve.allowed_step_kinds)', 'false')$$,
  'a draft document: it would propose, and the proposal would wait for a human');
select is((select count(*)::int from public.ops_trigger_rules where name = 'quiet'), 0, 'a draft is saved nowhere');
select public.ops_set_policy('system', '{"enabled": false, "reason": "maintenance"}', 'ada');
select is(public.ops_preview_trigger_rule('proactive_research') -> 'outcome',
  '{"status": "rejected", "reason": "system disabled by policy (system.enabled = false): maintenance"}'::jsonb, 'with the kill switch off: rejected, and why');
select public.ops_set_policy('system', '{"enabled": true}', 'ada');
select is(public.ops_preview_trigger_rule('proactive_research') #>> '{proposal,title}', 'Research: agent architectures',
  'a schedule shows its next topic');

-- What the heartbeat would meet in a broken rule written by hand.
insert into public.ops_trigger_rules (name, trigger_event, conditions, action_config) values
  ('no field', 'threshold', '{"event_type": "x:y"}', '{"agent_id": "brain", "title": "t", "steps": [{"kind": "analyze"}]}'),
  ('bad kind', 'schedule', '{}', '{"agent_id": "brain", "title": "t", "steps": [{"kind": "Not A Kind"}]}');
select results_eq($$select p ->> 'matches', p ->> 'error', p ->> 'checker' from (select public.ops_preview_trigger_rule('no field') p) x$$,
  $$values ('false', 'rule "no field" conditions.field is required', null)$$, 'a checker that would fail: its error');
select results_eq($$select p ->> 'invalid', p ->> 'would_propose', p -> 'outcome' from (select public.ops_preview_trigger_rule('bad kind') p) x$$,
  $$values ('steps[0].kind must match ^[a-z][a-z0-9_]{0,63}$', 'false', 'null'::jsonb)$$,
  'a proposal the service would refuse: its message');

-- A custom function that writes: the dry run rolls it back.
create schema trigger_fns;
create table trigger_fns.calls (at timestamptz);
create function trigger_fns.noisy(rule jsonb) returns jsonb language plpgsql as $$
begin
  insert into trigger_fns.calls values (now());
  return jsonb_build_object('agent_id', 'brain', 'title', 'custom ' || (rule ->> 'name'), 'steps', '[{"kind": "analyze"}]'::jsonb);
end;
$$;
grant execute on function trigger_fns.noisy(jsonb) to service_role;
select public.ops_set_trigger_rule('{"name": "noisy", "trigger_event": "custom", "conditions": {"function": "trigger_fns.noisy"}}', 'ada');
select is(public.ops_preview_trigger_rule('noisy') #>> '{proposal,title}', 'custom noisy', 'a custom rule is previewed');
select is((select count(*)::int from trigger_fns.calls), 0, 'and what its function wrote is rolled back');

-- Refusals.
select throws_ok($$select public.ops_preview_trigger_rule()$$, 'PT400',
  'name or rule is required: a saved rule by name, or a rule document', 'nothing to preview');
select throws_ok($$select public.ops_preview_trigger_rule('noisy', '{"name": "noisy"}')$$, 'PT400',
  'name and rule: give one of them (a saved rule by name, or a rule document)', 'both');
select throws_ok($$select public.ops_preview_trigger_rule('nope')$$, 'PT404', 'trigger rule "nope" not found', 'unknown');
select throws_ok($$select public.ops_preview_trigger_rule(rule => '{"name": "x", "trigger_event": "event", "conditions": {}}')$$,
  'PT400', 'conditions.event_type is required', 'a draft is checked like ops_set_trigger_rule');

select * from finish();
rollback;
