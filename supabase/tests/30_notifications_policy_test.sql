-- Policy `notifications`: the validator's messages, no URL in policy, the resolved sinks and the cursors
-- that follow them.
begin;
select plan(26);

select ok('notifications' = any (ops_internal.policy_keys()), 'notifications is a known policy key');

select lives_ok($$select public.ops_set_policy('notifications', '{"enabled": true, "max_attempts": 8, "retain_days": 7,
  "sinks": [{"name": "ops-slack", "url_env": "SLACK_WEBHOOK_URL", "format": "slack", "per_minute": 20},
            {"name": "pager", "url_env": "PAGER_URL", "types": ["mission:failed", "proposal:pending"], "tags": ["warning"]},
            {"name": "muted", "url_env": "MUTED_URL", "format": "discord", "enabled": false}]}', 'test')$$,
  'a policy with a Slack, a JSON and a muted Discord sink is valid');

-- Refusals name the field and the rule.
select throws_ok($$select public.ops_set_policy('notifications', '{"enabled": true}', 'test')$$, 'PT400',
  'value.sinks is required (an array of sinks, [] for none)', 'sinks are required');
select throws_ok($$select public.ops_set_policy('notifications', '{"enabled": true, "sinks": {}}', 'test')$$, 'PT400',
  'value.sinks must be an array of sinks {name, url_env, format?, types?, tags?, per_minute?, enabled?}',
  'sinks are an array');
select throws_ok($$select public.ops_set_policy('notifications', '{"sinks": []}', 'test')$$, 'PT400',
  'value.enabled is required', 'enabled is required');
select throws_ok($$select public.ops_set_policy('notifications',
  '{"enabled": true, "sinks": [{"name": "s", "url_env": "S", "url": "https://hooks.slack.com/services/T/B/secret"}]}', 'test')$$,
  'PT400', 'value.sinks[0].url is not allowed: a webhook URL is a secret and policy is not; put the URL in an '
  'environment variable of the deliverer and name that variable in value.sinks[0].url_env',
  'a URL in policy is refused, pointing to url_env');
select throws_ok($$select public.ops_set_policy('notifications',
  '{"enabled": true, "sinks": [{"name": "s", "url_env": "https://hooks.slack.com/services/T/B/secret"}]}', 'test')$$,
  'PT400', 'value.sinks[0].url_env must match ^[A-Za-z_][A-Za-z0-9_]{0,127}$',
  'url_env names a variable, never holds the URL (and the message does not repeat it)');
select throws_ok($$select public.ops_set_policy('notifications', '{"enabled": true, "sinks": [{"name": "s"}]}', 'test')$$,
  'PT400', 'value.sinks[0].url_env is required', 'url_env is required');
select throws_ok($$select public.ops_set_policy('notifications',
  '{"enabled": true, "sinks": [{"name": "s", "url_env": "S", "format": "teams"}]}', 'test')$$,
  'PT400', 'value.sinks[0].format must match ^(slack|discord|json)$', 'formats are slack, discord or json');
select throws_ok($$select public.ops_set_policy('notifications',
  '{"enabled": true, "sinks": [{"name": "s", "url_env": "S"}, {"name": "s", "url_env": "T"}]}', 'test')$$,
  'PT400', 'value.sinks[1].name must be unique (s repeats)', 'sink names are unique');
select throws_ok($$select public.ops_set_policy('notifications',
  '{"enabled": true, "sinks": [{"name": "s", "url_env": "S", "types": ["Mission failed"]}]}', 'test')$$,
  'PT400', 'value.sinks[0].types[0] must match ^[a-z][a-z0-9_]{0,63}:[a-z][a-z0-9_]{0,63}$', 'types are event types');
select throws_ok($$select public.ops_set_policy('notifications',
  '{"enabled": true, "sinks": [{"name": "s", "url_env": "S", "tags": []}]}', 'test')$$,
  'PT400', 'value.sinks[0].tags must hold 1 to 50 items', 'an empty tag list is a mistake, not "nothing"');
select throws_ok($$select public.ops_set_policy('notifications',
  '{"enabled": true, "sinks": [{"name": "s", "url_env": "S", "per_minute": 0}]}', 'test')$$,
  'PT400', 'value.sinks[0].per_minute must be from 1 to 10000', 'per_minute is at least 1');
select throws_ok($$select public.ops_set_policy('notifications', '{"enabled": true, "sinks": [], "max_attempts": 0}', 'test')$$,
  'PT400', 'value.max_attempts must be from 1 to 100', 'max_attempts is 1..100');
