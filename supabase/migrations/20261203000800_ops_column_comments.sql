-- Names kept from the design this system follows, documented where they live (`\d+` and Supabase's table
-- editor show these comments).

comment on column public.ops_trigger_rules.trigger_event is
  'Which checker decides whether the rule fires: event, schedule, threshold, absence, or custom (a Python '
  'plug-in). The name comes from the design this system follows; it holds the checker kind, not an event.';

comment on column public.ops_mission_steps.lease_renewed_at is
  'When the running attempt''s lease was last renewed (by the claim or ops_extend_lease); unrelated to '
  'ops_heartbeat().';
