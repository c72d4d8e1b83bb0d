-- Missions: accepted proposals turned into work.
-- approved (created) -> running (first claim) -> succeeded | failed | cancelled.

create table public.ops_missions (
  id             bigint generated always as identity primary key,
  proposal_id    bigint      not null references public.ops_mission_proposals (id) on delete cascade,
  agent_id       text        not null,
  title          text        not null,
  status         text        not null default 'approved',
  failure_reason text,
  created_at     timestamptz not null default now(),
  started_at     timestamptz,
  finalized_at   timestamptz,
  updated_at     timestamptz not null default now(),

  constraint ops_missions_status_check
    check (status in ('approved', 'running', 'succeeded', 'failed', 'cancelled')),
  constraint ops_missions_proposal_id_key unique (proposal_id),
  constraint ops_missions_finalized_check
    check ((status in ('succeeded', 'failed', 'cancelled')) = (finalized_at is not null)),
  constraint ops_missions_failure_check
    check (status not in ('failed', 'cancelled') or failure_reason is not null)
);

comment on table public.ops_missions is
  'Work created from accepted proposals. Status changes only through the ops_* functions.';

-- Active missions: the max_active_missions gate and the heartbeat's finalization sweep.
create index ops_missions_active_idx
  on public.ops_missions (id) where status in ('approved', 'running');
create index ops_missions_agent_created_idx
  on public.ops_missions (agent_id, created_at desc);
create index ops_missions_created_idx
  on public.ops_missions (created_at desc);
-- Retention prunes finished missions by age.
create index ops_missions_finalized_idx
  on public.ops_missions (finalized_at) where finalized_at is not null;

create trigger ops_missions_touch
  before update on public.ops_missions
  for each row execute function ops_internal.touch_updated_at();

alter table public.ops_missions enable row level security;
revoke all on table public.ops_missions from public, anon, authenticated, service_role;
grant select on table public.ops_missions to service_role;
