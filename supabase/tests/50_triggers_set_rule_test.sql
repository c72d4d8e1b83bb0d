-- ops_set_trigger_rule: create and update by name from a JSON document, validated when written (PT400 naming
-- the field, nothing written), one event per change (trigger:created | trigger:updated, and trigger:enabled |
-- trigger:disabled when the switch moves), nothing written for the same document again.
begin;
select plan(45);

create temp table rule_docs(label text primary key, doc jsonb) on commit drop;
insert into rule_docs values
  ('event', '{"name": "failed-missions", "trigger_event": "event",
              "conditions": {"event_type": "mission:failed", "lookback_minutes": 30},
              "action_config": {"agent_id": "brain", "title": "Diagnose mission #{{event.mission_id}}",
                                "steps": [{"kind": "analyze", "payload": {"reason": "{{event.payload.reason}}"}}]}}');

create function pg_temp.events_of(wanted text) returns bigint language sql as $$
  select count(*) from public.ops_agent_events where type = wanted
$$;
create function pg_temp.refused(doc jsonb) returns text language plpgsql as $$
begin
  perform public.ops_set_trigger_rule(doc, 'tester');
  return 'accepted';
exception when sqlstate 'PT400' then
  return sqlerrm;
end;
$$;
create function pg_temp.with_(label text, patch jsonb) returns jsonb language sql as $$
  select doc || patch from rule_docs where rule_docs.label = with_.label
$$;

-- Creating.
select is(public.ops_set_trigger_rule((select doc from rule_docs where label = 'event'), 'ada') - 'rule',
  '{"action": "created", "changed": ["name", "trigger_event", "conditions", "action_config", "cooldown_minutes",
    "skip_probability", "jitter_minutes", "enabled"]}'::jsonb, 'a new name creates the rule');
select results_eq($$select trigger_event, conditions, cooldown_minutes, skip_probability, jitter_minutes, enabled, fire_count
                     from public.ops_trigger_rules where name = 'failed-missions'$$,
  $$values ('event', '{"event_type": "mission:failed", "lookback_minutes": 30}'::jsonb, 60, 0::real, 0, false, 0)$$,
  'stored with the defaults: cooldown 60, no jitter, and disabled (new autonomy starts off)');
select results_eq($$select agent_id, title, payload ->> 'updated_by', payload -> 'value' ->> 'name', tags
                     from public.ops_agent_events where type = 'trigger:created'$$,
  $$values ('system', 'Trigger rule failed-missions created by ada', 'ada', 'failed-missions',
            array['trigger:created', 'trigger', 'created', 'event'])$$,
  'trigger:created names the rule and who wrote it, with the whole document');
select is(pg_temp.events_of('trigger:enabled'), 0::bigint, 'a disabled rule is not announced as enabled');

-- The same document again: nothing written.
create temp table before_repeat as select updated_at from public.ops_trigger_rules where name = 'failed-missions';
select is(public.ops_set_trigger_rule((select doc from rule_docs where label = 'event'), 'ada') - 'rule',
  '{"action": "unchanged", "changed": []}'::jsonb, 'the same document again changes nothing');
select is(pg_temp.events_of('trigger:updated') + pg_temp.events_of('trigger:created'), 1::bigint, '... and writes no event');

-- Updating.
select is(public.ops_set_trigger_rule(pg_temp.with_('event', '{"cooldown_minutes": 15, "jitter_minutes": 2}'), 'bob') - 'rule',
  '{"action": "updated", "changed": ["cooldown_minutes", "jitter_minutes"]}'::jsonb, 'an update lists what changed');
select results_eq($$select payload -> 'changed', payload -> 'previous', payload -> 'value', title
                     from public.ops_agent_events where type = 'trigger:updated'$$,
  $$values ('["cooldown_minutes", "jitter_minutes"]'::jsonb, '{"cooldown_minutes": 60, "jitter_minutes": 0}'::jsonb,
            '{"cooldown_minutes": 15, "jitter_minutes": 2}'::jsonb,
            'Trigger rule failed-missions updated by bob: cooldown_minutes, jitter_minutes')$$,
  'trigger:updated carries the changed fields, before and after');
select is(public.ops_set_trigger_rule(pg_temp.with_('event', '{"cooldown_minutes": 15, "jitter_minutes": 2, "enabled": true}'), 'bob') - 'rule',
  '{"action": "enabled", "changed": ["enabled"]}'::jsonb, 'switching on through the document');
select is(pg_temp.events_of('trigger:enabled'), 1::bigint, 'writes trigger:enabled');
select is(public.ops_set_trigger_rule(pg_temp.with_('event', '{"cooldown_minutes": 20, "jitter_minutes": 2}'), 'bob') ->> 'action',
  'updated', 'a document without enabled keeps the switch');
