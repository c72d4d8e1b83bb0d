-- The trigger checkers' newest-event lookups (20261203007300): read through a fast-start cursor over the
-- (type, created_at, id) index, they still pick the newest matching event in the window, ties on created_at
-- broken by the highest id, filters applied, nothing outside the window.
begin;
select plan(9);

select is(pg_catalog.pg_get_indexdef('public.ops_agent_events_type_created_idx'::regclass),
  'CREATE INDEX ops_agent_events_type_created_idx ON public.ops_agent_events USING btree (type, created_at, id)',
  'events by type are indexed in the checkers'' order');

create function pg_temp.check(rule_name text) returns jsonb language sql as $$
  select ops_internal.check_trigger(r) from public.ops_trigger_rules r where r.name = rule_name
$$;
create function pg_temp.event_id(title text) returns bigint language sql as $$
  select e.id from public.ops_agent_events e where e.title = event_id.title
$$;

-- Threshold (the seed's tweet_high_engagement: tweet:metrics, engagement_rate > 0.05, 60 minutes).
select is(pg_temp.check('tweet_high_engagement'), null, 'no event, no firing');
insert into public.ops_agent_events (type, agent_id, title, payload, created_at)
values ('tweet:metrics', 'twitter-alt', 'old high', '{"engagement_rate": 0.5}', now() - interval '2 hours');
select is(pg_temp.check('tweet_high_engagement'), null, 'an event before the window is not considered');
-- One statement, one created_at: the highest id among the matching ones wins.
insert into public.ops_agent_events (type, agent_id, title, payload)
values ('tweet:metrics', 'twitter-alt', 'high 1', '{"engagement_rate": 0.09}'),
       ('tweet:metrics', 'twitter-alt', 'high 2', '{"engagement_rate": 0.08}'),
       ('tweet:metrics', 'twitter-alt', 'low', '{"engagement_rate": 0.02}'),
       ('tweet:metrics', 'twitter-alt', 'not a number', '{"engagement_rate": "0.9"}'),
       ('tweet:posted', 'twitter-alt', 'other type', '{"engagement_rate": 0.9}');
select is(pg_temp.check('tweet_high_engagement') ->> 'dedupe_key',
  'trigger:' || (select id from public.ops_trigger_rules where name = 'tweet_high_engagement') || ':threshold:' || pg_temp.event_id('high 2'),
  'threshold: the newest matching event, ties broken by id');
select is(pg_temp.check('tweet_high_engagement') -> 'vars' -> 'value', '0.08'::jsonb, 'with its value');

-- Event (the seed's content_published: content:published, 120 minutes), then with an agent and tags.
insert into public.ops_agent_events (type, agent_id, tags, title)
values ('content:published', 'writer', array['content:published', 'content', 'published', 'blog'], 'by writer'),
       ('content:published', 'editor', array['content:published', 'content', 'published'], 'by editor'),
       ('content:published', 'writer', array['content:published', 'content', 'published'], 'by writer again');
select is(pg_temp.check('content_published') ->> 'dedupe_key',
  'trigger:' || (select id from public.ops_trigger_rules where name = 'content_published') || ':event:' || pg_temp.event_id('by writer again'),
  'event: the newest event of the type');
select is(pg_temp.check('content_published') -> 'vars' -> 'event' ->> 'title', 'by writer again', 'the event is the template''s');
update public.ops_trigger_rules set conditions = conditions || '{"agent_id": "editor"}' where name = 'content_published';
select is(pg_temp.check('content_published') -> 'vars' -> 'event' ->> 'title', 'by editor', 'an agent condition filters');
update public.ops_trigger_rules set conditions = conditions - 'agent_id' || '{"tags": ["blog"]}' where name = 'content_published';
select is(pg_temp.check('content_published') -> 'vars' -> 'event' ->> 'title', 'by writer', 'a tags condition filters');

select * from finish();
rollback;
