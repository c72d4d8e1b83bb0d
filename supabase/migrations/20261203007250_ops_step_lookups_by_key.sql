-- Step lookups by key, whatever the size of the table.
--
-- The claim's UPDATE joined its picked rows (`limit batch`: a generic plan estimates a tenth of the queued
-- steps) and the batch reports joined their jsonb_to_recordset rows (estimated at 100) to ops_mission_steps.
-- On a table of a few thousand to a few hundred thousand steps the planner preferred a hash join over a
-- sequential scan of the whole table to that many index probes: every claim and every batch report read
-- every step (141 buffers and 2-5 ms per statement at 9,000 steps, four such statements in one
-- ops_report_and_claim), while the same statements on a table of a million steps, or with one row, used the
-- primary key. Each lookup now goes through the primary key by construction: the claim updates
-- `id = any (array(picked ids))`, the reports' updates add the same condition, and the reports' answers read
-- each step with a lateral subquery (`offset 0` keeps the planner from flattening it back into a join).
-- The two claim functions become plpgsql, whose statements keep their plans for the session: a SQL function
-- that cannot be inlined (it sets search_path) plans its UPDATE again on every call, about as long as a
-- one-step claim takes to run. Same rows, same locks, same order of locking, same results.

create or replace function ops_internal.claim_steps(
  worker text, kinds text[], batch integer, lease integer, worker_policy jsonb)
returns setof public.ops_mission_steps
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
  with picked as (
    select c.id
      from pg_catalog.unnest(kinds) as k(kind)
     cross join lateral (
       select s.id, s.priority, s.run_after from public.ops_mission_steps s
        where s.status = 'queued' and s.kind = k.kind and s.run_after <= pg_catalog.now()
        order by s.priority desc, s.run_after, s.id
        limit batch
        for update skip locked
     ) as c
     order by c.priority desc, c.run_after, c.id
     limit batch
  )
  update public.ops_mission_steps s
     set status = 'running', attempt = s.attempt + 1, reserved_by = worker, reserved_at = pg_catalog.now(),
         lease_renewed_at = pg_catalog.now(), started_at = coalesce(s.started_at, pg_catalog.now()),
         lease_expires_at = pg_catalog.now() + pg_catalog.make_interval(
           secs => coalesce(lease, ops_internal.worker_setting(worker_policy, s.kind, 'lease_seconds'))),
         deadline_at = pg_catalog.now() + pg_catalog.make_interval(
           secs => ops_internal.worker_setting(worker_policy, s.kind, 'timeout_seconds'))
   where s.id = any (array(select picked.id from picked))
  returning s.*;
end;
$$;

create or replace function ops_internal.claim_steps_within(
  worker text, kinds text[], caps integer[], batch integer, lease integer, worker_policy jsonb,
  held text[], spending text[], at timestamptz)
returns setof public.ops_mission_steps
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
  with picked as (
    select c.id
      from unnest(kinds, caps) as k(kind, cap)  -- the multi-argument form is FROM syntax, not a function
     cross join lateral (
       select s.id, s.priority, s.run_after from public.ops_mission_steps s
        where s.status = 'queued' and s.kind = k.kind and s.run_after <= pg_catalog.now()
          and (pg_catalog.cardinality(held) = 0 or k.kind <> all (spending)
               or not exists (select 1 from public.ops_missions m
                               where m.id = s.mission_id and m.agent_id = any (held)))
        order by s.priority desc, s.run_after, s.id
        limit least(batch, coalesce(k.cap, batch))
        for update skip locked
     ) as c
     order by c.priority desc, c.run_after, c.id
     limit batch
  )
  update public.ops_mission_steps s
     set status = 'running', attempt = s.attempt + 1, reserved_by = worker, reserved_at = at,
         lease_renewed_at = at, started_at = coalesce(s.started_at, at),
         lease_expires_at = at + pg_catalog.make_interval(
           secs => coalesce(lease, ops_internal.worker_setting(worker_policy, s.kind, 'lease_seconds'))),
         deadline_at = at + pg_catalog.make_interval(
           secs => ops_internal.worker_setting(worker_policy, s.kind, 'timeout_seconds'))
   where s.id = any (array(select picked.id from picked))
  returning s.*;
end;
$$;

create or replace function public.ops_report_steps(reports jsonb)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  items jsonb := '[]'::jsonb;
  ids bigint[];
  missions bigint[];
  fresh jsonb;
  changed_ids bigint[] := '{}'::bigint[];
  changed public.ops_mission_steps[];
  done public.ops_mission_steps[];
  step public.ops_mission_steps;
  spent record;
  finished jsonb := '{}'::jsonb;
  mission public.ops_missions;
  m bigint;
  answers jsonb;
