-- Delivering notifications: deliverers (agent_ops/notify.py, from `agent-ops notify`, `agent-ops heartbeat
-- --every` and `agent-ops serve`) claim outbox rows, POST them to the sinks and report each attempt.
--
-- ops_claim_notifications(deliverer, max_items) enqueues what is new (ops_internal.enqueue_notifications),
-- then hands out due rows with a lease, FOR UPDATE SKIP LOCKED: pending rows whose next_attempt_at has come
-- and sending rows whose lease expired (their deliverer stopped before it reported: the same message goes
-- out again under the same idempotency key, which is why delivery is at-least-once). Each sink's cursor row
-- is locked while it is served, so concurrent claimers take turns per sink and its per_minute token bucket
-- holds; a sink paused by a 429 is skipped until the pause ends. Each claim counts one attempt.
--
-- ops_report_notification(id, attempt, delivered, ...) is fenced by attempt like the step reports: only the
-- attempt that holds the row may settle it, a repeat of the report that settled it answers duplicate: true,
-- anything else PT409. Delivered -> sent. Not delivered -> pending again after Retry-After when the sink
-- sent one, else 10 s doubling per attempt up to an hour; a 429 also pauses the whole sink that long; a 4xx
-- that a retry cannot fix (anything but 408, 425 and 429) or the last of max_attempts (policy, default 8) ->
-- dead, with one notification:dead event (tagged warning) for people and for other sinks. A dead
-- notification:* event emits nothing more, so failures cannot chase each other.

create or replace function ops_internal.notification_dead(dead public.ops_notifications)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if pg_catalog.split_part(dead.event_type, ':', 1) = 'notification' then
    return;
  end if;
  perform ops_internal.emit_event(
    'notification:dead',
    'system',
    pg_catalog.format('Notification #%s to %s is dead after %s attempt(s): %s', dead.id, dead.sink, dead.attempts,
      pg_catalog.left(coalesce(dead.last_error, 'HTTP ' || dead.last_status, 'no reason given'), 160)),
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
      'notification_id', dead.id, 'sink', dead.sink, 'event_id', dead.event_id, 'event_type', dead.event_type,
      'attempts', dead.attempts, 'http_status', dead.last_status, 'error', dead.last_error)),
    array['warning']);
end;
$$;

-- Rows that can never be delivered any more: a lease that expired on the last attempt, attempts used up
-- (max_attempts lowered since), or an event pruned by retention. Each becomes dead with its event.
create or replace function ops_internal.reap_notifications(max_attempts integer)
returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  dead public.ops_notifications;
  reaped integer := 0;
begin
  for dead in
    update public.ops_notifications n
       set status = 'dead', dead_at = pg_catalog.now(), lease_expires_at = null,
           last_error = case
             when not exists (select 1 from public.ops_agent_events e where e.id = n.event_id)
               then pg_catalog.format('event %s no longer exists (pruned by retention)', n.event_id)
             when n.status = 'sending'
               then pg_catalog.format('the deliverer %s stopped before reporting attempt %s, the last', n.claimed_by,
                      n.attempts)
             else coalesce(n.last_error, pg_catalog.format('%s attempts used (max_attempts %s)', n.attempts, max_attempts))
           end
     where n.id in (
       select x.id from public.ops_notifications x
        where x.status in ('pending', 'sending')
          and ((x.status = 'sending' and x.lease_expires_at < pg_catalog.now())
               or (x.status = 'pending' and x.next_attempt_at <= pg_catalog.now()))
          and (x.attempts >= max_attempts
               or not exists (select 1 from public.ops_agent_events e where e.id = x.event_id))
        order by x.id
        limit 100
        for update skip locked)
    returning n.*
  loop
    perform ops_internal.notification_dead(dead);
    reaped := reaped + 1;
  end loop;
  return reaped;
end;
$$;

