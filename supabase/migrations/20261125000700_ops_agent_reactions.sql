-- Reactions: events matched against policy.reaction_matrix, queued here, turned into proposals by the
-- heartbeat through ops_create_proposal (seed pitfall 7: reactions go through the same gates).
-- queued -> processing -> done | skipped | failed.

create table public.ops_agent_reactions (
  id            bigint generated always as identity primary key,
  event_id      bigint references public.ops_agent_events (id) on delete set null,
  pattern       text             not null,
  source_agent  text             not null,
  target_agent  text             not null,
  reaction_type text             not null,
  step_kind     text             not null,
  title         text,
  payload       jsonb            not null default '{}'::jsonb,
  probability   double precision not null,
  roll          double precision not null,
  status        text             not null default 'queued',
  reason        text,
  proposal_id   bigint references public.ops_mission_proposals (id) on delete set null,
  created_at    timestamptz      not null default now(),
  processed_at  timestamptz,
  updated_at    timestamptz      not null default now(),

  constraint ops_agent_reactions_status_check
    check (status in ('queued', 'processing', 'done', 'skipped', 'failed')),
  constraint ops_agent_reactions_probability_check
    check (probability >= 0 and probability <= 1),
  constraint ops_agent_reactions_roll_check
    check (roll >= 0 and roll < 1),
  constraint ops_agent_reactions_step_kind_check
    check (step_kind ~ '^[a-z][a-z0-9_]{0,63}$'),
  constraint ops_agent_reactions_processed_check
    check ((status in ('done', 'skipped', 'failed')) = (processed_at is not null))
);

comment on table public.ops_agent_reactions is
  'Reaction queue. Filled by the event hook, drained by ops_process_reactions.';

create index ops_agent_reactions_queued_idx
  on public.ops_agent_reactions (id) where status = 'queued';
-- The cooldown check: the latest reaction of one (pattern, target, type).
create index ops_agent_reactions_cooldown_idx
  on public.ops_agent_reactions (pattern, target_agent, reaction_type, created_at);
create index ops_agent_reactions_event_idx on public.ops_agent_reactions (event_id);
create index ops_agent_reactions_proposal_idx on public.ops_agent_reactions (proposal_id);

create trigger ops_agent_reactions_touch
  before update on public.ops_agent_reactions
  for each row execute function ops_internal.touch_updated_at();

alter table public.ops_agent_reactions enable row level security;
revoke all on table public.ops_agent_reactions from public, anon, authenticated, service_role;
grant select on table public.ops_agent_reactions to service_role;
