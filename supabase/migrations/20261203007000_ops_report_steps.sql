-- Fewer round trips per step: many reports in one call, and reports with the next claim in the same one.
--
-- ops_report_steps(reports) completes and fails up to 100 steps, each fenced by its attempt exactly as
-- ops_complete_step / ops_fail_step fence one: [{step_id, attempt, output} | {step_id, attempt, error,
-- retryable?}, each with optional usage]. Set-based: the missions are locked once (id order, the order every
-- writer uses), then the steps (id order); one UPDATE per outcome (succeeded, retrying, failed), so the status
-- events come from the statement triggers once per statement; promotion of the next steps is one UPDATE over
-- every mission that had a success; finalization runs once per mission that may have finished. The answer is
-- one entry per report, in order: what ops_complete_step / ops_fail_step would return, or, for a report that
-- cannot apply (stale attempt, unknown step, a different output for an attempt that already succeeded),
-- {step_id, attempt, error: {code, message}} with the SQLSTATE the single call would raise — so one stale
-- report never sinks the others. Invalid input (PT400) rejects the whole call and writes nothing.
--
-- ops_report_and_claim(worker_id, reports, kinds, max_steps, lease_seconds) does that and then claims up to
-- max_steps (0: none) in the same transaction, so a worker's finished steps and its next work cost one round
-- trip; the claim sees the reports' effects (a step promoted by a report can be claimed at once). Its claim
-- never waits for a limited kind's lock (the reports would hold their steps' slots meanwhile): a kind whose
-- lock is busy is skipped and the answer says `busy`, so the worker claims again, without reports, at once.

-- One report, checked: the normalized item, or PT400 naming reports[i].<field>.
create or replace function ops_internal.check_report(item jsonb, path text)
returns jsonb
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  error text;
  output jsonb;
  usage jsonb;
begin
  perform ops_internal.require_object(item, path);
  perform ops_internal.check_keys(item, path, array['step_id', 'attempt', 'output', 'error', 'retryable', 'usage']);
  perform ops_internal.get_int(item, path, 'step_id', true, 1);
  perform ops_internal.get_int(item, path, 'attempt', true, 1, 100);
  error := ops_internal.get_text(item, path, 'error', false, null, null);
  perform ops_internal.get_bool(item, path, 'retryable');
  if error is not null and item ? 'output' then
    perform ops_internal.invalid(path || ' carries output and error: a report is one or the other');
  end if;
  if error is null and item ? 'retryable' then
    perform ops_internal.invalid(path || '.retryable belongs to a failure (one with error)');
  end if;
  output := coalesce(item -> 'output', '{}'::jsonb);
  if output = 'null'::jsonb then
    output := '{}'::jsonb;
  end if;
  if pg_catalog.octet_length(output::text) > 1048576 then
    perform ops_internal.invalid(path || '.output must be at most 1048576 bytes of JSON');
  end if;
  begin
    usage := ops_internal.check_usage(item -> 'usage');
  exception when sqlstate 'PT400' then
    perform ops_internal.invalid(path || '.' || sqlerrm);
  end;
  return pg_catalog.jsonb_build_object(
    'step_id', (item ->> 'step_id')::bigint, 'attempt', (item ->> 'attempt')::integer, 'ok', error is null,
    'output', output, 'error', pg_catalog.left(error, 8000),
    'retryable', coalesce((item ->> 'retryable')::boolean, true), 'usage', usage);
end;
$$;

create or replace function ops_internal.report_error(step_id bigint, attempt integer, code text, message text)
returns jsonb
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object('step_id', step_id, 'attempt', attempt,
    'error', pg_catalog.jsonb_build_object('code', code, 'message', message));
$$;

select ops_internal.revoke_api_execute();

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
    left join public.ops_mission_steps s on s.id = r.step_id;
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
          from r where s.id = r.step_id
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
          from r where s.id = r.step_id
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
          from r where s.id = r.step_id
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

create or replace function public.ops_report_and_claim(
  worker_id text,
  reports jsonb default null,
  kinds text[] default null,
  max_steps integer default 1,
  lease_seconds integer default null)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  answers jsonb := '[]'::jsonb;
  claimed jsonb := '[]'::jsonb;
begin
  perform ops_internal.check_text(ops_report_and_claim.worker_id, 'worker_id', 200);
  if ops_report_and_claim.max_steps is null or ops_report_and_claim.max_steps not between 0 and 100 then
    perform ops_internal.invalid('max_steps must be from 0 to 100');
  end if;
  if ops_report_and_claim.reports is not null and ops_report_and_claim.reports <> '[]'::jsonb then
    answers := public.ops_report_steps(ops_report_and_claim.reports);
  end if;
  if ops_report_and_claim.max_steps > 0 then
    perform pg_catalog.set_config('agent_ops.claim_nowait', 'on', true);
    perform pg_catalog.set_config('agent_ops.claim_busy', 'off', true);
    claimed := public.ops_claim_next_step(ops_report_and_claim.worker_id, ops_report_and_claim.kinds,
                                          ops_report_and_claim.max_steps, ops_report_and_claim.lease_seconds);
    perform pg_catalog.set_config('agent_ops.claim_nowait', 'off', true);
  end if;
  return pg_catalog.jsonb_build_object('reports', answers, 'claimed', claimed,
    'busy', coalesce(pg_catalog.current_setting('agent_ops.claim_busy', true) = 'on', false));
end;
$$;

revoke execute on function public.ops_report_and_claim(text, jsonb, text[], integer, integer) from public, anon, authenticated;
grant execute on function public.ops_report_and_claim(text, jsonb, text[], integer, integer) to service_role;
