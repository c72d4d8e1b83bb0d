-- The circuit breaker, in the database and shared by every worker.
--
-- ops_fail_step counts consecutive failures per kind across all workers, each step once however often it is
-- retried (a poison step retried three times is one failure); ops_complete_step resets the count. At
-- worker_policy.circuit_breaker_threshold the kind opens: policy worker:<kind> is disabled (so claims skip
-- it and the gates refuse it) with the reason, and 'worker:circuit_open' is written once. After
-- worker_policy.breaker_cooldown_seconds the claim hands out one probe step (half-open): its success closes
-- the breaker ('worker:circuit_closed') and re-enables the kind; its failure re-opens it with the cool-down
-- doubled, up to breaker_cooldown_max_seconds. A person re-enabling the kind (agent-ops kinds enable, or any
-- write of worker:<kind> not made by the breaker) closes it by hand. Timed-out attempts count as failures;
-- stale leases and hand-backs do not (the worker, not the kind, failed).

create table public.ops_kind_breakers (
  kind                 text        primary key,
  state                text        not null default 'closed',
  consecutive_failures integer     not null default 0,
  failed_steps         bigint[]    not null default '{}',
  last_error           text,
  last_failure_at      timestamptz,
  opened_at            timestamptz,
  reopen_at            timestamptz,
  opens                integer     not null default 0,
  probe_step_id        bigint,
  updated_at           timestamptz not null default now(),

  constraint ops_kind_breakers_kind_check check (kind ~ ops_internal.kind_pattern()),
  constraint ops_kind_breakers_state_check check (state in ('closed', 'open', 'half_open')),
  constraint ops_kind_breakers_open_check check ((state = 'closed') = (reopen_at is null))
);

comment on table public.ops_kind_breakers is
  'Circuit breaker per step kind: consecutive failures (distinct steps), open/half-open state, the next probe.';
comment on column public.ops_kind_breakers.failed_steps is
  'The steps counted in the current run of failures: a retried step counts once.';

alter table public.ops_kind_breakers enable row level security;
revoke all on table public.ops_kind_breakers from public, anon, authenticated, service_role;
grant select on table public.ops_kind_breakers to service_role;

-- The breaker's own writes of worker:<kind> carry this updated_by, so the policy trigger can tell them from a
-- person's.
create or replace function ops_internal.breaker_author()
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select 'circuit_breaker';
$$;

create or replace function ops_internal.set_kind_enabled(kind text, enabled boolean, reason text, failures integer)
returns void
language sql
set search_path = pg_catalog, pg_temp
as $$
  insert into public.ops_policy as p (key, value, updated_by)
  values ('worker:' || kind,
          pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('enabled', enabled,
            'reason', pg_catalog.left(reason, 500), 'failures', failures)),
          ops_internal.breaker_author())
  on conflict (key) do update
     set value = excluded.value, updated_by = excluded.updated_by, updated_at = pg_catalog.now();
$$;

-- Open (or re-open, `opens` > 1) the breaker of `kind`: disabled until the cool-down has passed.
create or replace function ops_internal.open_breaker(kind text, error text, failures integer, opens integer)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  policy jsonb := ops_internal.policy('worker_policy');
  cooldown double precision := least(
    ops_internal.worker_setting(policy, kind, 'breaker_cooldown_seconds') * pg_catalog.power(2, least(opens - 1, 30)),
    ops_internal.worker_setting(policy, kind, 'breaker_cooldown_max_seconds'));
  reopen timestamptz := pg_catalog.now() + pg_catalog.make_interval(secs => cooldown);
