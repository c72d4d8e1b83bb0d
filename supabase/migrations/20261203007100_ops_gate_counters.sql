-- Gate counters: the counting gates read a few counter rows instead of counting today's rows (issue 15).
--
-- Each counting gate used to count rows on every proposal: the kind quota and content_policy gates joined
-- today's steps to their missions (1,446 buffers a proposal once a kind's quota is large), the daily limit
-- counted the agent's proposals, max_active_missions the approved and running missions. Now
-- public.ops_gate_counters holds those numbers per gate, key and UTC day, maintained by triggers in the
-- transaction that writes the rows they count, so a gate reads them at a cost that no longer grows with the
-- rows counted:
--   daily_proposals  key: agent id   proposals not rejected, by the UTC day they were created
--   kind_steps       key: step kind  steps in missions not cancelled, by the UTC day they were created
--                                    (content_policy.max_drafts_per_day sums the content kinds' counters)
--   active_missions  key: '*'        missions approved or running (day is -infinity: not per day)
-- A counter is the sum of its rows (`used`, which may be negative in one row); only today's and later days'
-- rows are maintained, which is all a gate reads (created_at >= today's UTC midnight, as before).
--
-- The race protocol is unchanged (20261125001300): a gate reads its counter without a lock and, only when
-- concurrent transactions could still carry it past the quota (ops_internal.near_quota), takes the gate's
-- advisory lock and reads again. The counter rows are written in the same transaction as the rows they
-- count and committed with them, so the second read, in a new snapshot after the lock holder committed,
-- sees its rows exactly as the count did.
--
-- Hot keys: every proposal of a kind changes the same counter, and a counter row stays locked until its
-- writer commits. A writer therefore takes the first row of the counter that no other transaction holds
-- (FOR UPDATE SKIP LOCKED) and, when every row is held, adds a row of its own (shard = its transaction id,
-- which no other transaction can insert). A counter write never waits for a lock: intake is not serialized
-- by its counters, and no new lock order (hence no deadlock) exists. A counter has at most as many rows as
-- transactions ever held it at once. Retention: when a counter adds a row (its first of a day, or one more
-- under contention), it deletes its own rows older than the day before yesterday; nothing else is involved.
--
-- Maintenance: statement-level triggers with transition tables on inserts and status changes (proposals:
-- to or from rejected; missions: into or out of approved/running, and cancellation, which takes that
-- mission's steps out of the kind counters of the day they were created, or back in), deletes (the step
-- counters of deleted steps are recounted, since a cascade has deleted their mission by then) and TRUNCATE
-- (the table's counters go); a row-level trigger covers the rare edit of a step's kind, created_at or
-- mission. ops_internal.reconcile_gate_counters() recounts every maintained counter from the rows (the
-- backfill at the end of this migration).

create table public.ops_gate_counters (
  gate  text   not null,
  key   text   not null,
  day   date   not null,
  shard bigint not null,
  used  bigint not null default 0,

  primary key (gate, key, day, shard),
  constraint ops_gate_counters_gate_check check (gate in ('daily_proposals', 'kind_steps', 'active_missions'))
);

comment on table public.ops_gate_counters is
  'What the counting gates count, per gate, key and UTC day, kept by triggers with the rows they count: '
  'daily_proposals (agent: proposals not rejected), kind_steps (step kind: steps in missions not cancelled), '
  'active_missions (*: approved or running, day -infinity). A counter is the sum of used over its shards.';
comment on column public.ops_gate_counters.shard is
  'A row of the counter: writers take a row no other transaction holds, or add one (their transaction id).';

alter table public.ops_gate_counters enable row level security;
revoke all on table public.ops_gate_counters from public, anon, authenticated, service_role;
grant select on table public.ops_gate_counters to service_role;

-- Today's UTC date (the day of ops_internal.utc_day_start()).
create or replace function ops_internal.utc_today()
returns date
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select (pg_catalog.now() at time zone 'UTC')::date;
$$;

-- Add amounts[i] to counter (gates[i], keys[i], days[i]); never waits for a row lock (see the header). One
-- statement per counter with scalar parameters, so each keeps one cached plan.
create or replace function ops_internal.add_gate_counts(gates text[], keys text[], days date[], amounts bigint[])
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  for i in 1..coalesce(pg_catalog.array_length(gates, 1), 0) loop
    continue when amounts[i] = 0;
    update public.ops_gate_counters c
       set used = c.used + amounts[i]
     where (c.gate, c.key, c.day, c.shard) = (
       select o.gate, o.key, o.day, o.shard from public.ops_gate_counters o
        where o.gate = gates[i] and o.key = keys[i] and o.day = days[i]
        order by o.shard limit 1 for update skip locked);
    continue when found;
    insert into public.ops_gate_counters as c (gate, key, day, shard, used)
    values (gates[i], keys[i], days[i], pg_catalog.pg_current_xact_id()::text::bigint, amounts[i])
    on conflict (gate, key, day, shard) do update set used = c.used + excluded.used;
    delete from public.ops_gate_counters c
     where (c.gate, c.key, c.day, c.shard) in (
       select o.gate, o.key, o.day, o.shard from public.ops_gate_counters o
        where o.gate = gates[i] and o.key = keys[i] and o.day > '-infinity'::date
          and o.day < ops_internal.utc_today() - 2
          for update skip locked);
  end loop;
end;
$$;

-- Every maintained counter as the rows say (the queries the gates ran before this migration), today's and
-- later days' per key, and the active missions.
create or replace function ops_internal.exact_gate_counts()
returns table (gate text, key text, day date, used bigint)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select 'daily_proposals', p.agent_id, (p.created_at at time zone 'UTC')::date, pg_catalog.count(*)
    from public.ops_mission_proposals p
   where p.created_at >= ops_internal.utc_day_start() and p.status <> 'rejected'
   group by 2, 3
  union all
  select 'kind_steps', s.kind, (s.created_at at time zone 'UTC')::date, pg_catalog.count(*)
    from public.ops_mission_steps s
    join public.ops_missions m on m.id = s.mission_id
   where s.created_at >= ops_internal.utc_day_start() and m.status <> 'cancelled'
   group by 2, 3
  union all
  select 'active_missions', '*', '-infinity'::date, pg_catalog.count(*)
    from public.ops_missions m
   where m.status in ('approved', 'running');
$$;

-- Recount every maintained counter and correct those that differ; returns how many were corrected. The
-- counts and the counters are read in one snapshot, so transactions in flight (whose rows and counter
-- changes it sees neither of) are not disturbed. The backfill below; also a repair.
create or replace function ops_internal.reconcile_gate_counters()
returns bigint
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  gates text[];
  keys text[];
  days date[];
  amounts bigint[];
begin
  select pg_catalog.array_agg(coalesce(e.gate, c.gate)), pg_catalog.array_agg(coalesce(e.key, c.key)),
         pg_catalog.array_agg(coalesce(e.day, c.day)), pg_catalog.array_agg(coalesce(e.used, 0) - coalesce(c.used, 0))
    into gates, keys, days, amounts
    from ops_internal.exact_gate_counts() as e
    full join (select g.gate, g.key, g.day, pg_catalog.sum(g.used)::bigint as used
                 from public.ops_gate_counters g
                where g.day >= ops_internal.utc_today() or g.gate = 'active_missions'
                group by g.gate, g.key, g.day) as c
      on c.gate = e.gate and c.key = e.key and c.day = e.day
   where coalesce(e.used, 0) <> coalesce(c.used, 0);
  if gates is null then
    return 0;
  end if;
  perform ops_internal.add_gate_counts(gates, keys, days, amounts);
  return pg_catalog.cardinality(gates);
end;
$$;

-- Proposals, INSERT and UPDATE: the old rows' share of daily_proposals out, the new rows' in.
create or replace function ops_internal.gate_counts_proposals()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  day_start timestamptz := ops_internal.utc_day_start();
  keys text[];
  days date[];
  amounts bigint[];
begin
  if tg_op = 'INSERT' then
    select pg_catalog.array_agg(d.agent_id), pg_catalog.array_agg(d.day), pg_catalog.array_agg(d.amount)
      into keys, days, amounts
      from (select n.agent_id, (n.created_at at time zone 'UTC')::date as day, pg_catalog.count(*) as amount
              from ops_internal_new_rows n
             where n.status <> 'rejected' and n.created_at >= day_start
             group by 1, 2) as d;
  else
    select pg_catalog.array_agg(d.agent_id), pg_catalog.array_agg(d.day), pg_catalog.array_agg(d.amount)
      into keys, days, amounts
      from (select r.agent_id, (r.created_at at time zone 'UTC')::date as day, pg_catalog.sum(r.amount)::bigint as amount
              from (select n.agent_id, n.created_at, 1 as amount from ops_internal_new_rows n
                     where n.status <> 'rejected' and n.created_at >= day_start
                    union all
                    select o.agent_id, o.created_at, -1 from ops_internal_old_rows o
                     where o.status <> 'rejected' and o.created_at >= day_start) as r
             group by 1, 2
            having pg_catalog.sum(r.amount) <> 0) as d;
  end if;
  if keys is not null then
    perform ops_internal.add_gate_counts(
      pg_catalog.array_fill('daily_proposals'::text, array[pg_catalog.cardinality(keys)]), keys, days, amounts);
  end if;
  return null;
end;
$$;

create or replace function ops_internal.gate_counts_proposals_deleted()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  keys text[];
  days date[];
  amounts bigint[];
begin
  select pg_catalog.array_agg(d.agent_id), pg_catalog.array_agg(d.day), pg_catalog.array_agg(d.amount)
    into keys, days, amounts
    from (select o.agent_id, (o.created_at at time zone 'UTC')::date as day, -pg_catalog.count(*) as amount
            from ops_internal_old_rows o
           where o.status <> 'rejected' and o.created_at >= ops_internal.utc_day_start()
           group by 1, 2) as d;
  if keys is not null then
    perform ops_internal.add_gate_counts(
      pg_catalog.array_fill('daily_proposals'::text, array[pg_catalog.cardinality(keys)]), keys, days, amounts);
  end if;
  return null;
end;
$$;

-- Missions, INSERT and UPDATE: active_missions, and (UPDATE) the steps of missions cancelled, or taken out of
-- cancelled, out of or back into the counters of their kinds and days.
create or replace function ops_internal.gate_counts_missions()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  active bigint := (select pg_catalog.count(*) from ops_internal_new_rows n where n.status in ('approved', 'running'));
  keys text[];
  days date[];
  amounts bigint[];
begin
  if tg_op = 'UPDATE' then
    active := active - (select pg_catalog.count(*) from ops_internal_old_rows o where o.status in ('approved', 'running'));
    select pg_catalog.array_agg(d.kind), pg_catalog.array_agg(d.day), pg_catalog.array_agg(d.amount)
      into keys, days, amounts
      from (select s.kind, (s.created_at at time zone 'UTC')::date as day,
                   pg_catalog.sum(case when n.status = 'cancelled' then -1 else 1 end)::bigint as amount
              from ops_internal_new_rows n
              join ops_internal_old_rows o on o.id = n.id
              join public.ops_mission_steps s on s.mission_id = n.id
             where (n.status = 'cancelled') <> (o.status = 'cancelled')
               and s.created_at >= ops_internal.utc_day_start()
             group by 1, 2
            having pg_catalog.sum(case when n.status = 'cancelled' then -1 else 1 end) <> 0) as d;
    if keys is not null then
      perform ops_internal.add_gate_counts(
        pg_catalog.array_fill('kind_steps'::text, array[pg_catalog.cardinality(keys)]), keys, days, amounts);
    end if;
  end if;
  if active <> 0 then
    perform ops_internal.add_gate_counts(array['active_missions'], array['*'], array['-infinity'::date], array[active]);
  end if;
  return null;
end;
$$;

-- Missions, DELETE: active_missions. (Their steps go by the cascade, whose own trigger recounts them.)
create or replace function ops_internal.gate_counts_missions_deleted()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  active bigint := (select pg_catalog.count(*) from ops_internal_old_rows o where o.status in ('approved', 'running'));
begin
  if active <> 0 then
    perform ops_internal.add_gate_counts(array['active_missions'], array['*'], array['-infinity'::date], array[-active]);
  end if;
  return null;
end;
$$;

-- Steps, INSERT: kind_steps of the new steps whose mission is not cancelled.
create or replace function ops_internal.gate_counts_steps()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  keys text[];
  days date[];
  amounts bigint[];
begin
  select pg_catalog.array_agg(d.kind), pg_catalog.array_agg(d.day), pg_catalog.array_agg(d.amount)
    into keys, days, amounts
    from (select n.kind, (n.created_at at time zone 'UTC')::date as day, pg_catalog.count(*) as amount
            from ops_internal_new_rows n
            join public.ops_missions m on m.id = n.mission_id
           where n.created_at >= ops_internal.utc_day_start() and m.status <> 'cancelled'
           group by 1, 2) as d;
  if keys is not null then
    perform ops_internal.add_gate_counts(pg_catalog.array_fill('kind_steps'::text, array[pg_catalog.cardinality(keys)]),
      keys, days, amounts);
  end if;
  return null;
end;
$$;

-- Steps, DELETE: the counters of the deleted steps' kinds and days are recounted. Whether a deleted step
-- counted depends on its mission, which a cascade has already deleted; deleting today's steps is rare (the
-- retention only deletes finished history), so the few counters involved are counted again instead.
create or replace function ops_internal.gate_counts_steps_deleted()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  day_start timestamptz := ops_internal.utc_day_start();
  keys text[];
  days date[];
  amounts bigint[];
begin
  if not exists (select from ops_internal_old_rows o where o.created_at >= day_start) then
    return null;
  end if;
  select pg_catalog.array_agg(k.kind), pg_catalog.array_agg(k.day), pg_catalog.array_agg(e.used - c.used)
    into keys, days, amounts
    from (select distinct o.kind, (o.created_at at time zone 'UTC')::date as day
            from ops_internal_old_rows o where o.created_at >= day_start) as k
   cross join lateral (
     select pg_catalog.count(*) as used
       from public.ops_mission_steps s
       join public.ops_missions m on m.id = s.mission_id
      where s.kind = k.kind and s.created_at >= (k.day::timestamp at time zone 'UTC')
        and s.created_at < ((k.day + 1)::timestamp at time zone 'UTC') and m.status <> 'cancelled') as e
   cross join lateral (
     select coalesce(pg_catalog.sum(g.used), 0)::bigint as used
       from public.ops_gate_counters g
      where g.gate = 'kind_steps' and g.key = k.kind and g.day = k.day) as c
   where e.used <> c.used;
  if keys is not null then
    perform ops_internal.add_gate_counts(pg_catalog.array_fill('kind_steps'::text, array[pg_catalog.cardinality(keys)]),
      keys, days, amounts);
  end if;
  return null;
end;
$$;

-- Steps, UPDATE of kind, created_at or mission_id (row level; nothing in the API does it): out of the old
-- key, into the new one.
create or replace function ops_internal.gate_counts_step_moved()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  keys text[];
  days date[];
  amounts bigint[];
begin
  select pg_catalog.array_agg(v.kind), pg_catalog.array_agg((v.created_at at time zone 'UTC')::date),
         pg_catalog.array_agg(v.amount)
    into keys, days, amounts
    from (values (old.kind, old.created_at, old.mission_id, -1::bigint),
                 (new.kind, new.created_at, new.mission_id, 1::bigint)) as v(kind, created_at, mission_id, amount)
    join public.ops_missions m on m.id = v.mission_id
   where v.created_at >= ops_internal.utc_day_start() and m.status <> 'cancelled';
  if keys is not null then
    perform ops_internal.add_gate_counts(pg_catalog.array_fill('kind_steps'::text, array[pg_catalog.cardinality(keys)]),
      keys, days, amounts);
  end if;
  return null;
end;
$$;

-- TRUNCATE: the counters of what the table held go (TRUNCATE waits for every writer of the table, so no
-- transaction holds one of these counter rows).
create or replace function ops_internal.gate_counts_truncated()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  delete from public.ops_gate_counters c
   where c.gate = case tg_table_name when 'ops_mission_proposals' then 'daily_proposals'
                                     when 'ops_missions' then 'active_missions'
                                     else 'kind_steps' end;
  return null;
end;
$$;

create trigger ops_mission_proposals_insert_gate_counts
  after insert on public.ops_mission_proposals
  referencing new table as ops_internal_new_rows
  for each statement execute function ops_internal.gate_counts_proposals();
create trigger ops_mission_proposals_update_gate_counts
  after update on public.ops_mission_proposals
  referencing old table as ops_internal_old_rows new table as ops_internal_new_rows
  for each statement execute function ops_internal.gate_counts_proposals();
create trigger ops_mission_proposals_delete_gate_counts
  after delete on public.ops_mission_proposals
  referencing old table as ops_internal_old_rows
  for each statement execute function ops_internal.gate_counts_proposals_deleted();
create trigger ops_mission_proposals_truncate_gate_counts
  after truncate on public.ops_mission_proposals
  for each statement execute function ops_internal.gate_counts_truncated();

create trigger ops_missions_insert_gate_counts
  after insert on public.ops_missions
  referencing new table as ops_internal_new_rows
  for each statement execute function ops_internal.gate_counts_missions();
create trigger ops_missions_update_gate_counts
  after update on public.ops_missions
  referencing old table as ops_internal_old_rows new table as ops_internal_new_rows
  for each statement execute function ops_internal.gate_counts_missions();
create trigger ops_missions_delete_gate_counts
  after delete on public.ops_missions
  referencing old table as ops_internal_old_rows
  for each statement execute function ops_internal.gate_counts_missions_deleted();
create trigger ops_missions_truncate_gate_counts
  after truncate on public.ops_missions
  for each statement execute function ops_internal.gate_counts_truncated();

create trigger ops_mission_steps_insert_gate_counts
  after insert on public.ops_mission_steps
  referencing new table as ops_internal_new_rows
  for each statement execute function ops_internal.gate_counts_steps();
create trigger ops_mission_steps_delete_gate_counts
  after delete on public.ops_mission_steps
  referencing old table as ops_internal_old_rows
  for each statement execute function ops_internal.gate_counts_steps_deleted();
create trigger ops_mission_steps_move_gate_counts
  after update of kind, created_at, mission_id on public.ops_mission_steps
  for each row
  when (old.kind is distinct from new.kind or old.created_at is distinct from new.created_at
        or old.mission_id is distinct from new.mission_id)
  execute function ops_internal.gate_counts_step_moved();
create trigger ops_mission_steps_truncate_gate_counts
  after truncate on public.ops_mission_steps
  for each statement execute function ops_internal.gate_counts_truncated();

-- The gates, reading counters; the queries they replace are in ops_internal.exact_gate_counts(). Messages,
-- order and locks as before.
create or replace function ops_internal.gate_daily_proposals(agent_id text)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  daily jsonb := ops_internal.policy('daily_proposal_limit');
  quota bigint := coalesce((daily -> 'per_agent' ->> gate_daily_proposals.agent_id)::bigint, (daily ->> 'limit')::bigint);
  today date := ops_internal.utc_today();
  used bigint;
begin
  if quota is null then
    return null;
  end if;
  for attempt in 1..2 loop
    select coalesce(pg_catalog.sum(c.used), 0)::bigint into used
      from public.ops_gate_counters c
     where c.gate = 'daily_proposals' and c.key = gate_daily_proposals.agent_id and c.day >= today;
    exit when attempt = 2 or not ops_internal.near_quota(used, 1, quota, 1);
    perform ops_internal.lock('daily_proposals:' || gate_daily_proposals.agent_id);  -- then read again
  end loop;
  if used >= quota then
    return pg_catalog.format('daily proposal limit reached for %s (%s/%s)', gate_daily_proposals.agent_id, used, quota);
  end if;
  return null;
end;
$$;

create or replace function ops_internal.gate_kind_quotas(kinds text[])
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  gates jsonb := ops_internal.policy('step_kind_gates');
  today date := ops_internal.utc_today();
  gated_kind text;
  quota bigint;
  used bigint;
  wanted bigint;
begin
  for gated_kind in
    select distinct k from pg_catalog.unnest(kinds) as k
     where ops_internal.kind_daily_limit(gates, k) is not null order by 1
  loop
    quota := ops_internal.kind_daily_limit(gates, gated_kind);
    select pg_catalog.count(*) into wanted from pg_catalog.unnest(kinds) as k where k = gated_kind;
    for attempt in 1..2 loop
      select coalesce(pg_catalog.sum(c.used), 0)::bigint into used
        from public.ops_gate_counters c
       where c.gate = 'kind_steps' and c.key = gated_kind and c.day >= today;
      -- A proposal holds at most 50 steps.
      exit when attempt = 2 or not ops_internal.near_quota(used, wanted, quota, 50);
      perform ops_internal.lock('step_kind_quota:' || gated_kind);  -- then read again
    end loop;
    if used + wanted > quota then
      return pg_catalog.format('daily quota for %s reached (%s/%s used today, this proposal needs %s)',
        gated_kind, used, quota, wanted);
    end if;
  end loop;
  return null;
end;
$$;

create or replace function ops_internal.gate_content_drafts(kinds text[])
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  quota bigint := (ops_internal.policy('content_policy') ->> 'max_drafts_per_day')::bigint;
  wanted bigint := (select pg_catalog.count(*) from pg_catalog.unnest(kinds) as k
                     where k = any (ops_internal.content_kinds()));
  today date := ops_internal.utc_today();
  used bigint;
begin
  if quota is null or wanted = 0 then
    return null;
  end if;
  for attempt in 1..2 loop
    select coalesce(pg_catalog.sum(c.used), 0)::bigint into used
      from public.ops_gate_counters c
     where c.gate = 'kind_steps' and c.key = any (ops_internal.content_kinds()) and c.day >= today;
    exit when attempt = 2 or not ops_internal.near_quota(used, wanted, quota, 50);
    perform ops_internal.lock('content_drafts');  -- then read again
  end loop;
  if used + wanted > quota then
    return pg_catalog.format(
      'content_policy.max_drafts_per_day reached (%s/%s content steps today, this proposal needs %s)',
      used, quota, wanted);
  end if;
  return null;
end;
$$;

create or replace function ops_internal.gate_active_missions()
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  quota bigint := (ops_internal.policy('max_active_missions') ->> 'limit')::bigint;
  used bigint;
begin
  if quota is null then
    return null;
  end if;
  for attempt in 1..2 loop
    select coalesce(pg_catalog.sum(c.used), 0)::bigint into used
      from public.ops_gate_counters c
     where c.gate = 'active_missions' and c.key = '*' and c.day = '-infinity'::date;
    exit when attempt = 2 or not ops_internal.near_quota(used, 1, quota, 1);
    perform ops_internal.lock('active_missions');  -- then read again
  end loop;
  if used >= quota then
    return pg_catalog.format('too many active missions (%s/%s)', used, quota);
  end if;
  return null;
end;
$$;

-- Backfill: the triggers above already count every write that commits after this migration (creating them
-- waited for the writers in flight); the rows already there are counted now.
select ops_internal.reconcile_gate_counters();

select ops_internal.revoke_api_execute();
