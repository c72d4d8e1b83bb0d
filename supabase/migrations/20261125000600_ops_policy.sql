-- Policy: every limit and toggle of the loop, as JSON, editable without a redeploy (seed pitfall 9).
-- Keys are validated by ops_set_policy; defaults are loaded from supabase/seed.sql.

create table public.ops_policy (
  key        text        primary key,
  value      jsonb       not null default '{}'::jsonb,
  updated_at timestamptz not null default now(),
  updated_by text,

  constraint ops_policy_key_check
    check (key ~ '^[a-z][a-z0-9_]{0,63}(:[a-z][a-z0-9_]{0,63})?$'),
  constraint ops_policy_value_check
    check (jsonb_typeof(value) = 'object')
);

comment on table public.ops_policy is
  'Key/value JSON configuration of the loop. Written only through ops_set_policy (and the seed).';

create trigger ops_policy_touch
  before update on public.ops_policy
  for each row execute function ops_internal.touch_updated_at();

alter table public.ops_policy enable row level security;
revoke all on table public.ops_policy from public, anon, authenticated, service_role;
grant select on table public.ops_policy to service_role;
