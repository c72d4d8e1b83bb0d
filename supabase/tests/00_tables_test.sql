-- The data model: tables, key columns, status vocabularies and indexes for the hot paths.
begin;
select plan(47);

select tables_are('public', array[
  'ops_mission_proposals', 'ops_missions', 'ops_mission_steps', 'ops_agent_events',
  'ops_policy', 'ops_agent_reactions', 'ops_trigger_rules', 'ops_action_runs', 'ops_workers',
  'ops_kind_breakers', 'ops_queue_stalls', 'ops_notifications', 'ops_notification_cursors',
  'ops_metrics_minutely', 'ops_metrics_system_minutely', 'ops_metrics_totals', 'ops_metrics_state',
  'ops_kind_claims', 'ops_spend_daily', 'ops_gate_counters'
], 'public holds exactly the ops tables');

select has_pk('public', t, t || ' has a primary key')
  from unnest(array['ops_mission_proposals', 'ops_missions', 'ops_mission_steps', 'ops_agent_events',
                    'ops_policy', 'ops_agent_reactions', 'ops_trigger_rules', 'ops_action_runs']) t;

select col_type_is('public', 'ops_mission_proposals', 'proposed_steps', 'jsonb', 'proposals keep their steps as jsonb');
select col_is_unique('public', 'ops_mission_proposals', array['dedupe_key'], 'dedupe_key is unique');
select col_is_unique('public', 'ops_missions', array['proposal_id'], 'one mission per proposal');
select fk_ok('public', 'ops_missions', 'proposal_id', 'public', 'ops_mission_proposals', 'id');
select fk_ok('public', 'ops_mission_steps', 'mission_id', 'public', 'ops_missions', 'id');
select fk_ok('public', 'ops_agent_reactions', 'event_id', 'public', 'ops_agent_events', 'id');
select col_type_is('public', 'ops_agent_events', 'tags', 'text[]', 'event tags are text[]');
select col_type_is('public', 'ops_mission_steps', 'depends_on', 'integer[]', 'steps depend on positions');
select columns_are('public', 'ops_mission_steps', array[
  'id', 'mission_id', 'position', 'kind', 'payload', 'depends_on', 'status', 'output', 'last_error', 'attempt',
  'max_attempts', 'priority', 'run_after', 'reserved_by', 'reserved_at', 'lease_renewed_at', 'lease_expires_at',
  'deadline_at', 'started_at', 'finished_at', 'created_at', 'usage'
], 'steps carry lease, attempt and timing columns');

-- Status vocabularies, written once as CHECK constraints.
create function pg_temp.check_def(tbl text, con text) returns text language sql as $$
  select pg_get_constraintdef(oid) from pg_constraint where conrelid = ('public.' || tbl)::regclass and conname = con
$$;
select matches(pg_temp.check_def('ops_mission_proposals', 'ops_mission_proposals_status_check'),
  $re$'pending'.*'accepted'.*'rejected'$re$, 'proposal statuses');
select matches(pg_temp.check_def('ops_mission_proposals', 'ops_mission_proposals_source_check'),
  $re$'api'.*'trigger'.*'reaction'.*'agent'.*'human'$re$, 'proposal sources');
select matches(pg_temp.check_def('ops_missions', 'ops_missions_status_check'),
  $re$'approved'.*'running'.*'succeeded'.*'failed'.*'cancelled'$re$, 'mission statuses');
select matches(pg_temp.check_def('ops_mission_steps', 'ops_mission_steps_status_check'),
  $re$'pending'.*'queued'.*'running'.*'succeeded'.*'failed'.*'cancelled'$re$, 'step statuses');
select matches(pg_temp.check_def('ops_agent_reactions', 'ops_agent_reactions_status_check'),
  $re$'queued'.*'processing'.*'done'.*'skipped'.*'failed'$re$, 'reaction statuses');
select matches(pg_temp.check_def('ops_action_runs', 'ops_action_runs_status_check'),
  $re$'running'.*'succeeded'.*'failed'$re$, 'action run statuses');

-- The constraints bite.
insert into public.ops_mission_proposals (agent_id, title, proposed_steps)
values ('tester', 'a proposal', '[]');
select throws_ok(
  $$update public.ops_mission_proposals set status = 'approved' where agent_id = 'tester'$$,
  '23514', null, 'proposal status outside the vocabulary is refused');
