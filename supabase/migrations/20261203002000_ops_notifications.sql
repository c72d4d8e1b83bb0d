-- Notifications: the outbox that tells people about the events that need them (proposals waiting for a
-- person, open circuit breakers, stalled queues, failed heartbeats and missions) through webhook sinks
-- named in policy `notifications` (validated by ops_internal.validate_policy_notifications).
--
-- ops_notifications holds one row per (sink, event): filled by ops_internal.enqueue_notifications from the
-- events after each sink's cursor, claimed by deliverers with ops_claim_notifications (a lease, FOR UPDATE
-- SKIP LOCKED) and settled by ops_report_notification, fenced by attempt like step reports:
--   pending -> sending -> sent
--                      -> pending (retry after a backoff, or the sink's Retry-After)
--                      -> dead    (after max_attempts, or a 4xx that no retry can fix)
-- A deliverer that stops between its HTTP request and its report leaves the row `sending` until the lease
-- expires; the next claim sends it again under the same idempotency key (agent-ops-<id>). Delivery is
-- therefore at-least-once, exactly once unless a deliverer dies mid-send, and a sink can drop the repeat by
-- the key.
--
-- ops_notification_cursors holds each sink's place in the event stream and its sending state: the cursor,
-- the hold that keeps it from stepping past ids of transactions still in flight (see
-- enqueue_notifications), its token bucket (per_minute) and the pause a 429 asks for.
--
-- Webhook URLs never reach the database: a sink names the environment variable that holds its URL
-- (url_env), read only by the deliverer.

create table public.ops_notifications (
  id               bigint generated always as identity primary key,
  sink             text        not null,
  event_id         bigint      not null,
  event_type       text        not null,
  matched          text        not null,
  status           text        not null default 'pending',
  attempts         integer     not null default 0,
  next_attempt_at  timestamptz not null default now(),
  lease_expires_at timestamptz,
  claimed_by       text,
  claimed_at       timestamptz,
  last_status      integer,
  last_error       text,
  created_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now(),
  sent_at          timestamptz,
  dead_at          timestamptz,

  constraint ops_notifications_sink_event_key unique (sink, event_id),
  constraint ops_notifications_status_check
    check (status in ('pending', 'sending', 'sent', 'dead')),
  constraint ops_notifications_matched_check
    check (matched in ('type', 'tag', 'proposal:pending')),
  constraint ops_notifications_attempts_check
    check (attempts >= 0),
  constraint ops_notifications_lease_check
    check ((status = 'sending') = (lease_expires_at is not null)),
  constraint ops_notifications_sent_check
    check ((status = 'sent') = (sent_at is not null)),
  constraint ops_notifications_dead_check
    check ((status = 'dead') = (dead_at is not null))
);

comment on table public.ops_notifications is
  'Notification outbox: one row per (sink, event), pending -> sending -> sent | dead. Filled by '
  'ops_internal.enqueue_notifications, delivered through ops_claim_notifications / ops_report_notification.';
comment on column public.ops_notifications.event_id is
  'No foreign key: events are pruned by retention; a row whose event is gone is dead-lettered.';
comment on column public.ops_notifications.matched is
  'Why the sink wanted the event: its type, one of its tags, or proposal:pending (a proposal:created event '
  'whose proposal was waiting for a person when the outbox was filled).';
comment on column public.ops_notifications.attempts is
  'Deliveries attempted: each claim counts one, so a deliverer that died mid-send used an attempt.';

-- Due rows of a sink, in order; leases to take back; the console's lists; retention by age.
create index ops_notifications_due_idx
  on public.ops_notifications (sink, next_attempt_at, id) where status = 'pending';
create index ops_notifications_sending_idx
  on public.ops_notifications (sink, lease_expires_at) where status = 'sending';
create index ops_notifications_status_idx on public.ops_notifications (status, id);
create index ops_notifications_sent_idx on public.ops_notifications (sent_at) where status = 'sent';
create index ops_notifications_dead_idx on public.ops_notifications (dead_at) where status = 'dead';

create trigger ops_notifications_touch
  before update on public.ops_notifications
  for each row execute function ops_internal.touch_updated_at();

alter table public.ops_notifications enable row level security;
revoke all on table public.ops_notifications from public, anon, authenticated, service_role;
grant select on table public.ops_notifications to service_role;

create table public.ops_notification_cursors (
  sink          text        primary key,
  last_event_id bigint      not null,
  hold_event_id bigint,
  hold_at       timestamptz,
  rate_tat      timestamptz,
  paused_until  timestamptz,
  created_at    timestamptz not null default now(),
  updated_at    timestamptz not null default now(),

  constraint ops_notification_cursors_hold_check
    check ((hold_event_id is null) = (hold_at is null))
);

comment on table public.ops_notification_cursors is
  'Per notification sink: the last event considered, the hold over ids still in flight, the token bucket of '
  'its per_minute limit and the pause a 429 asked for. Kept in step with policy notifications by a trigger.';
comment on column public.ops_notification_cursors.last_event_id is
  'Every event up to this id has been considered for the sink (matched or not).';
comment on column public.ops_notification_cursors.hold_event_id is
  'Ids up to here that were not visible when the hold was taken (hold_at) may belong to transactions still '
  'in flight; once the hold is 5 minutes old the cursor passes the ones still missing.';
comment on column public.ops_notification_cursors.rate_tat is
  'Token bucket of per_minute (GCRA): the theoretical arrival time of the next delivery.';

create trigger ops_notification_cursors_touch
  before update on public.ops_notification_cursors
  for each row execute function ops_internal.touch_updated_at();

alter table public.ops_notification_cursors enable row level security;
revoke all on table public.ops_notification_cursors from public, anon, authenticated, service_role;
grant select on table public.ops_notification_cursors to service_role;