select is((select enabled from public.ops_trigger_rules where name = 'failed-missions'), true, '... on');
select is(public.ops_set_trigger_rule(pg_temp.with_('event', '{"cooldown_minutes": 5, "enabled": false}'), 'bob') - 'rule',
  '{"action": "updated", "changed": ["cooldown_minutes", "jitter_minutes", "enabled"]}'::jsonb,
  'an update that also switches off');
select is(pg_temp.events_of('trigger:disabled'), 1::bigint, '... writes trigger:disabled besides trigger:updated');
select is(pg_temp.events_of('trigger:updated'), 3::bigint, 'one trigger:updated per changing write');

-- Fire bookkeeping is the heartbeat's: a write never touches it.
update public.ops_trigger_rules set fire_count = 7, last_fired_at = now() - interval '1 hour',
  next_due_at = now() + interval '1 hour' where name = 'failed-missions';
select public.ops_set_trigger_rule(pg_temp.with_('event', '{"cooldown_minutes": 9}'), 'bob');
select results_eq($$select fire_count, last_fired_at = now() - interval '1 hour', next_due_at = now() + interval '1 hour'
                     from public.ops_trigger_rules where name = 'failed-missions'$$,
  $$values (7, true, true)$$, 'fire_count, last_fired_at and next_due_at are kept');

-- Every seed rule is valid as it is: each round-trips unchanged.
select is(array(select r.name from public.ops_trigger_rules r
                 where public.ops_set_trigger_rule(ops_internal.trigger_definition(r), 'seed') ->> 'action' <> 'unchanged'),
  '{}'::text[], 'the seed''s 8 rules pass the validation unchanged');

-- Refused, naming the field.
select is(pg_temp.refused(null), 'rule must be a JSON object', 'no document');
select is(pg_temp.refused('[]'), 'rule must be a JSON object', 'not an object');
select is(pg_temp.refused(pg_temp.with_('event', '{"colour": "red"}')),
  'colour is not a known field (expected one of: name, trigger_event, conditions, action_config, cooldown_minutes, skip_probability, jitter_minutes, enabled)',
  'unknown fields');
select is(pg_temp.refused(pg_temp.with_('event', '{"name": "Failed Missions"}')),
  'name must match ^[a-z0-9][a-z0-9_.:-]{0,119}$', 'a new name must match the pattern');
select is(pg_temp.refused(pg_temp.with_('event', '{"trigger_event": "cron"}')),
  'trigger_event must match ^(event|schedule|threshold|absence|custom)$', 'the checkers');
select is(pg_temp.refused(pg_temp.with_('event', '{"conditions": {"event_type": "Mission Failed"}}')),
  'conditions.event_type must match ^[a-z][a-z0-9_]{0,63}:[a-z][a-z0-9_]{0,63}$', 'event: the event type');
select is(pg_temp.refused(pg_temp.with_('event', '{"conditions": {"event_type": "a:b", "lookback": 5}}')),
  'conditions.lookback is not a known field (expected one of: event_type, tags, agent_id, lookback_minutes)',
  'event: unknown condition keys');
select is(pg_temp.refused(pg_temp.with_('event', '{"conditions": {"event_type": "a:b", "tags": "x"}}')),
  'conditions.tags must be an array of strings', 'event: tags');
select is(pg_temp.refused(pg_temp.with_('event', '{"trigger_event": "threshold", "conditions": {"event_type": "a:b", "field": "x", "op": "=", "value": 1}}')),
  'conditions.op must match ^(>|>=|<|<=)$', 'threshold: the operator');
select is(pg_temp.refused(pg_temp.with_('event', '{"trigger_event": "absence", "conditions": {"event_type": "a:b"}}')),
  'conditions.lookback_minutes is required', 'absence: the lookback');
select is(pg_temp.refused(pg_temp.with_('event', '{"conditions": {"event_type": "a:b", "lookback_minutes": 0}}')),
  'conditions.lookback_minutes must be from 1 to 525600', 'lookbacks are bounded');
select is(pg_temp.refused(pg_temp.with_('event', '{"action_config": {"agent_id": "brain", "title": "t", "steps": [{"kind": "Bad Kind"}]}}')),
  'action_config.steps[0].kind must match ^[a-z][a-z0-9_]{0,63}$', 'the template is validated as a proposal: step kinds');
select is(pg_temp.refused(pg_temp.with_('event', '{"action_config": {"title": "t", "steps": [{"kind": "analyze"}]}}')),
  'action_config.agent_id is required', '... the agent');
select is(pg_temp.refused(pg_temp.with_('event', '{"action_config": {"agent_id": "brain", "title": "t", "steps": []}}')),
  'action_config.steps must hold 1 to 50 steps', '... the steps');