-- One claimed row as a deliverer needs it: where to (the sink's format and the name of the variable with
-- its URL), the idempotency key, the lease, and the event.
create or replace function ops_internal.claimed_notification(
  claimed public.ops_notifications, sink_format text, sink_url_env text)
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'id', claimed.id,
    'sink', claimed.sink,
    'attempt', claimed.attempts,
    'format', sink_format,
    'url_env', sink_url_env,
    'matched', claimed.matched,
    'idempotency_key', 'agent-ops-' || claimed.id,
    'lease_expires_at', claimed.lease_expires_at,
    'lease_seconds', extract(epoch from claimed.lease_expires_at - claimed.claimed_at),
    'event', (select pg_catalog.jsonb_build_object(
                'id', e.id, 'type', e.type, 'agent_id', e.agent_id, 'source', e.source, 'title', e.title,
                'summary', e.summary, 'tags', e.tags, 'payload', e.payload, 'created_at', e.created_at,
                'proposal_id', e.proposal_id, 'mission_id', e.mission_id, 'step_id', e.step_id)
                from public.ops_agent_events e where e.id = claimed.event_id));
$$;

create or replace function ops_internal.notification_report(report public.ops_notifications, duplicate boolean)
returns jsonb
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'id', report.id,
    'sink', report.sink,
    'attempt', report.attempts,
    'status', report.status,
    'next_attempt_at', case when report.status = 'pending' then report.next_attempt_at end,
    'duplicate', duplicate);
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_claim_notifications(deliverer text, max_items integer default 10)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  who text := ops_internal.check_text(ops_claim_notifications.deliverer, 'deliverer', 200);
  wanted integer := ops_claim_notifications.max_items;
  settings jsonb;
  max_attempts integer;
  lease interval;
  target record;
  cursor_row public.ops_notification_cursors;
  spacing interval;
  tat timestamptz;
  allowed integer;
  batch jsonb;
  taken integer;
  claimed jsonb := '[]'::jsonb;
begin
  if wanted is null or wanted not between 1 and 100 then
    perform ops_internal.invalid('max_items must be from 1 to 100');
  end if;
  settings := ops_internal.policy('notifications');
  if not exists (select 1 from ops_internal.notification_sinks(settings)) then
    return '[]'::jsonb;
  end if;
  perform ops_internal.enqueue_notifications();
  max_attempts := ops_internal.notification_setting(settings, 'max_attempts');
  perform ops_internal.reap_notifications(max_attempts);
  -- Long enough for every item of the batch to be sent one after the other with the deliverer's timeouts.
  lease := pg_catalog.make_interval(secs => 30 + 15 * wanted);

  for target in select * from ops_internal.notification_sinks(settings) loop
    exit when pg_catalog.jsonb_array_length(claimed) >= wanted;
    select c.* into cursor_row from public.ops_notification_cursors c
     where c.sink = target.name for update skip locked;
    continue when not found or cursor_row.paused_until > pg_catalog.now();
    allowed := wanted - pg_catalog.jsonb_array_length(claimed);
    if target.per_minute is not null then
      -- Token bucket (GCRA): up to per_minute at once, then one every 60 / per_minute seconds.
      spacing := pg_catalog.make_interval(secs => 60.0 / target.per_minute);
      tat := greatest(coalesce(cursor_row.rate_tat, pg_catalog.now()), pg_catalog.now());
      allowed := least(allowed, pg_catalog.floor(
        extract(epoch from pg_catalog.now() + interval '1 minute' - tat) / extract(epoch from spacing) + 1e-9)::integer);
      continue when allowed <= 0;
    end if;

    with picked as (
      select x.id from public.ops_notifications x
       where x.sink = target.name and x.attempts < max_attempts
         and ((x.status = 'pending' and x.next_attempt_at <= pg_catalog.now())
              or (x.status = 'sending' and x.lease_expires_at < pg_catalog.now()))
         and exists (select 1 from public.ops_agent_events e where e.id = x.event_id)
       order by x.next_attempt_at, x.id
       limit allowed
       for update skip locked
    ), updated as (
      update public.ops_notifications n
         set status = 'sending', attempts = n.attempts + 1, claimed_by = who, claimed_at = pg_catalog.now(),
             lease_expires_at = pg_catalog.now() + lease
        from picked
       where n.id = picked.id
      returning n.*
    )
    select coalesce(pg_catalog.jsonb_agg(ops_internal.claimed_notification(u, target.format, target.url_env)
                                         order by u.id), '[]'::jsonb),
           pg_catalog.count(*)::integer
      into batch, taken
      from updated u;

    if taken > 0 then
      claimed := claimed || batch;
      if target.per_minute is not null then
        update public.ops_notification_cursors c set rate_tat = tat + spacing * taken where c.sink = target.name;
      end if;
    end if;
  end loop;
  return claimed;
