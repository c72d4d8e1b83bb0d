-- Proposals: an agent's request for work. Decided once: pending -> accepted | rejected.
-- Rejected proposals are kept with their reason (the audit trail the seed asks for).

create table public.ops_mission_proposals (
  id               bigint generated always as identity primary key,
  agent_id         text        not null,
  title            text        not null,
  description      text,
  proposed_steps   jsonb       not null,
  source           text        not null default 'api',
  status           text        not null default 'pending',
  dedupe_key       text,
  rejection_reason text,
  auto_approved    boolean     not null default false,
  decided_by       text,
  decided_at       timestamptz,
  metadata         jsonb       not null default '{}'::jsonb,
  created_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now(),

  constraint ops_mission_proposals_status_check
    check (status in ('pending', 'accepted', 'rejected')),
  constraint ops_mission_proposals_source_check
    check (source in ('api', 'trigger', 'reaction', 'agent', 'human')),
  constraint ops_mission_proposals_agent_id_check
    check (agent_id ~ '^[a-z0-9][a-z0-9_.:-]{0,63}$'),
  constraint ops_mission_proposals_title_check
    check (char_length(title) between 1 and 200),
  constraint ops_mission_proposals_description_check
    check (char_length(description) <= 4000),
  constraint ops_mission_proposals_steps_check
    check (jsonb_typeof(proposed_steps) = 'array'),
  constraint ops_mission_proposals_metadata_check
    check (jsonb_typeof(metadata) = 'object'),
  constraint ops_mission_proposals_dedupe_key_check
    check (char_length(dedupe_key) between 1 and 200),
  constraint ops_mission_proposals_dedupe_key_key unique (dedupe_key),
  constraint ops_mission_proposals_decision_check
    check ((status = 'pending') = (decided_at is null)),
  constraint ops_mission_proposals_rejection_check
    check ((status = 'rejected') = (rejection_reason is not null))
);

comment on table public.ops_mission_proposals is
  'Requests for work. Written only by ops_create_proposal / ops_approve_proposal / ops_reject_proposal.';

-- Pending proposals awaiting a human, oldest first.
create index ops_mission_proposals_pending_idx
  on public.ops_mission_proposals (created_at) where status = 'pending';
-- The per-agent daily proposal limit counts today's proposals of one agent.
create index ops_mission_proposals_agent_created_idx
  on public.ops_mission_proposals (agent_id, created_at);
create index ops_mission_proposals_created_idx
  on public.ops_mission_proposals (created_at);

create trigger ops_mission_proposals_touch
  before update on public.ops_mission_proposals
  for each row execute function ops_internal.touch_updated_at();

alter table public.ops_mission_proposals enable row level security;
revoke all on table public.ops_mission_proposals from public, anon, authenticated, service_role;
grant select on table public.ops_mission_proposals to service_role;
