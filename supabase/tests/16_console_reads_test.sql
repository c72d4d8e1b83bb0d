-- The console's reads: every policy key, recent action runs, and a preview of the gates for a pending proposal.
begin;
select plan(12);

select is((select array_agg(x ->> 'key') from jsonb_array_elements(public.ops_list_policy()) x),
  (select array_agg(key order by key) from public.ops_policy), 'every policy key, in key order');
select is(public.ops_list_policy() -> 0 -> 'value', (select value from public.ops_policy order by key limit 1),
  'with its value');

select public.ops_heartbeat();
select public.ops_heartbeat();
insert into public.ops_action_runs (action, status, result, duration_ms, started_at, finished_at)
values ('backfill', 'succeeded', '{}', 1, now() - interval '1 hour', now() - interval '1 hour');
select is(jsonb_array_length(public.ops_list_action_runs('heartbeat')), 2, 'heartbeat runs only');
select is((public.ops_list_action_runs() -> 2 ->> 'action'), 'backfill', 'all runs, newest first');
select ok((public.ops_list_action_runs('heartbeat', 1) -> 0 -> 'result') ? 'recovery', 'each with its result');
select throws_ok($$select public.ops_list_action_runs(max_rows => 0)$$, 'PT400', 'max_rows must be from 1 to 1000',
  'row cap is checked');

-- post_tweet needs a human; its daily quota (8) is the gate a preview reports.
create temp table waiting as
  select (public.ops_create_proposal('{"agent_id": "twitter-alt", "title": "t", "steps": [{"kind": "post_tweet"}]}')
          ->> 'proposal_id')::bigint as id;
select is(public.ops_preview_gates((select id from waiting)),
  jsonb_build_object('proposal_id', (select id from waiting), 'status', 'pending', 'passes', true, 'reason', null),
  'a pending proposal within every gate passes');
select public.ops_set_policy('step_kind_gates', '{"post_tweet": {"daily_limit": 0}}', 'test');
select is(public.ops_preview_gates((select id from waiting)) ->> 'reason',
  'daily quota for post_tweet reached (0/0 used today, this proposal needs 1)', 'a gate that would refuse says why');
select is((select status from public.ops_mission_proposals where id = (select id from waiting)), 'pending',
  'a preview decides nothing');
select public.ops_reject_proposal((select id from waiting), 'no', 'test');
select is(public.ops_preview_gates((select id from waiting)) ->> 'passes', null, 'a decided proposal has no verdict');
select throws_ok($$select public.ops_preview_gates(999999)$$, 'PT404', 'proposal 999999 not found', 'unknown proposal');
select throws_ok($$select public.ops_preview_gates(null)$$, 'PT400', 'proposal_id is required', 'null id');

select * from finish();
rollback;
