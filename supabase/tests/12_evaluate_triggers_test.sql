-- ops_evaluate_triggers: the built-in checkers, cooldowns, dedupe per window/event, templates, custom rules.
begin;
select plan(21);

select is(ops_internal.render_template('{"a": "Mission #{{event.mission_id}} by {{event.agent_id}}", "b": "{{event.mission_id}}", "c": ["{{missing}}x", 3]}',
  '{"event": {"mission_id": 7, "agent_id": "brain"}}'),
  '{"a": "Mission #7 by brain", "b": 7, "c": ["x", 3]}'::jsonb, 'placeholders fill strings; a lone placeholder keeps its type');

-- Event rule: the seed's mission_failed -> diagnose.
update public.ops_trigger_rules set enabled = true where name = 'mission_failed';
select is(public.ops_evaluate_triggers() - 'errors' - 'deferred', '{"evaluated": 1, "fired": 0, "skipped": 0}'::jsonb, 'no failed mission, no firing');
select public.ops_create_proposal('{"agent_id": "growth", "title": "doomed", "steps": [{"kind": "crawl"}]}');
select public.ops_fail_step((public.ops_claim_next_step('w', array['crawl']) -> 0 ->> 'id')::bigint, 1, 'HTTP 500', false);
update public.ops_trigger_rules set last_evaluated_at = null where name = 'mission_failed';
select is(public.ops_evaluate_triggers() ->> 'fired', '1', 'a failed mission fires the rule');
select results_eq($$select agent_id, title, source, status, proposed_steps -> 0 -> 'payload' ->> 'reason'
                     from public.ops_mission_proposals where source = 'trigger'$$,
  $$select 'brain', 'Diagnose failed mission #' || (select max(id) from public.ops_missions where status = 'failed'), 'trigger', 'accepted',
           'step 0 (crawl) failed: HTTP 500'$$,
  'the template is filled from the event and goes through the proposal service');
select results_eq($$select fire_count, last_fired_at = now(), next_due_at = now() + interval '60 minutes' from public.ops_trigger_rules where name = 'mission_failed'$$,
  $$values (1, true, true)$$, 'fire_count, last_fired_at and the cooldown are recorded');
select is((select count(*)::int from public.ops_agent_events where type = 'trigger:fired'), 1, 'trigger:fired is emitted');
select is(public.ops_evaluate_triggers() ->> 'evaluated', '0', 'in cooldown the rule is not even checked');
update public.ops_trigger_rules set next_due_at = now() - interval '1 second', last_evaluated_at = null where name = 'mission_failed';
select is(public.ops_evaluate_triggers() ->> 'fired', '0', 'the same event never fires twice (dedupe per event)');

-- Schedule rule: rotating topics, skip probability, jitter.
update public.ops_trigger_rules set enabled = false;
update public.ops_trigger_rules set enabled = true, jitter_minutes = 30 where name = 'proactive_scan_signals';
update public.ops_trigger_rules set skip_probability = 0 where name = 'proactive_scan_signals';
select is(public.ops_evaluate_triggers() ->> 'fired', '1', 'a schedule fires when due');
select is((select title from public.ops_mission_proposals where title like 'Scan signals:%' order by id desc limit 1),
  'Scan signals: competitor launches', 'with the first topic');
select ok((select next_due_at between now() + interval '180 minutes' and now() + interval '210 minutes'
             from public.ops_trigger_rules where name = 'proactive_scan_signals'), 'next due after cooldown plus jitter');
update public.ops_trigger_rules set next_due_at = now() - interval '1 second' where name = 'proactive_scan_signals';
select public.ops_evaluate_triggers();
select is((select title from public.ops_mission_proposals where title like 'Scan signals:%' order by id desc limit 1),
  'Scan signals: community questions', 'topics rotate');
update public.ops_trigger_rules set next_due_at = now() - interval '1 second', skip_probability = 1 where name = 'proactive_scan_signals';
select is(public.ops_evaluate_triggers() - 'errors' - 'deferred', '{"evaluated": 1, "fired": 0, "skipped": 1}'::jsonb,
  'skip_probability 1 always skips ("not feeling like it")');

-- Threshold and absence.
update public.ops_trigger_rules set enabled = false;
update public.ops_trigger_rules set enabled = true where name = 'tweet_high_engagement';
select public.ops_emit_event('{"type": "tweet:metrics", "agent_id": "twitter-alt", "payload": {"tweet_id": "t-1", "engagement_rate": 0.02}}');
select is(public.ops_evaluate_triggers() ->> 'fired', '0', 'below the threshold');
select public.ops_emit_event('{"type": "tweet:metrics", "agent_id": "twitter-alt", "payload": {"tweet_id": "t-2", "engagement_rate": 0.09}}');
select is(public.ops_evaluate_triggers() ->> 'fired', '1', 'crossing it fires');
select is((select proposed_steps -> 0 -> 'payload' -> 'engagement_rate' from public.ops_mission_proposals order by id desc limit 1),
  '0.09'::jsonb, 'the crossing value is available to the template');

insert into public.ops_trigger_rules (name, trigger_event, conditions, action_config, cooldown_minutes, enabled)
values ('quiet', 'absence', '{"event_type": "content:published", "lookback_minutes": 60}',
        '{"agent_id": "observer", "title": "Nothing published in an hour", "steps": [{"kind": "analyze"}]}', 60, true);
select is((select public.ops_evaluate_triggers() ->> 'fired')::int, 1, 'absence of an event fires');
update public.ops_trigger_rules set next_due_at = now() - interval '1 second' where name = 'quiet';
select public.ops_emit_event('{"type": "content:published", "agent_id": "writer"}');
select is((select public.ops_evaluate_triggers() ->> 'fired')::int, 0, 'an event within the lookback silences it');

-- Custom checker functions and broken rules.
create function public.ops_check_always(rule jsonb) returns jsonb language sql as $$
  select jsonb_build_object('agent_id', 'brain', 'title', 'custom for ' || (rule ->> 'name'), 'steps', '[{"kind": "analyze"}]'::jsonb) $$;
insert into public.ops_trigger_rules (name, trigger_event, conditions, enabled)
values ('custom one', 'custom', '{"function": "public.ops_check_always"}', true),
       ('broken', 'threshold', '{"event_type": "x:y"}', true);
create temp table run as select public.ops_evaluate_triggers() as r;
select is((select title from public.ops_mission_proposals order by id desc limit 1), 'custom for custom one',
  'a custom function returns the proposal template');
select is((select r -> 'errors' from run), '[{"rule": "broken", "error": "rule \"broken\" conditions.field is required"}]'::jsonb,
  'a broken rule is reported by name and does not stop the others');
select ok((select next_due_at > now() from public.ops_trigger_rules where name = 'broken'), 'and rests instead of failing every heartbeat');

select * from finish();
rollback;
