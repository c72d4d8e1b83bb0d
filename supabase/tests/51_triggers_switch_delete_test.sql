-- ops_set_trigger_enabled and ops_delete_trigger_rule: trigger:enabled | trigger:disabled | trigger:deleted,
-- harmless repeats, PT404 for unknown names, and a rule written by hand is checked before it may go live.
begin;
select plan(20);

create function pg_temp.events_of(wanted text) returns bigint language sql as $$
  select count(*) from public.ops_agent_events where type = wanted
$$;

-- Switching.
select is(public.ops_set_trigger_enabled('mission_failed', true, 'ada') - 'rule',
  '{"action": "enabled", "changed": ["enabled"]}'::jsonb, 'a seed rule is switched on');
select is((select enabled from public.ops_trigger_rules where name = 'mission_failed'), true, 'and is on');
select results_eq($$select title, payload ->> 'rule', payload ->> 'updated_by', payload -> 'enabled', tags
                     from public.ops_agent_events where type = 'trigger:enabled'$$,
  $$values ('Trigger rule mission_failed enabled by ada', 'mission_failed', 'ada', 'true'::jsonb,
            array['trigger:enabled', 'trigger', 'enabled', 'event'])$$,
  'trigger:enabled names the rule and who switched it');
select is(public.ops_set_trigger_enabled('mission_failed', true, 'ada') - 'rule',
  '{"action": "unchanged", "changed": []}'::jsonb, 'switching on again changes nothing');
select is(pg_temp.events_of('trigger:enabled'), 1::bigint, '... and writes no event');
select is(public.ops_set_trigger_enabled('mission_failed', false, 'bob') ->> 'action', 'disabled', 'switched off');
select is(pg_temp.events_of('trigger:disabled'), 1::bigint, 'trigger:disabled');
select is((public.ops_set_trigger_enabled('mission_failed', true, 'ada') -> 'rule' ->> 'next_due_at')::timestamptz, now(),
  'an enabled rule with no cooldown running is due now');

-- A rule written by hand that the API would refuse cannot be switched on until fixed.
insert into public.ops_trigger_rules (name, trigger_event, conditions, action_config)
values ('hand written', 'threshold', '{"event_type": "x:y"}', '{"agent_id": "brain", "title": "t", "steps": [{"kind": "analyze"}]}');
select throws_ok($$select public.ops_set_trigger_enabled('hand written', true, 'ada')$$, 'PT400',
  'trigger rule "hand written" cannot be enabled until it is fixed (ops_set_trigger_rule): conditions.field is required',
  'enabling checks the rule first');
select is((select enabled from public.ops_trigger_rules where name = 'hand written'), false, '... and leaves it off');
select is(public.ops_set_trigger_rule('{"name": "hand written", "trigger_event": "threshold",
    "conditions": {"event_type": "x:y", "field": "n", "op": ">", "value": 1},
    "action_config": {"agent_id": "brain", "title": "t", "steps": [{"kind": "analyze"}]}}', 'ada') ->> 'action', 'updated',
  'fixed through the API: its name, written before the pattern, is kept');
select is(public.ops_set_trigger_enabled('hand written', true, 'ada') ->> 'action', 'enabled', 'then it may go live');
select is(public.ops_set_trigger_enabled('hand written', false, 'ada') ->> 'action', 'disabled',
  'switching off never needs a valid rule');

-- Refusals.
select throws_ok($$select public.ops_set_trigger_enabled('nope', true, 'ada')$$, 'PT404', 'trigger rule "nope" not found',
  'an unknown rule is not found');
select throws_ok($$select public.ops_set_trigger_enabled('mission_failed', null, 'ada')$$, 'PT400',
  'enabled is required (true or false)', 'enabled is required');
select throws_ok($$select public.ops_set_trigger_enabled(null, true, 'ada')$$, 'PT400', 'name is required', 'name is required');
select throws_ok($$select public.ops_set_trigger_enabled('mission_failed', false, ' ')$$, 'PT400',
  'updated_by must be 1 to 200 characters', 'so is who');

-- Deleting.
select is(public.ops_delete_trigger_rule('mission_failed', 'ada') #>> '{rule,name}', 'mission_failed',
  'a deletion answers with the rule as it was');
select results_eq($$select (select count(*)::int from public.ops_trigger_rules where name = 'mission_failed'),
                           (select payload -> 'value' ->> 'trigger_event' from public.ops_agent_events where type = 'trigger:deleted'),
                           (select title from public.ops_agent_events where type = 'trigger:deleted')$$,
  $$values (0, 'event', 'Trigger rule mission_failed deleted by ada')$$,
  'the row is gone and trigger:deleted keeps its whole definition');
select throws_ok($$select public.ops_delete_trigger_rule('mission_failed', 'ada')$$, 'PT404',
  'trigger rule "mission_failed" not found', 'deleting twice: not found');

select * from finish();
rollback;
