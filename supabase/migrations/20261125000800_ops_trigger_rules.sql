-- Trigger rules: conditions the heartbeat checks to propose work on its own.
-- trigger_event selects the checker: event | schedule | threshold | absence | custom.

create table public.ops_trigger_rules (
  id                bigint generated always as identity primary key,
  name              text        not null,
  trigger_event     text        not null,
  conditions        jsonb       not null default '{}'::jsonb,
  action_config     jsonb       not null default '{}'::jsonb,
  cooldown_minutes  integer     not null default 60,
  skip_probability  real        not null default 0,
  jitter_minutes    integer     not null default 0,
  enabled           boolean     not null default false,
  fire_count        integer     not null default 0,
  last_fired_at     timestamptz,
  next_due_at       timestamptz,
  last_evaluated_at timestamptz,
  created_at        timestamptz not null default now(),
  updated_at        timestamptz not null default now(),

  constraint ops_trigger_rules_name_key unique (name),
  constraint ops_trigger_rules_name_check
    check (char_length(name) between 1 and 120),
  constraint ops_trigger_rules_trigger_event_check
    check (trigger_event in ('event', 'schedule', 'threshold', 'absence', 'custom')),
  constraint ops_trigger_rules_conditions_check
    check (jsonb_typeof(conditions) = 'object'),
  constraint ops_trigger_rules_action_config_check
    check (jsonb_typeof(action_config) = 'object'),
  constraint ops_trigger_rules_cooldown_check
    check (cooldown_minutes >= 0),
  constraint ops_trigger_rules_skip_probability_check
    check (skip_probability >= 0 and skip_probability <= 1),
  constraint ops_trigger_rules_jitter_check
    check (jitter_minutes >= 0),
  constraint ops_trigger_rules_fire_count_check
    check (fire_count >= 0)
);

comment on table public.ops_trigger_rules is
  'Rules evaluated by ops_evaluate_triggers (heartbeat). Each firing goes through ops_create_proposal.';

create index ops_trigger_rules_enabled_idx
  on public.ops_trigger_rules (next_due_at nulls first) where enabled;

create trigger ops_trigger_rules_touch
  before update on public.ops_trigger_rules
  for each row execute function ops_internal.touch_updated_at();

alter table public.ops_trigger_rules enable row level security;
revoke all on table public.ops_trigger_rules from public, anon, authenticated, service_role;
grant select on table public.ops_trigger_rules to service_role;
