-- Reading the limits and the spend: ops_list_spend(days) per agent and UTC day with each one's limits, the
-- read API's steps show their usage, and ops_status gains spend_today (per agent and global, with limits) and limits (per limited kind: running and
-- max_running, the last minute's hand-outs and per_minute).

-- One day's spend row with its limits.
create or replace function ops_internal.spend_json(d public.ops_spend_daily, budgets jsonb)
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'day', d.day, 'agent_id', d.agent_id, 'cost_usd', pg_catalog.trim_scale(d.cost_usd), 'tokens_in', d.tokens_in,
    'tokens_out', d.tokens_out, 'steps', d.steps, 'limit_usd', b.usd, 'limit_tokens', b.tokens,
    'exhausted', coalesce(ops_internal.budget_exhausted(budgets, d.agent_id, d.cost_usd, d.tokens_in + d.tokens_out),
                          false))
    from ops_internal.agent_budget(budgets, d.agent_id) as b;
$$;

create or replace function ops_internal.spend_today()
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'day', (pg_catalog.now() at time zone 'UTC')::date,
    'budgets', (select p.value from public.ops_policy p where p.key = 'budgets'),
    'agents', coalesce(pg_catalog.jsonb_agg(ops_internal.spend_json(d, ops_internal.policy('budgets')) - 'day'
                                            order by d.agent_id = '*' desc, d.cost_usd desc, d.agent_id), '[]'::jsonb))
    from public.ops_spend_daily d
   where d.day = (pg_catalog.now() at time zone 'UTC')::date;
$$;

create or replace function ops_internal.kind_limits_now()
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(pg_catalog.jsonb_object_agg(k.kind, pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
           'running', (select pg_catalog.count(*) from public.ops_mission_steps s
                        where s.status = 'running' and s.kind = k.kind),
           'max_running', (k.settings ->> 'max_running')::integer,
           'last_minute', case when k.settings ? 'per_minute' then
              (select pg_catalog.count(*) from public.ops_kind_claims c, pg_catalog.unnest(c.claimed_at) as t
                where c.kind = k.kind and t > pg_catalog.clock_timestamp() - interval '1 minute') end,
           'per_minute', (k.settings ->> 'per_minute')::integer,
           'queued', (select pg_catalog.count(*) from public.ops_mission_steps s
                       where s.status = 'queued' and s.kind = k.kind)))), '{}'::jsonb)
    from pg_catalog.jsonb_each(coalesce(ops_internal.policy('worker_policy') -> 'kinds', '{}'::jsonb)) as k(kind, settings)
   where k.settings ?| array['max_running', 'per_minute'];
$$;

-- A step as the read API shows it, now with what it spent.
create or replace function ops_internal.step_json(step public.ops_mission_steps)
returns jsonb
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'id', step.id, 'mission_id', step.mission_id, 'position', step.position, 'kind', step.kind,
    'status', step.status, 'payload', step.payload, 'output', step.output, 'last_error', step.last_error,
    'depends_on', step.depends_on, 'attempt', step.attempt, 'max_attempts', step.max_attempts,
    'priority', step.priority, 'run_after', step.run_after, 'reserved_by', step.reserved_by,
    'lease_expires_at', step.lease_expires_at, 'started_at', step.started_at, 'finished_at', step.finished_at,
    'created_at', step.created_at, 'usage', step.usage);
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_list_spend(days integer default 7)
returns jsonb
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  budgets jsonb := (select p.value from public.ops_policy p where p.key = 'budgets');
begin
  if ops_list_spend.days is null or ops_list_spend.days not between 1 and 366 then
    perform ops_internal.invalid('days must be from 1 to 366');
  end if;
  return pg_catalog.jsonb_build_object(
    'budgets', budgets,
    'days', (select coalesce(pg_catalog.jsonb_agg(ops_internal.spend_json(d, budgets)
                                                  order by d.day desc, d.agent_id = '*' desc, d.agent_id), '[]'::jsonb)
               from public.ops_spend_daily d
              where d.day > (pg_catalog.now() at time zone 'UTC')::date - ops_list_spend.days));
end;
$$;

revoke execute on function public.ops_list_spend(integer) from public, anon, authenticated;
grant execute on function public.ops_list_spend(integer) to service_role;