select is(pg_temp.refused(pg_temp.with_('event', '{"action_config": {"agent_id": "brain", "title": "t", "steps": [{"kind": "analyze"}], "source": "human"}}')),
  'action_config.source is not a known field (expected one of: agent_id, title, steps, description, metadata)',
  '... and what the heartbeat sets itself (source, dedupe_key) is not the template''s');
select is(pg_temp.refused(pg_temp.with_('event', '{"action_config": {"agent_id": "brain", "title": "{{evnt.id}}", "steps": [{"kind": "analyze"}]}}')),
  'action_config uses {{evnt.id}}, which event rules do not provide (they provide: {{event}}, {{now}}, {{rule}})',
  'placeholders must be ones the checker provides');
select is(pg_temp.refused(pg_temp.with_('event', '{"action_config": {"agent_id": "brain", "title": "{{event.mision_id}}", "steps": [{"kind": "analyze"}]}}')),
  'action_config uses {{event.mision_id}}, but event has no field "mision_id" (it has: agent_id, created_at, id, mission_id, payload, proposal_id, source, step_id, summary, tags, title, type)',
  '... and fields an event has');
select is(pg_temp.refused('{"name": "topics", "trigger_event": "schedule", "conditions": {"topics": ["crawl", "Not A Kind"]},
                            "action_config": {"agent_id": "brain", "title": "t", "steps": [{"kind": "{{topic}}"}]}}'),
  'action_config.steps[0].kind must match ^[a-z][a-z0-9_]{0,63}$ (with conditions.topics[1])',
  'a schedule''s template is checked with every topic');
select is(pg_temp.refused(pg_temp.with_('event', '{"trigger_event": "schedule", "conditions": {}, "cooldown_minutes": 0}')),
  'cooldown_minutes must be from 1 to 525600 for schedule rules (each firing is a new window: 0 would propose at every heartbeat)',
  'a time-window rule needs a cooldown');
select is(pg_temp.refused(pg_temp.with_('event', '{"skip_probability": 0.5}')),
  'skip_probability must be 0 for event rules: only schedule rules skip', 'skip_probability is for schedules');
select is(pg_temp.refused(pg_temp.with_('event', '{"jitter_minutes": -1}')),
  'jitter_minutes must be from 0 to 525600', 'jitter is bounded');
select is(pg_temp.refused(pg_temp.with_('event', '{"enabled": "yes"}')), 'enabled must be true or false', 'enabled');
select is(pg_temp.refused(pg_temp.with_('event', jsonb_build_object('action_config', jsonb_build_object('agent_id', 'brain',
    'title', 't', 'steps', jsonb_build_array(jsonb_build_object('kind', 'analyze', 'payload', jsonb_build_object('x', repeat('x', 70000)))))))),
  'rule must be at most 65536 bytes of JSON', 'a rule is at most 64 KiB of JSON');
select is(pg_temp.refused(pg_temp.with_('event', jsonb_build_object('conditions',
    (repeat('{"a": ', 70) || '1' || repeat('}', 70))::jsonb))),
  'rule.conditions.a.a must not nest arrays and objects more than 64 levels deep', 'and nested at most 64 levels');

-- Custom checkers: a function of your own, f(jsonb) returning jsonb, that service_role may execute.
create schema trigger_fns;
create function trigger_fns.propose(rule jsonb) returns jsonb language sql as $$ select null::jsonb $$;
create function trigger_fns.wrong_type(rule jsonb) returns text language sql as $$ select 'x' $$;
revoke all on function trigger_fns.propose(jsonb) from public, service_role;
select is(pg_temp.refused('{"name": "own", "trigger_event": "custom", "conditions": {"function": "trigger_fns.propose"}}'),
  'conditions.function must be a function service_role may execute (grant execute on function trigger_fns.propose(jsonb) to service_role)',
  'custom: the caller must be allowed to run the function the heartbeat will run as the owner');
grant execute on function trigger_fns.propose(jsonb) to service_role;
select is(pg_temp.refused('{"name": "own", "trigger_event": "custom", "conditions": {"function": "trigger_fns.propose", "limit": 3}}'),
  'accepted', 'custom: then it is accepted, with parameters of its own in conditions and no template');
select is(pg_temp.refused('{"name": "own", "trigger_event": "custom", "conditions": {"function": "public.ops_create_proposal"}}'),
  'conditions.function must be a function of your own, not one of PostgreSQL''s or agent-ops''s (public.ops_create_proposal)',
  'custom: never one of agent-ops''s own functions');
select is(pg_temp.refused('{"name": "own", "trigger_event": "custom", "conditions": {"function": "trigger_fns.wrong_type"}}'),
  'conditions.function must name a function trigger_fns.wrong_type(jsonb) returning jsonb', 'custom: returning jsonb');

select * from finish();
rollback;
