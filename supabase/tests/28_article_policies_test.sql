-- The articles' policy vocabulary: each key accepted as written and changing a gate's verdict.
begin;
select plan(16);

select public.ops_set_policy('auto_approve', '{"enabled": true, "allowed_step_kinds": ["post_tweet", "draft_tweet", "write_content", "crawl"]}', 't');
select public.ops_set_policy('step_kind_gates', '{}', 't');

-- Accepted as the articles write them.
select lives_ok($$select public.ops_set_policy('x_daily_quota', '{"limit": 8}', 't')$$, 'x_daily_quota {"limit": 8}');
select lives_ok($$select public.ops_set_policy('x_autopost', '{"enabled": false}', 't')$$, 'x_autopost {"enabled": false}');
select lives_ok($$select public.ops_set_policy('content_policy', '{"enabled": true, "max_drafts_per_day": 8}', 't')$$,
  'content_policy {"enabled": true, "max_drafts_per_day": 8}');
select lives_ok($$select public.ops_set_policy('worker_policy', '{"enabled": false}', 't')$$, 'worker_policy {"enabled": false}');
select throws_ok($$select public.ops_set_policy('worker_policy', '{"enabled": true}', 't')$$, 'PT400',
  'value.enabled must be false: the control plane never executes steps, workers do (max_running and per_minute are set per kind, in value.kinds.<kind>)',
  'worker_policy.enabled = true is refused: the control plane never executes');
select throws_ok($$select public.ops_set_policy('x_daily_quota', '{"limit": -1}', 't')$$, 'PT400',
  'value.limit must be from 0 to 1000000', 'x_daily_quota is checked');
select throws_ok($$select public.ops_set_policy('content_policy', '{"max_drafts_per_day": 8}', 't')$$, 'PT400',
  'value.enabled is required', 'content_policy needs enabled');

-- x_autopost.enabled = false refuses post_tweet; true lets it through.
select is(public.ops_create_proposal('{"agent_id": "x", "title": "post", "steps": [{"kind": "post_tweet"}]}') ->> 'reason',
  'x_autopost disabled (x_autopost.enabled = false): post_tweet steps are refused', 'x_autopost disabled refuses post_tweet');
select public.ops_set_policy('x_autopost', '{"enabled": true}', 't');
select is(ops_internal.gate_reason('x', array['post_tweet'], true, true), null, 'enabled, post_tweet passes');

-- x_daily_quota.limit is the post_tweet daily limit (the lower of it and step_kind_gates.post_tweet.daily_limit).
select public.ops_set_policy('x_daily_quota', '{"limit": 1}', 't');
select is(public.ops_create_proposal('{"agent_id": "x", "title": "one", "steps": [{"kind": "post_tweet"}]}') ->> 'status', 'accepted',
  'within x_daily_quota');
select is(ops_internal.gate_reason('x', array['post_tweet'], true, true),
  'daily quota for post_tweet reached (1/1 used today, this proposal needs 1)', 'x_daily_quota.limit is post_tweet''s daily limit');
select public.ops_set_policy('x_daily_quota', '{"limit": 5}', 't');
select public.ops_set_policy('step_kind_gates', '{"post_tweet": {"daily_limit": 1}}', 't');
select is(ops_internal.gate_reason('x', array['post_tweet'], true, true),
  'daily quota for post_tweet reached (1/1 used today, this proposal needs 1)', 'the lower of the two limits holds');

-- content_policy: enabled = false refuses content kinds; max_drafts_per_day counts them all together.
select public.ops_set_policy('content_policy', '{"enabled": false}', 't');
select is(ops_internal.gate_reason('x', array['crawl', 'draft_tweet'], true, true),
  'content_policy disabled (content_policy.enabled = false): step kind draft_tweet is content', 'content off refuses drafts');
select is(ops_internal.gate_reason('x', array['crawl'], true, true), null, 'other kinds pass');
select public.ops_set_policy('content_policy', '{"enabled": true, "max_drafts_per_day": 2}', 't');
select is(public.ops_create_proposal('{"agent_id": "x", "title": "d", "steps": [{"kind": "draft_tweet"}, {"kind": "write_content"}]}') ->> 'status',
  'accepted', 'two content steps fit');
select is(ops_internal.gate_reason('x', array['write_content'], true, true),
  'content_policy.max_drafts_per_day reached (2/2 content steps today, this proposal needs 1)', 'a third is refused');

select * from finish();
rollback;