begin
  update public.ops_kind_breakers b
     set state = 'open', opened_at = pg_catalog.now(), reopen_at = reopen, opens = open_breaker.opens,
         probe_step_id = null, updated_at = pg_catalog.now()
   where b.kind = open_breaker.kind;
  perform ops_internal.set_kind_enabled(kind, false,
    pg_catalog.format('circuit breaker: %s consecutive failures (last: %s); one probe step after %s UTC',
      failures, pg_catalog.left(coalesce(error, '?'), 200),
      pg_catalog.to_char(reopen at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS')),
    failures);
  perform ops_internal.emit_event('worker:circuit_open', 'system',
    pg_catalog.format('Circuit open: %s disabled after %s consecutive failures%s', kind, failures,
      case when opens > 1 then ' (probe failed, re-opened)' else '' end),
    pg_catalog.jsonb_build_object('kind', kind, 'failures', failures, 'last_error', pg_catalog.left(error, 1000),
      'reopen_at', reopen, 'opens', opens, 'cooldown_seconds', pg_catalog.round(cooldown::numeric)),
    array[kind, 'circuit_open', 'warning']);
end;
$$;

create or replace function ops_internal.close_breaker(kind text, why text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  update public.ops_kind_breakers b
     set state = 'closed', consecutive_failures = 0, failed_steps = '{}', opens = 0, probe_step_id = null,
         opened_at = null, reopen_at = null, updated_at = pg_catalog.now()
   where b.kind = close_breaker.kind;
  perform ops_internal.set_kind_enabled(kind, true, null, null);
  perform ops_internal.emit_event('worker:circuit_closed', 'system',
    pg_catalog.format('Circuit closed: %s enabled again (%s)', kind, why),
    pg_catalog.jsonb_build_object('kind', kind, 'why', why), array[kind, 'circuit_closed']);
end;
$$;

-- A failed attempt of `step` (reported, or timed out): one more failure of its kind unless this step was
-- counted already; a failed probe re-opens the breaker.
create or replace function ops_internal.breaker_failure(step public.ops_mission_steps, error text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  breaker public.ops_kind_breakers;
begin
  insert into public.ops_kind_breakers (kind) values (step.kind) on conflict (kind) do nothing;
  select b.* into breaker from public.ops_kind_breakers b where b.kind = step.kind for update;
  update public.ops_kind_breakers b
     set last_error = pg_catalog.left(error, 1000), last_failure_at = pg_catalog.now(), updated_at = pg_catalog.now(),
         consecutive_failures = b.consecutive_failures + c.counts,
         failed_steps = case when c.counts = 1 then b.failed_steps || step.id else b.failed_steps end
    from (select (breaker.state = 'closed' and not step.id = any (breaker.failed_steps))::integer as counts) as c
   where b.kind = step.kind
  returning b.* into breaker;
  if breaker.state <> 'closed' and breaker.probe_step_id = step.id then
    perform ops_internal.open_breaker(step.kind, error, breaker.consecutive_failures, breaker.opens + 1);
  elsif breaker.state = 'closed' and breaker.consecutive_failures
        >= ops_internal.worker_setting(ops_internal.policy('worker_policy'), step.kind, 'circuit_breaker_threshold') then
    perform ops_internal.open_breaker(step.kind, error, breaker.consecutive_failures, 1);
  end if;
end;
$$;

-- A succeeded attempt: the run of failures ends; a probe's success closes the breaker. Most kinds have no
-- breaker row or nothing to reset, so the row is only locked when there is something to do.
create or replace function ops_internal.breaker_success(step public.ops_mission_steps)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  breaker public.ops_kind_breakers;
begin
  select b.* into breaker from public.ops_kind_breakers b where b.kind = step.kind;
  if not found or (breaker.state = 'closed' and breaker.consecutive_failures = 0) then
    return;
  end if;
  select b.* into breaker from public.ops_kind_breakers b where b.kind = step.kind for update;
  if breaker.state = 'closed' then
    update public.ops_kind_breakers b
       set consecutive_failures = 0, failed_steps = '{}', updated_at = pg_catalog.now()
     where b.kind = step.kind;
  elsif breaker.probe_step_id = step.id then
    perform ops_internal.close_breaker(step.kind, pg_catalog.format('probe step %s succeeded', step.id));
  end if;
end;
$$;

-- A person's write of worker:<kind> takes the kind over from the breaker: re-enabling closes it at once;
-- disabling keeps it disabled with no probes.
create or replace function ops_internal.breaker_follows_policy()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  breaker public.ops_kind_breakers;
  target_kind text := pg_catalog.substr(new.key, 8);
begin
  if new.updated_by is not distinct from ops_internal.breaker_author() then
    return null;
  end if;
  select b.* into breaker from public.ops_kind_breakers b where b.kind = target_kind for update;
  if not found or (breaker.state = 'closed' and breaker.consecutive_failures = 0) then
    return null;
  end if;
  update public.ops_kind_breakers b
     set state = 'closed', consecutive_failures = 0, failed_steps = '{}', opens = 0, probe_step_id = null,
         opened_at = null, reopen_at = null, updated_at = pg_catalog.now()
   where b.kind = target_kind;
  if breaker.state <> 'closed' and coalesce((new.value ->> 'enabled')::boolean, true) then
    perform ops_internal.emit_event('worker:circuit_closed', 'system',
      pg_catalog.format('Circuit closed: %s re-enabled by %s', target_kind, new.updated_by),
      pg_catalog.jsonb_build_object('kind', target_kind, 'why', 'enabled by ' || new.updated_by),
      array[target_kind, 'circuit_closed']);
  end if;
  return null;
end;
$$;

create trigger ops_policy_worker_kinds_breaker
  after insert or update on public.ops_policy
  for each row
  when (new.key like 'worker:%')
  execute function ops_internal.breaker_follows_policy();

select ops_internal.revoke_api_execute();

-- Events of the loop's own entities come only from its state changes; the breaker and the stall checks now
-- write worker:* and queue:* in SQL, so those types are reserved too.
create or replace function public.ops_emit_event(event jsonb)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  type_name text;
  entity text;
  tags text[];
  proposal bigint;
  mission bigint;
  step bigint;
  new_id bigint;
begin
  perform ops_internal.require_object(ops_emit_event.event, 'event');
  perform ops_internal.check_keys(event, '', array['type', 'agent_id', 'source', 'tags', 'title', 'summary',
    'payload', 'proposal_id', 'mission_id', 'step_id']);
  type_name := ops_internal.get_text(event, '', 'type', true, ops_internal.event_type_pattern());
  entity := pg_catalog.split_part(type_name, ':', 1);
  if entity = any (ops_internal.reserved_event_entities()) then
    perform ops_internal.invalid(pg_catalog.format(
      'type %s uses the reserved entity %s: those events come only from state changes', type_name, entity));
  end if;
  tags := ops_internal.get_text_array(event, '', 'tags', false, ops_internal.agent_id_pattern(), 20);
  perform ops_internal.check_domain_tags(tags, 'tags');
  proposal := ops_internal.get_int(event, '', 'proposal_id', false, 1);
  mission := ops_internal.get_int(event, '', 'mission_id', false, 1);
  step := ops_internal.get_int(event, '', 'step_id', false, 1);
  if proposal is not null and not exists (select 1 from public.ops_mission_proposals p where p.id = proposal) then
    perform ops_internal.not_found(pg_catalog.format('proposal %s not found', proposal));
  end if;
  if mission is not null and not exists (select 1 from public.ops_missions m where m.id = mission) then
    perform ops_internal.not_found(pg_catalog.format('mission %s not found', mission));
  end if;
  if step is not null then
    select s.mission_id into mission from public.ops_mission_steps s
     where s.id = step and (mission is null or s.mission_id = mission);
    if not found then
      perform ops_internal.not_found(pg_catalog.format('step %s not found%s', step,
        case when mission is not null then ' in mission ' || mission else '' end));
    end if;
  end if;

  new_id := ops_internal.emit_event(
    type_name,
    ops_internal.get_text(event, '', 'agent_id', true, ops_internal.agent_id_pattern()),
    coalesce(ops_internal.get_text(event, '', 'title', false, null, 200), type_name),
    coalesce(ops_internal.get_object(event, '', 'payload', false, 65536), '{}'::jsonb),
    tags,
    proposal,
    mission,
    step,
    coalesce(ops_internal.get_text(event, '', 'source', false, ops_internal.agent_id_pattern()), 'api'),
    ops_internal.get_text(event, '', 'summary', false, null, 4000));
  return (select pg_catalog.jsonb_build_object('event_id', e.id, 'type', e.type, 'tags', e.tags,
                                               'created_at', e.created_at)
            from public.ops_agent_events e where e.id = new_id);
end;
$$;

revoke execute on function public.ops_emit_event(jsonb) from public, anon, authenticated;
grant execute on function public.ops_emit_event(jsonb) to service_role;