begin
  if ops_report_steps.reports is null or pg_catalog.jsonb_typeof(ops_report_steps.reports) <> 'array' then
    perform ops_internal.invalid('reports must be an array of reports');
  end if;
  if pg_catalog.jsonb_array_length(ops_report_steps.reports) not between 1 and 100 then
    perform ops_internal.invalid('reports must hold 1 to 100 reports');
  end if;
  select pg_catalog.jsonb_agg(ops_internal.check_report(e, pg_catalog.format('reports[%s]', n - 1))
                                || pg_catalog.jsonb_build_object('n', n) order by n)
    into items
    from pg_catalog.jsonb_array_elements(ops_report_steps.reports) with ordinality as r(e, n);
  select r.n - 1 into m from (
    select (e ->> 'n')::integer as n,
           pg_catalog.count(*) over (partition by e ->> 'step_id' order by (e ->> 'n')::integer) as seen
      from pg_catalog.jsonb_array_elements(items) e) r
   where r.seen > 1 order by r.n limit 1;
  if m is not null then
    perform ops_internal.invalid(pg_catalog.format('reports[%s].step_id repeats a step reported earlier in this call', m));
  end if;

  -- Locks: missions in id order (starting those a claim could not), then steps in id order.
  ids := array(select (e ->> 'step_id')::bigint from pg_catalog.jsonb_array_elements(items) e);
  missions := array(select distinct s.mission_id from public.ops_mission_steps s where s.id = any (ids)
                     order by s.mission_id);
  perform 1 from public.ops_missions x where x.id = any (missions) order by x.id for update;
  if exists (select 1 from public.ops_missions x where x.id = any (missions) and x.status = 'approved') then
    update public.ops_missions x set status = 'running', started_at = coalesce(x.started_at, pg_catalog.now())
     where x.id = any (missions) and x.status = 'approved';
  end if;
  perform 1 from public.ops_mission_steps s where s.id = any (ids) order by s.id for update;

  -- Each report against its step: an answer now (duplicate, stale, unknown) or fresh work.
  select pg_catalog.jsonb_object_agg(r.n::text, case
           when s.id is null then
             ops_internal.report_error(r.step_id, r.attempt, 'PT404', pg_catalog.format('step %s not found', r.step_id))
           when r.ok and s.status = 'succeeded' and s.attempt = r.attempt and s.output is distinct from r.output then
             ops_internal.report_error(r.step_id, r.attempt, 'PT409', pg_catalog.format(
               'step %s attempt %s already succeeded with a different output', s.id, s.attempt))
           when (r.ok and s.status = 'succeeded' and s.attempt = r.attempt)
             or (not r.ok and s.attempt = r.attempt and s.last_error = r.error
                 and (s.status = 'failed' or (s.status = 'queued' and s.reserved_by is null))) then
             ops_internal.step_report(s, true)
           when s.status <> 'running' or s.attempt <> r.attempt then
             ops_internal.report_error(r.step_id, r.attempt, 'PT409', pg_catalog.format(
               'step %s attempt %s is no longer running (status %s, attempt %s)', s.id, r.attempt, s.status, s.attempt))
         end),
         pg_catalog.jsonb_agg(pg_catalog.to_jsonb(r) || pg_catalog.jsonb_build_object(
           'retry', not r.ok and r.retryable and s.attempt < s.max_attempts))
           filter (where s.status = 'running' and s.attempt = r.attempt)
    into answers, fresh
    from pg_catalog.jsonb_to_recordset(items) as r(n integer, step_id bigint, attempt integer, ok boolean,
                                                   output jsonb, error text, retryable boolean, usage jsonb)
    left join lateral (select * from public.ops_mission_steps x where x.id = r.step_id offset 0) s on true;
  answers := pg_catalog.jsonb_strip_nulls(coalesce(answers, '{}'::jsonb));

  if fresh is not null then
    -- One UPDATE per outcome; each is skipped when it has no rows (an UPDATE fires the status trigger anyway).
    if exists (select 1 from pg_catalog.jsonb_array_elements(fresh) e where (e ->> 'ok')::boolean) then
      with r as (select * from pg_catalog.jsonb_to_recordset(fresh) as x(step_id bigint, output jsonb, usage jsonb, ok boolean)
                  where x.ok),
      u as (
        update public.ops_mission_steps s
           set status = 'succeeded', output = r.output, finished_at = pg_catalog.now(), lease_expires_at = null,
               usage = ops_internal.add_usage(s.usage, r.usage)
          from r where s.id = r.step_id and s.id = any (array(select r2.step_id from r as r2))
        returning s.id)
      select changed_ids || pg_catalog.array_agg(u.id) into changed_ids from u;
    end if;
    if exists (select 1 from pg_catalog.jsonb_array_elements(fresh) e where (e ->> 'retry')::boolean) then
      with r as (select * from pg_catalog.jsonb_to_recordset(fresh) as x(step_id bigint, error text, usage jsonb, retry boolean)
                  where x.retry),
      u as (
        update public.ops_mission_steps s
           set status = 'queued', last_error = r.error,
               run_after = pg_catalog.now() + ops_internal.retry_delay(s.kind, s.attempt),
               reserved_by = null, reserved_at = null, lease_renewed_at = null, lease_expires_at = null,
               deadline_at = null, usage = ops_internal.add_usage(s.usage, r.usage)
          from r where s.id = r.step_id and s.id = any (array(select r2.step_id from r as r2))
        returning s.id)
      select changed_ids || pg_catalog.array_agg(u.id) into changed_ids from u;
    end if;
    if exists (select 1 from pg_catalog.jsonb_array_elements(fresh) e
                where not (e ->> 'ok')::boolean and not (e ->> 'retry')::boolean) then
      with r as (select * from pg_catalog.jsonb_to_recordset(fresh) as x(step_id bigint, error text, usage jsonb, ok boolean, retry boolean)
                  where not x.ok and not x.retry),
      u as (
        update public.ops_mission_steps s
           set status = 'failed', last_error = r.error, finished_at = pg_catalog.now(), lease_expires_at = null,
               usage = ops_internal.add_usage(s.usage, r.usage)
          from r where s.id = r.step_id and s.id = any (array(select r2.step_id from r as r2))
        returning s.id)
      select changed_ids || pg_catalog.array_agg(u.id) into changed_ids from u;
    end if;

    changed := array(select c from public.ops_mission_steps c where c.id = any (changed_ids) order by c.id);

    -- Spend, in report order; a budget's `running` at a crossing also counts the reports after it in this call
    -- (finished above, but running at that report's moment).
    for spent in
      select c as step, e -> 'usage' as usage,
             array(select (l ->> 'step_id')::bigint from pg_catalog.jsonb_array_elements(fresh) l
                    where (l ->> 'n')::integer > (e ->> 'n')::integer) as later
        from pg_catalog.unnest(changed) as c
        join pg_catalog.jsonb_array_elements(fresh) e on (e ->> 'step_id')::bigint = c.id
       where e -> 'usage' <> 'null'::jsonb
       order by (e ->> 'n')::integer
    loop
      perform ops_internal.record_spend(spent.step, spent.usage, spent.later);
    end loop;
    if exists (select 1 from public.ops_kind_breakers b
                where b.kind in (select c.kind from pg_catalog.unnest(changed) as c)
                  and (b.state <> 'closed' or b.consecutive_failures > 0))
       or exists (select 1 from pg_catalog.unnest(changed) as c where c.status <> 'succeeded') then
      foreach step in array changed loop
        if step.status = 'succeeded' then
          perform ops_internal.breaker_success(step);
        else
          perform ops_internal.breaker_failure(step, step.last_error);
        end if;
      end loop;
    end if;

    -- Promotion: one UPDATE over every mission with a success, only when one of them has pending steps.
    done := array(select c from pg_catalog.unnest(changed) as c where c.status = 'succeeded');
    if exists (select 1 from public.ops_mission_steps s
                where s.mission_id in (select c.mission_id from pg_catalog.unnest(done) as c) and s.status = 'pending') then
      update public.ops_mission_steps s
         set status = 'queued', run_after = pg_catalog.now()
       where s.mission_id in (select c.mission_id from pg_catalog.unnest(done) as c)
         and s.status = 'pending'
         and not exists (
           select 1 from public.ops_mission_steps d
            where d.mission_id = s.mission_id and d.position = any (s.depends_on) and d.status <> 'succeeded');
    end if;

    -- Finalization, once per mission whose step ended (a retry leaves its mission running).
    for m in select distinct c.mission_id from pg_catalog.unnest(changed) as c where c.status <> 'queued' loop
      mission := ops_internal.finalize_mission(m);
      finished := finished || pg_catalog.jsonb_build_object(m::text, mission.status);
    end loop;

    select answers || coalesce(pg_catalog.jsonb_object_agg(e ->> 'n',
             ops_internal.step_report(c, false, case when c.status = 'queued' then 'running'
                                                     else finished ->> c.mission_id::text end)), '{}'::jsonb)
      into answers
      from pg_catalog.unnest(changed) as c
      join pg_catalog.jsonb_array_elements(fresh) e on (e ->> 'step_id')::bigint = c.id;
  end if;

  return (select pg_catalog.jsonb_agg(answers -> n::text order by n)
            from pg_catalog.generate_series(1, pg_catalog.jsonb_array_length(items)) as n);
end;
$$;

revoke execute on function public.ops_report_steps(jsonb) from public, anon, authenticated;
grant execute on function public.ops_report_steps(jsonb) to service_role;