end;
$$;

revoke execute on function public.ops_claim_notifications(text, integer) from public, anon, authenticated;
grant execute on function public.ops_claim_notifications(text, integer) to service_role;

create or replace function public.ops_report_notification(
  id bigint, attempt integer, delivered boolean, http_status integer default null, error text default null,
  retry_after_seconds integer default null)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  message text := nullif(pg_catalog.btrim(pg_catalog.left(ops_report_notification.error, 2000)), '');
  status_code integer := ops_report_notification.http_status;
  retry_after integer := ops_report_notification.retry_after_seconds;
  settings jsonb := ops_internal.policy('notifications');
  outbox public.ops_notifications;
  delay interval;
begin
  if ops_report_notification.id is null then
    perform ops_internal.invalid('id is required');
  end if;
  if ops_report_notification.attempt is null or ops_report_notification.attempt < 1 then
    perform ops_internal.invalid('attempt must be a positive integer (the attempt the claim handed out)');
  end if;
  if ops_report_notification.delivered is null then
    perform ops_internal.invalid('delivered is required (true or false)');
  end if;
  if status_code is not null and status_code not between 100 and 599 then
    perform ops_internal.invalid('http_status must be from 100 to 599');
  end if;
  if retry_after is not null and retry_after not between 0 and 86400 then
    perform ops_internal.invalid('retry_after_seconds must be from 0 to 86400');
  end if;
  if not ops_report_notification.delivered and message is null and status_code is null then
    perform ops_internal.invalid('error or http_status is required when delivered is false');
  end if;

  select n.* into outbox from public.ops_notifications n where n.id = ops_report_notification.id for update;
  if not found then
    perform ops_internal.not_found(pg_catalog.format('notification %s not found', ops_report_notification.id));
  end if;
  if outbox.attempts = ops_report_notification.attempt and outbox.status <> 'sending' then
    return ops_internal.notification_report(outbox, true);
  end if;
  if outbox.status <> 'sending' or outbox.attempts <> ops_report_notification.attempt then
    perform ops_internal.conflict(
      pg_catalog.format('notification %s attempt %s is stale: the notification is %s at attempt %s', outbox.id,
        ops_report_notification.attempt, outbox.status, outbox.attempts),
      'only the attempt of the latest claim may report (a lease that expired was claimed again): drop this report');
  end if;

  if ops_report_notification.delivered then
    update public.ops_notifications n
       set status = 'sent', sent_at = pg_catalog.now(), lease_expires_at = null, last_status = status_code,
           last_error = null
     where n.id = outbox.id
    returning n.* into outbox;
  elsif (status_code between 400 and 499 and status_code not in (408, 425, 429))
        or outbox.attempts >= ops_internal.notification_setting(settings, 'max_attempts') then
    update public.ops_notifications n
       set status = 'dead', dead_at = pg_catalog.now(), lease_expires_at = null, last_status = status_code,
           last_error = coalesce(message, 'HTTP ' || status_code)
     where n.id = outbox.id
    returning n.* into outbox;
    perform ops_internal.notification_dead(outbox);
  else
    delay := pg_catalog.make_interval(secs => coalesce(retry_after, least(3600, 10 * 2 ^ (outbox.attempts - 1))));
    update public.ops_notifications n
       set status = 'pending', next_attempt_at = pg_catalog.now() + delay, lease_expires_at = null,
           last_status = status_code, last_error = coalesce(message, 'HTTP ' || status_code)
     where n.id = outbox.id
    returning n.* into outbox;
    if status_code = 429 then
      update public.ops_notification_cursors c
         set paused_until = greatest(coalesce(c.paused_until, pg_catalog.now()), pg_catalog.now() + delay)
       where c.sink = outbox.sink;
    end if;
  end if;
  return ops_internal.notification_report(outbox, false);
end;
$$;

revoke execute on function public.ops_report_notification(bigint, integer, boolean, integer, text, integer)
  from public, anon, authenticated;
grant execute on function public.ops_report_notification(bigint, integer, boolean, integer, text, integer)
  to service_role;
