-- Events: the append-only stream every state change writes to, and what triggers and reactions read.
-- Types are '<entity>:<what>' (step:succeeded, mission:failed, tweet:posted ...); tags always carry the
-- type and its two parts so reaction patterns can match on either.

create table public.ops_agent_events (
  id          bigint generated always as identity primary key,
  type        text        not null,
  agent_id    text        not null default 'system',
  source      text        not null default 'system',
  tags        text[]      not null default '{}',
  title       text        not null default '',
  summary     text,
  payload     jsonb       not null default '{}'::jsonb,
  proposal_id bigint,
  mission_id  bigint,
  step_id     bigint,
  created_at  timestamptz not null default now(),

  constraint ops_agent_events_type_check
    check (type ~ '^[a-z][a-z0-9_]{0,63}:[a-z][a-z0-9_]{0,63}$'),
  constraint ops_agent_events_payload_check
    check (jsonb_typeof(payload) = 'object')
);

comment on table public.ops_agent_events is
  'Append-only event stream. Written by status triggers and ops_emit_event; never updated.';
comment on column public.ops_agent_events.proposal_id is
  'No foreign keys here: the log outlives pruned proposals, missions and steps.';

create index ops_agent_events_created_idx on public.ops_agent_events (created_at);
create index ops_agent_events_type_created_idx on public.ops_agent_events (type, created_at);
create index ops_agent_events_tags_idx on public.ops_agent_events using gin (tags);
create index ops_agent_events_mission_idx on public.ops_agent_events (mission_id) where mission_id is not null;

-- Append-only, even for the table owner: a correction is a new event, never an edit.
create or replace function ops_internal.reject_event_update()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  raise exception 'ops_agent_events is append-only: % of event % refused', tg_op, old.id
    using errcode = 'PT409', hint = 'emit a new event instead';
end;
$$;

revoke all on function ops_internal.reject_event_update() from public, anon, authenticated, service_role;

create trigger ops_agent_events_append_only
  before update on public.ops_agent_events
  for each row execute function ops_internal.reject_event_update();

alter table public.ops_agent_events enable row level security;
revoke all on table public.ops_agent_events from public, anon, authenticated, service_role;
grant select on table public.ops_agent_events to service_role;
