-- Steps: the units workers claim. pending (waiting for the steps it depends on) -> queued -> running ->
-- succeeded | failed, or back to queued for a retry; cancelled when the mission ends early.

create table public.ops_mission_steps (
  id               bigint generated always as identity primary key,
  mission_id       bigint      not null references public.ops_missions (id) on delete cascade,
  position         integer     not null,
  kind             text        not null,
  payload          jsonb       not null default '{}'::jsonb,
  depends_on       integer[]   not null default '{}',
  status           text        not null,
  output           jsonb,
  last_error       text,
  attempt          integer     not null default 0,
  max_attempts     integer     not null default 3,
  priority         integer     not null default 0,
  run_after        timestamptz not null default now(),
  reserved_by      text,
  reserved_at      timestamptz,
  heartbeat_at     timestamptz,
  lease_expires_at timestamptz,
  started_at       timestamptz,
  finished_at      timestamptz,
  created_at       timestamptz not null default now(),

  constraint ops_mission_steps_status_check
    check (status in ('pending', 'queued', 'running', 'succeeded', 'failed', 'cancelled')),
  constraint ops_mission_steps_kind_check
    check (kind ~ '^[a-z][a-z0-9_]{0,63}$'),
  constraint ops_mission_steps_position_check
    check (position >= 0),
  constraint ops_mission_steps_attempt_check
    check (attempt >= 0 and attempt <= max_attempts),
  constraint ops_mission_steps_max_attempts_check
    check (max_attempts between 1 and 100),
  constraint ops_mission_steps_running_check
    check (status <> 'running' or (reserved_by is not null and lease_expires_at is not null)),
  constraint ops_mission_steps_finished_check
    check ((status in ('succeeded', 'failed', 'cancelled')) = (finished_at is not null)),
  constraint ops_mission_steps_mission_position_key unique (mission_id, position)
);

comment on table public.ops_mission_steps is
  'Units of work. Claimed with ops_claim_next_step, reported with ops_complete_step / ops_fail_step.';

-- The claim path: only queued rows are in it, in claim order.
create index ops_mission_steps_claim_idx
  on public.ops_mission_steps (kind, priority desc, run_after, id) where status = 'queued';
-- Stale recovery scans running steps by lease expiry.
create index ops_mission_steps_lease_idx
  on public.ops_mission_steps (lease_expires_at) where status = 'running';
-- Cap gates count today's steps of a kind.
create index ops_mission_steps_kind_created_idx
  on public.ops_mission_steps (kind, created_at);

alter table public.ops_mission_steps enable row level security;
revoke all on table public.ops_mission_steps from public, anon, authenticated, service_role;
grant select on table public.ops_mission_steps to service_role;
