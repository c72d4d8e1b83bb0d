-- Filling the notification outbox: for each sink, the events after its cursor that it wants become rows of
-- ops_notifications (at most one per sink and event), a bounded batch per call. The heartbeat calls
-- ops_internal.enqueue_notifications() as one of its tasks and ops_claim_notifications calls it before it
-- claims, so a deliverer that polls every few seconds does not wait for the next heartbeat.
--
-- The cursor must never step over an event that commits late. Event ids are drawn when a row is inserted,
-- not when its transaction commits, so a scan can see event 101 while event 100 is still in flight; a
-- cursor moved to 101 would lose 100 for good. So the cursor moves only over ids known to be settled:
--   * a run of consecutive ids right after it (each id is drawn once: a visible id is not in flight);
--   * the ids up to a *hold*. Where a scan leaves a gap, the sink takes a hold on the ids up to the newest
--     it saw; 5 minutes later (hold_seconds) the ids still missing below the hold are taken for those of
--     rolled-back transactions (or of a crash's sequence jump) and the cursor passes them. No transaction
--     of the loop holds an event for minutes (the heartbeat's budgets are seconds); one that drew an event
--     id and committed more than 5 minutes later would not be notified.
-- Events after a gap are enqueued at once all the same (every scan starts at the cursor and the unique
-- (sink, event_id) drops the repeats), so a gap delays the cursor, never a notification, as long as fewer
-- than `batch` events arrive while it is held.
--
-- Loops: an event about a notification (notification:dead) is never enqueued for the sink it is about, and
-- a dead-lettered notification:* event emits nothing more (ops_internal.notification_dead), so a failing sink
-- cannot notify itself, or two failing sinks each other, without end.
--
-- Retention: sent and dead rows older than retain_days (default 7) are pruned here, in capped batches, with
-- rows still pending for a sink that no longer receives notifications.

create or replace function ops_internal.prune_notifications(settings jsonb)
returns integer
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  cutoff timestamptz := pg_catalog.now()
    - pg_catalog.make_interval(days => ops_internal.notification_setting(settings, 'retain_days'));
  batch integer := coalesce((ops_internal.policy('retention') ->> 'batch_size')::integer, 5000);
  active text[] := array(select s.name from ops_internal.notification_sinks(settings) s);
  pruned integer;
begin
  delete from public.ops_notifications n
   where n.id in (
     (select x.id from public.ops_notifications x
       where x.status = 'sent' and x.sent_at < cutoff order by x.sent_at limit batch)
     union all
     (select x.id from public.ops_notifications x
       where x.status = 'dead' and x.dead_at < cutoff order by x.dead_at limit batch)
     union all
     (select x.id from public.ops_notifications x
       where x.status in ('pending', 'sending') and x.created_at < cutoff and x.sink <> all (active)
       order by x.id limit batch));
  get diagnostics pruned = row_count;
  return pruned;
end;
$$;

create or replace function ops_internal.enqueue_notifications()
returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  settings jsonb := ops_internal.policy('notifications');
  batch constant integer := 2000;  -- events considered per sink and call
  hold_seconds constant integer := 300;
  target record;
  cursor_row public.ops_notification_cursors;
  ids bigint[];
  added integer;
  top bigint;
  base bigint;
  settled bigint;
  hold_expired boolean;
  total integer := 0;
  per_sink jsonb := '{}'::jsonb;
  busy text[] := '{}'::text[];
  result jsonb;
begin
  for target in select * from ops_internal.notification_sinks(settings) loop
    select c.* into cursor_row from public.ops_notification_cursors c
     where c.sink = target.name for update skip locked;
    if not found then
      -- Held by a concurrent call (it does this sink's work), or missing: start at the newest event.
      if exists (select 1 from public.ops_notification_cursors c where c.sink = target.name) then
        busy := busy || target.name;
      else
        insert into public.ops_notification_cursors (sink, last_event_id)
        values (target.name, ops_internal.newest_event_id())
        on conflict (sink) do nothing;
      end if;
      continue;
    end if;

    -- One statement, one snapshot: what is matched and what the cursor may pass are the same rows.
    with scanned as (
      select e.id, e.type, e.tags, e.proposal_id, e.payload from public.ops_agent_events e
       where e.id > cursor_row.last_event_id
       order by e.id
       limit batch
    ), wanted as (
      select s.id, s.type,
             case when s.type = any (target.types) then 'type'
                  when s.tags && target.tags then 'tag'
                  else 'proposal:pending' end as why
        from scanned s
       where (s.type = any (target.types)
              or s.tags && target.tags
              or ('proposal:pending' = any (target.types) and s.type = 'proposal:created'
                  and exists (select 1 from public.ops_mission_proposals p
                               where p.id = s.proposal_id and p.status = 'pending')))
         and not (pg_catalog.split_part(s.type, ':', 1) = 'notification' and s.payload ->> 'sink' = target.name)
    ), inserted as (
      insert into public.ops_notifications (sink, event_id, event_type, matched)
      select target.name, w.id, w.type, w.why from wanted w order by w.id
      on conflict on constraint ops_notifications_sink_event_key do nothing
      returning 1
    )
    select coalesce(pg_catalog.array_agg(s.id order by s.id), '{}'::bigint[]),
           (select pg_catalog.count(*)::integer from inserted)
      into ids, added
      from scanned s;

    top := coalesce(ids[pg_catalog.array_length(ids, 1)], cursor_row.last_event_id);
    hold_expired := cursor_row.hold_at <= pg_catalog.now() - pg_catalog.make_interval(secs => hold_seconds);
    base := cursor_row.last_event_id;
    if hold_expired then
      base := greatest(base, least(cursor_row.hold_event_id, top));
    end if;
    -- The run of consecutive ids right above base.
    select coalesce(pg_catalog.max(r.id), base) into settled
      from (select u.id, u.id - pg_catalog.row_number() over (order by u.id) as run
              from pg_catalog.unnest(ids) as u(id) where u.id > base) as r
     where r.run = base;

    if hold_expired and cursor_row.hold_event_id > settled then
      -- The scan stopped below the hold: the (expired) hold stays and lets the next call go on.
      update public.ops_notification_cursors c set last_event_id = settled where c.sink = target.name;
    elsif settled < top then
      -- A gap is left: hold the ids up to the newest seen, unless a hold is already running.
      update public.ops_notification_cursors c
         set last_event_id = settled,
             hold_event_id = case when c.hold_at is null or hold_expired then top else c.hold_event_id end,
             hold_at = case when c.hold_at is null or hold_expired then pg_catalog.now() else c.hold_at end
       where c.sink = target.name;
    elsif settled <> cursor_row.last_event_id or cursor_row.hold_at is not null then
      update public.ops_notification_cursors c
         set last_event_id = settled, hold_event_id = null, hold_at = null
       where c.sink = target.name;
    end if;

    total := total + added;
    per_sink := per_sink || pg_catalog.jsonb_build_object(target.name, added);
  end loop;

  result := pg_catalog.jsonb_build_object('enqueued', total, 'sinks', per_sink,
    'pruned', ops_internal.prune_notifications(settings));
  if pg_catalog.cardinality(busy) > 0 then
    result := result || pg_catalog.jsonb_build_object('busy', pg_catalog.to_jsonb(busy));
  end if;
  return result;
end;
$$;

select ops_internal.revoke_api_execute();
