-- Action runs: the audit log of heartbeats and maintenance tasks (one row per run).

create table public.ops_action_runs (
  id          bigint generated always as identity primary key,
  action      text        not null,
  status      text        not null default 'running',
  result      jsonb       not null default '{}'::jsonb,
  error       text,
  duration_ms integer,
  started_at  timestamptz not null default now(),
  finished_at timestamptz,

  constraint ops_action_runs_status_check
    check (status in ('running', 'succeeded', 'failed')),
  constraint ops_action_runs_action_check
    check (action ~ '^[a-z][a-z0-9_]{0,63}$'),
  constraint ops_action_runs_finished_check
    check ((status = 'running') = (finished_at is null))
);

comment on table public.ops_action_runs is
  'Heartbeat and maintenance audit: per-task counts, errors and duration of every run.';

create index ops_action_runs_action_started_idx on public.ops_action_runs (action, started_at desc);
create index ops_action_runs_started_idx on public.ops_action_runs (started_at);

alter table public.ops_action_runs enable row level security;
revoke all on table public.ops_action_runs from public, anon, authenticated, service_role;
grant select on table public.ops_action_runs to service_role;
