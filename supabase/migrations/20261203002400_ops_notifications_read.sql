-- Reading the notification outbox, for the console's health page and `agent-ops notify --list`: newest
-- first, optionally one status (dead-letters: status => 'dead'). Never shows a URL: there is none here.

create or replace function public.ops_list_notifications(status text default null, max_rows integer default 50)
returns jsonb
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  wanted text := ops_list_notifications.status;
  rows_wanted integer := ops_internal.check_max_rows(ops_list_notifications.max_rows);
begin
  if wanted is not null and wanted not in ('pending', 'sending', 'sent', 'dead') then
    perform ops_internal.invalid('status must be one of: pending, sending, sent, dead');
  end if;
  return (
    select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
             'id', n.id, 'sink', n.sink, 'status', n.status, 'attempts', n.attempts,
             'event_id', n.event_id, 'event_type', n.event_type, 'matched', n.matched,
             'event_title', (select e.title from public.ops_agent_events e where e.id = n.event_id),
             'idempotency_key', 'agent-ops-' || n.id,
             'next_attempt_at', case when n.status = 'pending' then n.next_attempt_at end,
             'lease_expires_at', n.lease_expires_at, 'claimed_by', n.claimed_by, 'claimed_at', n.claimed_at,
             'last_status', n.last_status, 'last_error', n.last_error,
             'created_at', n.created_at, 'updated_at', n.updated_at, 'sent_at', n.sent_at, 'dead_at', n.dead_at)
             order by n.id desc), '[]'::jsonb)
      from (select x.* from public.ops_notifications x
             where wanted is null or x.status = wanted
             order by x.id desc
             limit rows_wanted) as n);
end;
$$;

revoke execute on function public.ops_list_notifications(text, integer) from public, anon, authenticated;
grant execute on function public.ops_list_notifications(text, integer) to service_role;