select throws_ok(
  $$insert into public.ops_mission_proposals (agent_id, title, proposed_steps, source) values ('tester', 't', '[]', 'cron')$$,
  '23514', null, 'unknown proposal source is refused');
select throws_ok(
  $$insert into public.ops_mission_proposals (agent_id, title, proposed_steps) values ('Bad Agent', 't', '[]')$$,
  '23514', null, 'agent ids are lower-case slugs');
select throws_ok(
  $$update public.ops_mission_proposals set status = 'rejected', decided_at = now() where agent_id = 'tester'$$,
  '23514', null, 'a rejected proposal needs a reason');
select throws_ok(
  $$insert into public.ops_mission_proposals (agent_id, title, proposed_steps, dedupe_key) values ('tester', 'x', '[]', 'k'), ('tester', 'y', '[]', 'k')$$,
  '23505', null, 'dedupe keys are unique');

insert into public.ops_missions (proposal_id, agent_id, title)
  select id, agent_id, title from public.ops_mission_proposals where agent_id = 'tester';
select throws_ok(
  $$insert into public.ops_missions (proposal_id, agent_id, title) select id, agent_id, title from public.ops_mission_proposals where agent_id = 'tester'$$,
  '23505', null, 'a proposal yields at most one mission');
select throws_ok(
  $$update public.ops_missions set status = 'succeeded' where agent_id = 'tester'$$,
  '23514', null, 'a finished mission needs finalized_at');
select throws_ok(
  $$insert into public.ops_mission_steps (mission_id, position, kind, status) select id, 0, 'Bad-Kind', 'queued' from public.ops_missions where agent_id = 'tester'$$,
  '23514', null, 'step kinds are snake_case');
select throws_ok(
  $$insert into public.ops_mission_steps (mission_id, position, kind, status) select id, 0, 'noop', 'running' from public.ops_missions where agent_id = 'tester'$$,
  '23514', null, 'a running step needs a lease and an owner');
select lives_ok(
  $$insert into public.ops_mission_steps (mission_id, position, kind, status) select id, 0, 'noop', 'queued' from public.ops_missions where agent_id = 'tester'$$,
  'a well-formed queued step is accepted');
select throws_ok(
  $$insert into public.ops_mission_steps (mission_id, position, kind, status) select id, 0, 'noop', 'queued' from public.ops_missions where agent_id = 'tester'$$,
  '23505', null, 'positions are unique within a mission');
select throws_ok(
  $$insert into public.ops_agent_events (type) values ('NotAType')$$,
  '23514', null, 'event types are entity:what');
insert into public.ops_agent_events (type) values ('test:appended');
select throws_ok(
  $$update public.ops_agent_events set title = 'edited' where type = 'test:appended'$$,
  'PT409', null, 'events are append-only');
select throws_ok(
  $$insert into public.ops_policy (key, value) values ('Bad Key', '{}')$$,
  '23514', null, 'policy keys are snake_case, optionally namespaced');
select throws_ok(
  $$insert into public.ops_trigger_rules (name, trigger_event) values ('r', 'cron')$$,
  '23514', null, 'trigger checkers are a closed set');

-- Indexes for the hot paths.
select has_index('public', 'ops_mission_steps', 'ops_mission_steps_claim_idx', array['kind', 'priority', 'run_after', 'id'], 'claim index');
select is(
  (select pg_get_expr(indpred, indrelid) from pg_index where indexrelid = 'public.ops_mission_steps_claim_idx'::regclass),
  '(status = ''queued''::text)', 'the claim index holds queued steps only');
select has_index('public', 'ops_mission_steps', 'ops_mission_steps_lease_idx', 'running steps by lease expiry');
select has_index('public', 'ops_agent_events', 'ops_agent_events_created_idx', 'events by time');
select has_index('public', 'ops_agent_events', 'ops_agent_events_type_created_idx', 'events by type');
select is(
  (select am.amname::text from pg_class c join pg_am am on am.oid = c.relam where c.oid = 'public.ops_agent_events_tags_idx'::regclass),
  'gin', 'GIN index on event tags');
select has_index('public', 'ops_mission_proposals', 'ops_mission_proposals_pending_idx', 'pending proposals');
select has_index('public', 'ops_agent_reactions', 'ops_agent_reactions_queued_idx', 'queued reactions');

select * from finish();
rollback;