select throws_ok($$select public.ops_set_policy('notifications',
  '{"enabled": true, "sinks": [{"name": "s", "url_env": "S", "channel": "#ops"}]}', 'test')$$,
  'PT400', 'value.sinks[0].channel is not a known field (expected one of: name, url_env, format, types, tags, per_minute, enabled)',
  'unknown sink fields are refused');
select throws_ok(format($$select public.ops_set_policy('notifications', %L, 'test')$$,
  jsonb_build_object('enabled', true, 'sinks',
    (select jsonb_agg(jsonb_build_object('name', 's' || g, 'url_env', 'S')) from generate_series(1, 21) g))),
  'PT400', 'value.sinks must hold 0 to 20 sinks', 'at most 20 sinks');

-- The sinks as enqueue and claim see them.
select results_eq($$select name, format, url_env, types, tags, per_minute
                      from ops_internal.notification_sinks(ops_internal.policy('notifications'))$$,
  $$values ('ops-slack', 'slack', 'SLACK_WEBHOOK_URL',
            array['proposal:pending', 'worker:circuit_open', 'queue:stalled', 'heartbeat:failed', 'mission:failed'],
            '{}'::text[], 20),
           ('pager', 'json', 'PAGER_URL', array['mission:failed', 'proposal:pending'], array['warning'], null::integer)$$,
  'a sink with neither types nor tags gets the defaults; a muted sink is left out; json is the default format');
select results_eq($$select types, tags from ops_internal.notification_sinks(
                      '{"enabled": true, "sinks": [{"name": "t", "url_env": "T", "tags": ["warning"]}]}')$$,
  $$values ('{}'::text[], array['warning'])$$, 'a sink with tags only wants those tags and no default types');

-- Cursors: each receiving sink starts at the newest event, never the history.
select ops_internal.emit_event('test:before', 'system', 'before');
create temp table newest as select max(id) as id from public.ops_agent_events;
select public.ops_set_policy('notifications', '{"enabled": true, "sinks": [{"name": "a", "url_env": "A"}, {"name": "b", "url_env": "B"}]}', 'test');
select results_eq($$select sink, last_event_id from public.ops_notification_cursors order by sink$$,
  $$select s, (select id from newest) from unnest(array['a', 'b']) s$$, 'new sinks start at the newest event');
update public.ops_notification_cursors set last_event_id = 1 where sink = 'a';
select ops_internal.emit_event('test:later', 'system', 'later');
select public.ops_set_policy('notifications', '{"enabled": true, "sinks": [{"name": "a", "url_env": "A2"}, {"name": "c", "url_env": "C"}]}', 'test');
select results_eq($$select sink, last_event_id from public.ops_notification_cursors order by sink$$,
  $$values ('a', 1::bigint), ('c', (select max(id) from public.ops_agent_events where type <> 'policy:updated'))$$,
  'a sink that stays keeps its place, a removed one loses its cursor, an added one starts at the newest event');
select public.ops_set_policy('notifications', '{"enabled": true, "sinks": [{"name": "a", "url_env": "A", "enabled": false}, {"name": "c", "url_env": "C"}]}', 'test');
select is((select count(*)::int from public.ops_notification_cursors where sink = 'a'), 0, 'a muted sink has no cursor');
select ops_internal.emit_event('test:muted', 'system', 'while a was muted');
select public.ops_set_policy('notifications', '{"enabled": true, "sinks": [{"name": "a", "url_env": "A"}, {"name": "c", "url_env": "C"}]}', 'test');
select cmp_ok((select last_event_id from public.ops_notification_cursors where sink = 'a'), '>=',
  (select max(id) from public.ops_agent_events where type = 'test:muted'), 'unmuted, it starts after what happened meanwhile');
select public.ops_set_policy('notifications', '{"enabled": false, "sinks": [{"name": "a", "url_env": "A"}]}', 'test');
select is((select count(*)::int from public.ops_notification_cursors), 0, 'disabled: no sink receives, no cursor');
select is(ops_internal.enqueue_notifications() -> 'enqueued', '0'::jsonb, 'and nothing is enqueued');
update newest set id = (select max(id) from public.ops_agent_events);
select public.ops_set_policy('notifications', '{"enabled": true, "sinks": [{"name": "a", "url_env": "A"}]}', 'test');
select is((select last_event_id from public.ops_notification_cursors where sink = 'a'), (select id from newest),
  'enabled again, it starts afresh');
select is(
  (select count(*)::int from public.ops_agent_events
    where type = 'policy:updated' and payload::text ~ 'https?://'), 0,
  'no policy:updated event ever carried a URL');

select * from finish();
rollback;