create or replace function public.ops_status()
returns jsonb
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.jsonb_build_object(
    'system_enabled', ops_internal.system_enabled(),
    'proposals', pg_catalog.jsonb_build_object(
      'pending', (select pg_catalog.count(*) from public.ops_mission_proposals p where p.status = 'pending'),
      'today', coalesce((select pg_catalog.jsonb_object_agg(t.status, t.n) from (
         select p.status, pg_catalog.count(*) as n from public.ops_mission_proposals p
          where p.created_at >= ops_internal.utc_day_start() group by p.status) t), '{}'::jsonb)),
    'missions', pg_catalog.jsonb_build_object(
      'active', coalesce((select pg_catalog.jsonb_object_agg(t.status, t.n) from (
         select m.status, pg_catalog.count(*) as n from public.ops_missions m
          where m.status in ('approved', 'running') group by m.status) t), '{}'::jsonb),
      'finished_24h', coalesce((select pg_catalog.jsonb_object_agg(t.status, t.n) from (
         select m.status, pg_catalog.count(*) as n from public.ops_missions m
          where m.finalized_at >= pg_catalog.now() - interval '24 hours' group by m.status) t), '{}'::jsonb)),
    'queue', coalesce((select pg_catalog.jsonb_object_agg(t.kind, t.n) from (
       select s.kind, pg_catalog.count(*) as n from public.ops_mission_steps s where s.status = 'queued' group by s.kind) t),
       '{}'::jsonb),
    'running', coalesce((select pg_catalog.jsonb_object_agg(t.reserved_by, t.n) from (
       select s.reserved_by, pg_catalog.count(*) as n from public.ops_mission_steps s where s.status = 'running'
        group by s.reserved_by) t), '{}'::jsonb),
    'reactions_queued', (select pg_catalog.count(*) from public.ops_agent_reactions r where r.status = 'queued'),
    'circuit_breakers', coalesce((select pg_catalog.jsonb_object_agg(pg_catalog.substr(p.key, 8), p.value)
       from public.ops_policy p where p.key like 'worker:%' and (p.value ->> 'enabled')::boolean is false), '{}'::jsonb),
    'last_heartbeat', (select pg_catalog.jsonb_build_object('id', a.id, 'status', a.status, 'started_at', a.started_at,
       'duration_ms', a.duration_ms, 'error', a.error, 'result', a.result)
       from public.ops_action_runs a where a.action = 'heartbeat' order by a.started_at desc limit 1),
    'workers', (select coalesce(pg_catalog.jsonb_agg(ops_internal.worker_json(w) order by w.worker_id), '[]'::jsonb)
       from ops_internal.live_workers() w),
    'stalled', (select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('kind', q.kind, 'reason', q.reason,
       'since', q.since, 'queued', q.queued, 'oldest_ready_at', q.oldest_ready_at,
       'age_seconds', pg_catalog.round(extract(epoch from pg_catalog.now() - q.oldest_ready_at))) order by q.kind), '[]'::jsonb)
       from public.ops_queue_stalls q),
    'breakers', (select coalesce(pg_catalog.jsonb_object_agg(b.kind, pg_catalog.jsonb_build_object('state', b.state,
       'consecutive_failures', b.consecutive_failures, 'last_error', b.last_error, 'opened_at', b.opened_at,
       'reopen_at', b.reopen_at, 'opens', b.opens, 'probe_step_id', b.probe_step_id)), '{}'::jsonb)
       from public.ops_kind_breakers b where b.state <> 'closed' or b.consecutive_failures > 0),
    'heartbeat_age_seconds', (select pg_catalog.round(extract(epoch from pg_catalog.now() - pg_catalog.max(a.started_at)))
       from public.ops_action_runs a where a.action = 'heartbeat'),
    'alerts', pg_catalog.jsonb_build_object(
       'stalled_kinds', (select pg_catalog.count(*) from public.ops_queue_stalls),
       'open_breakers', (select pg_catalog.count(*) from public.ops_kind_breakers b where b.state <> 'closed'),
       'heartbeat_late', coalesce((select pg_catalog.max(a.started_at) from public.ops_action_runs a where a.action = 'heartbeat')
                                    < pg_catalog.now() - pg_catalog.make_interval(secs => ops_internal.alert_setting('heartbeat_age_seconds')),
                                  true),
       'queued_age_seconds', ops_internal.alert_setting('queued_age_seconds'),
       'heartbeat_age_seconds', ops_internal.alert_setting('heartbeat_age_seconds')),
    'spend_today', ops_internal.spend_today(),
    'limits', ops_internal.kind_limits_now(),
    'recent_missions', (select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('id', m.id, 'agent_id', m.agent_id,
       'title', m.title, 'status', m.status, 'created_at', m.created_at, 'finalized_at', m.finalized_at) order by m.id desc), '[]'::jsonb)
       from (select x.* from public.ops_missions x order by x.id desc limit 10) m));
$$;

revoke execute on function public.ops_status() from public, anon, authenticated;
grant execute on function public.ops_status() to service_role;
