-- Spend: usage on step reports, summed per agent and UTC day, and budgets that stop a runaway loop.
--
-- * ops_complete_step and ops_fail_step take `usage` ({"tokens_in", "tokens_out", "cost_usd", "model"}, every
--   field optional), stored on the step. Without cost_usd, the cost is priced from policy model_prices
--   ({"<model>": {"input_per_million": 3, "output_per_million": 15}}); an unpriced model costs 0 USD and still
--   counts its tokens.
-- * ops_spend_daily sums it per UTC day and agent; agent '*' is every agent together.
-- * Policy budgets: daily_usd / daily_tokens for all agents together, agent_daily_usd / agent_daily_tokens for
--   each agent, per_agent.<agent>.daily_usd / daily_tokens to override one agent, and kinds: the step kinds
--   that spend (default ["llm"]). An agent whose day reached its limit, or any agent once the global limit is
--   reached, is exhausted:
--     - the gate refuses its new proposals (and human approval of its pending ones), with the reason;
--     - its queued steps of the spending kinds are held at claim time, not failed, until the UTC day turns
--       or the budget is raised (20261203006300);
--     - the report that crosses the limit writes one budget:exhausted event (one per crossing, so one per
--       episode: a raised budget crossed again is a new episode).
-- * Spend is known only after a step ran, so a budget can be exceeded by the steps already running when it
--   is crossed, never by more: reports take the 'spend' advisory lock exclusively and spending claims take it
--   shared, so a claim either committed before the crossing report (its step was already running) or sees it.

alter table public.ops_mission_steps add column usage jsonb;
comment on column public.ops_mission_steps.usage is
  'What the step''s reported attempts used: tokens_in, tokens_out, cost_usd, model (summed across attempts).';

create table public.ops_spend_daily (
  day        date           not null,
  agent_id   text           not null,
  tokens_in  bigint         not null default 0,
  tokens_out bigint         not null default 0,
  cost_usd   numeric(20, 8) not null default 0,
  steps      integer        not null default 0,
  updated_at timestamptz    not null default now(),

  primary key (day, agent_id),
  constraint ops_spend_daily_agent_check check (agent_id = '*' or agent_id ~ ops_internal.agent_id_pattern())
);

comment on table public.ops_spend_daily is
  'Usage reported by steps per UTC day and agent (agent_id * is every agent together); the budgets read it.';

alter table public.ops_spend_daily enable row level security;
revoke all on table public.ops_spend_daily from public, anon, authenticated, service_role;
grant select on table public.ops_spend_daily to service_role;

create or replace function ops_internal.model_pattern()
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select '^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,199}$';
$$;

create or replace function ops_internal.validate_policy_model_prices(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  model text;
  path text;
begin
  perform ops_internal.check_map_keys(value, 'value', ops_internal.model_pattern());
  for model in select pg_catalog.jsonb_object_keys(value) loop
    path := 'value.' || model;
    perform ops_internal.require_object(value -> model, path);
    perform ops_internal.check_keys(value -> model, path, array['input_per_million', 'output_per_million']);
    perform ops_internal.get_number(value -> model, path, 'input_per_million', true, 0, 1000000);
    perform ops_internal.get_number(value -> model, path, 'output_per_million', true, 0, 1000000);
  end loop;
end;
$$;

-- daily_usd / daily_tokens in `value` at `path`.
create or replace function ops_internal.check_budget_limits(value jsonb, path text, prefix text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.get_number(value, path, prefix || 'daily_usd', false, 0, 1000000000);
  perform ops_internal.get_int(value, path, prefix || 'daily_tokens', false, 0, 1000000000000);
end;
$$;

create or replace function ops_internal.validate_policy_budgets(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  agent text;
begin
  perform ops_internal.check_keys(value, 'value', array['daily_usd', 'daily_tokens', 'agent_daily_usd',
    'agent_daily_tokens', 'per_agent', 'kinds']);
  perform ops_internal.check_budget_limits(value, 'value', '');
  perform ops_internal.check_budget_limits(value, 'value', 'agent_');
  if ops_internal.get_object(value, 'value', 'per_agent') is not null then
    perform ops_internal.check_map_keys(value -> 'per_agent', 'value.per_agent', ops_internal.agent_id_pattern());
    for agent in select pg_catalog.jsonb_object_keys(value -> 'per_agent') loop
      perform ops_internal.require_object(value -> 'per_agent' -> agent, 'value.per_agent.' || agent);
      perform ops_internal.check_keys(value -> 'per_agent' -> agent, 'value.per_agent.' || agent,
        array['daily_usd', 'daily_tokens']);
      perform ops_internal.check_budget_limits(value -> 'per_agent' -> agent, 'value.per_agent.' || agent, '');
    end loop;
  end if;
  perform ops_internal.get_text_array(value, 'value', 'kinds', false, ops_internal.kind_pattern(), 100);
end;
$$;

-- The step kinds a budget holds at claim time.
create or replace function ops_internal.spending_kinds(budgets jsonb)
returns text[]
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select case when budgets ? 'kinds' then array(select pg_catalog.jsonb_array_elements_text(budgets -> 'kinds'))
              else array['llm'] end;
$$;

-- A report's usage, checked and priced: cost_usd from model_prices when the report gives none.
create or replace function ops_internal.check_usage(usage jsonb)
returns jsonb
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  tokens_in bigint;
  tokens_out bigint;
  cost numeric;
  model text;
  price jsonb;
begin
  if usage is null or usage = 'null'::jsonb then
    return null;
  end if;
  perform ops_internal.require_object(usage, 'usage');
  perform ops_internal.check_keys(usage, 'usage', array['tokens_in', 'tokens_out', 'cost_usd', 'model']);
  tokens_in := coalesce(ops_internal.get_int(usage, 'usage', 'tokens_in', false, 0, 1000000000), 0);
  tokens_out := coalesce(ops_internal.get_int(usage, 'usage', 'tokens_out', false, 0, 1000000000), 0);
  cost := ops_internal.get_number(usage, 'usage', 'cost_usd', false, 0, 1000000);
  model := ops_internal.get_text(usage, 'usage', 'model', false, ops_internal.model_pattern());
  if cost is null then
    price := ops_internal.policy('model_prices') -> model;
    cost := coalesce((tokens_in * (price ->> 'input_per_million')::numeric
                      + tokens_out * (price ->> 'output_per_million')::numeric) / 1000000, 0);
  end if;
  return pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
    'tokens_in', tokens_in, 'tokens_out', tokens_out, 'cost_usd', pg_catalog.trim_scale(pg_catalog.round(cost, 8)), 'model', model));
end;
$$;

-- An agent's daily limits ('*': the global ones); a null field has no limit.
create or replace function ops_internal.agent_budget(budgets jsonb, agent_id text, out usd numeric, out tokens bigint)
returns record
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select case when agent_id = '*' then (budgets ->> 'daily_usd')::numeric
              else coalesce((budgets -> 'per_agent' -> agent_id ->> 'daily_usd')::numeric,
                            (budgets ->> 'agent_daily_usd')::numeric) end,
         case when agent_id = '*' then (budgets ->> 'daily_tokens')::bigint
              else coalesce((budgets -> 'per_agent' -> agent_id ->> 'daily_tokens')::bigint,
                            (budgets ->> 'agent_daily_tokens')::bigint) end;
$$;

-- Whether spend (usd, tokens) has reached an agent's limits.
create or replace function ops_internal.budget_exhausted(budgets jsonb, agent_id text, usd numeric, tokens bigint)
returns boolean
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(budget_exhausted.usd >= b.usd, false) or coalesce(budget_exhausted.tokens >= b.tokens, false)
    from ops_internal.agent_budget(budgets, agent_id) as b;
$$;

-- The agents whose spending steps are held today; '*' when the global budget is exhausted (all are held).
-- A limit of 0 is exhausted before anything is spent: '*' for a global or default per-agent 0, the agent for
-- its own.
create or replace function ops_internal.held_agents(budgets jsonb)
returns text[]
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(pg_catalog.array_agg(distinct h.agent_id order by h.agent_id), '{}')
    from (select d.agent_id
            from public.ops_spend_daily d
           where budgets is not null and d.day = (pg_catalog.now() at time zone 'UTC')::date
             and ops_internal.budget_exhausted(budgets, d.agent_id, d.cost_usd, d.tokens_in + d.tokens_out)
          union all
          select '*' where ops_internal.budget_exhausted(budgets, '*', 0, 0)
                        or (budgets ->> 'agent_daily_usd')::numeric = 0 or (budgets ->> 'agent_daily_tokens')::bigint = 0
          union all
          select a.key from pg_catalog.jsonb_each(coalesce(budgets -> 'per_agent', '{}'::jsonb)) as a
           where ops_internal.budget_exhausted(budgets, a.key, 0, 0)) as h;
$$;

-- Add one report's usage to its agent's day and to the global day; the report that crosses a limit writes
-- budget:exhausted. The exclusive 'spend' lock orders reports against spending claims (see the header).
-- `also`: steps reported later in the same call (ops_report_steps), already marked finished but still running
-- at this report's moment: the event's `running` counts them.
create or replace function ops_internal.record_spend(
  step public.ops_mission_steps, usage jsonb, also bigint[] default '{}')
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  budgets jsonb := (select p.value from public.ops_policy p where p.key = 'budgets');
  agent text := (select m.agent_id from public.ops_missions m where m.id = step.mission_id);
  today date := (pg_catalog.now() at time zone 'UTC')::date;
  cost numeric := coalesce((usage ->> 'cost_usd')::numeric, 0);
  tokens bigint := coalesce((usage ->> 'tokens_in')::bigint, 0) + coalesce((usage ->> 'tokens_out')::bigint, 0);
  who text;
  after public.ops_spend_daily;
  limits record;
begin
  if budgets is not null then  -- without budgets nothing can be crossed and no claim takes the shared lock
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('agent-ops:spend', 0));
  end if;
  foreach who in array array[agent, '*'] loop
    insert into public.ops_spend_daily as d (day, agent_id, tokens_in, tokens_out, cost_usd, steps)
    values (today, who, coalesce((usage ->> 'tokens_in')::bigint, 0), coalesce((usage ->> 'tokens_out')::bigint, 0),
            cost, 1)
    on conflict (day, agent_id) do update
       set tokens_in = d.tokens_in + excluded.tokens_in, tokens_out = d.tokens_out + excluded.tokens_out,
           cost_usd = d.cost_usd + excluded.cost_usd, steps = d.steps + 1, updated_at = pg_catalog.now()
    returning d.* into after;
    continue when budgets is null
      or not ops_internal.budget_exhausted(budgets, who, after.cost_usd, after.tokens_in + after.tokens_out)
      or ops_internal.budget_exhausted(budgets, who, after.cost_usd - cost,
                                       after.tokens_in + after.tokens_out - tokens);
    limits := ops_internal.agent_budget(budgets, who);
    perform ops_internal.emit_event('budget:exhausted', case when who = '*' then 'system' else who end,
      case when who = '*' then 'Global daily budget exhausted' else 'Daily budget exhausted for ' || who end,
      pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'agent_id', who, 'day', today, 'cost_usd', after.cost_usd, 'tokens', after.tokens_in + after.tokens_out,
        'limit_usd', limits.usd, 'limit_tokens', limits.tokens, 'crossed_by_step', step.id,
        'running', (select pg_catalog.count(*) from public.ops_mission_steps s
                      join public.ops_missions m on m.id = s.mission_id
                     where (s.status = 'running' or s.id = any (also))
                       and s.kind = any (ops_internal.spending_kinds(budgets))
                       and (who = '*' or m.agent_id = who)))),
      mission_id => step.mission_id, step_id => step.id);
  end loop;
end;
$$;

-- The agent's and the global day, spent or not (a limit of 0 refuses before anything is spent). The policy is
-- read once: this runs for every proposal.
create or replace function ops_internal.gate_budget(agent_id text)
returns text
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select pg_catalog.format('%s (%s USD, %s tokens today; limits %s USD, %s tokens)',
           case when w.who = '*' then 'global daily budget exhausted'
                else 'daily budget exhausted for ' || w.who end,
           pg_catalog.round(coalesce(d.cost_usd, 0), 4), coalesce(d.tokens_in + d.tokens_out, 0),
           coalesce(b.usd::text, 'no'), coalesce(b.tokens::text, 'no'))
    from public.ops_policy p
   cross join (values ('*'), (gate_budget.agent_id)) as w(who)
    left join public.ops_spend_daily d
      on d.day = (pg_catalog.now() at time zone 'UTC')::date and d.agent_id = w.who
   cross join lateral ops_internal.agent_budget(p.value, w.who) as b
   where p.key = 'budgets'
     and ops_internal.budget_exhausted(p.value, w.who, coalesce(d.cost_usd, 0), coalesce(d.tokens_in + d.tokens_out, 0))
   order by w.who = '*' desc
   limit 1;
$$;

-- Gate order: system, agent's daily proposals, budget, disabled kinds, the articles' switches, live workers,
-- kind quotas (sorted), content drafts, active missions.
create or replace function ops_internal.gate_reason(
  agent_id text, kinds text[], new_proposal boolean, creates_mission boolean)
returns text
language sql
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(
    ops_internal.gate_system(),
    case when new_proposal then ops_internal.gate_daily_proposals(agent_id) end,
    ops_internal.gate_budget(agent_id),
    ops_internal.gate_kinds_enabled(kinds),
    ops_internal.gate_article_switches(kinds),
    ops_internal.gate_live_workers(kinds),
    ops_internal.gate_kind_quotas(kinds),
    ops_internal.gate_content_drafts(kinds),
    case when creates_mission then ops_internal.gate_active_missions() end);
$$;

-- Usage summed over a step's attempts.
create or replace function ops_internal.add_usage(total jsonb, usage jsonb)
returns jsonb
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select case when total is null then usage when usage is null then total else
    pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
      'tokens_in', (total ->> 'tokens_in')::bigint + (usage ->> 'tokens_in')::bigint,
      'tokens_out', (total ->> 'tokens_out')::bigint + (usage ->> 'tokens_out')::bigint,
      'cost_usd', (total ->> 'cost_usd')::numeric + (usage ->> 'cost_usd')::numeric,
      'model', coalesce(usage ->> 'model', total ->> 'model'))) end;
$$;

select ops_internal.revoke_api_execute();

-- The reports, with usage. The signatures change, so the old functions go (an overload with one more
-- defaulted argument would make every existing call ambiguous).
drop function public.ops_complete_step(bigint, integer, jsonb);
drop function public.ops_fail_step(bigint, integer, text, boolean);

create function public.ops_complete_step(
  step_id bigint, attempt integer, output jsonb default '{}'::jsonb, usage jsonb default null)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  result_output jsonb := coalesce(ops_complete_step.output, '{}'::jsonb);
  spent jsonb := ops_internal.check_usage(ops_complete_step.usage);
  step public.ops_mission_steps;
  mission public.ops_missions;
begin
  if pg_catalog.octet_length(result_output::text) > 1048576 then
    perform ops_internal.invalid('output must be at most 1048576 bytes of JSON');
  end if;
  step := ops_internal.lock_step(ops_complete_step.step_id, ops_complete_step.attempt);

  if step.status = 'succeeded' and step.attempt = ops_complete_step.attempt then
    if step.output is distinct from result_output then
      perform ops_internal.conflict(
        pg_catalog.format('step %s attempt %s already succeeded with a different output', step.id, step.attempt));
    end if;
    return ops_internal.step_report(step, true);
  end if;
  if step.status <> 'running' or step.attempt <> ops_complete_step.attempt then
    perform ops_internal.stale_attempt(step, ops_complete_step.attempt);
  end if;

  update public.ops_mission_steps s
     set status = 'succeeded', output = result_output, finished_at = pg_catalog.now(), lease_expires_at = null,
         usage = ops_internal.add_usage(s.usage, spent)
   where s.id = step.id
  returning s.* into step;
  if spent is not null then
    perform ops_internal.record_spend(step, spent);
  end if;
  perform ops_internal.breaker_success(step);
  perform ops_internal.promote_steps(step.mission_id);
  mission := ops_internal.finalize_mission(step.mission_id);
  return ops_internal.step_report(step, false, mission.status);
end;
$$;

revoke execute on function public.ops_complete_step(bigint, integer, jsonb, jsonb) from public, anon, authenticated;
grant execute on function public.ops_complete_step(bigint, integer, jsonb, jsonb) to service_role;

create function public.ops_fail_step(
  step_id bigint, attempt integer, error text, retryable boolean default true, usage jsonb default null)
returns jsonb
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  message text := pg_catalog.left(ops_internal.check_text(ops_fail_step.error, 'error', null), 8000);
  spent jsonb := ops_internal.check_usage(ops_fail_step.usage);
  step public.ops_mission_steps;
  mission public.ops_missions;
begin
  step := ops_internal.lock_step(ops_fail_step.step_id, ops_fail_step.attempt);

  if step.attempt = ops_fail_step.attempt and step.last_error = message
     and (step.status = 'failed' or (step.status = 'queued' and step.reserved_by is null)) then
    return ops_internal.step_report(step, true);
  end if;
  if step.status <> 'running' or step.attempt <> ops_fail_step.attempt then
    perform ops_internal.stale_attempt(step, ops_fail_step.attempt);
  end if;

  if coalesce(ops_fail_step.retryable, true) and step.attempt < step.max_attempts then
    update public.ops_mission_steps s
       set status = 'queued', last_error = message,
           run_after = pg_catalog.now() + ops_internal.retry_delay(s.kind, s.attempt),
           reserved_by = null, reserved_at = null, lease_renewed_at = null, lease_expires_at = null,
           deadline_at = null, usage = ops_internal.add_usage(s.usage, spent)
     where s.id = step.id
    returning s.* into step;
    if spent is not null then
      perform ops_internal.record_spend(step, spent);
    end if;
    perform ops_internal.breaker_failure(step, message);
    return ops_internal.step_report(step, false, 'running');
  end if;

  update public.ops_mission_steps s
     set status = 'failed', last_error = message, finished_at = pg_catalog.now(), lease_expires_at = null,
         usage = ops_internal.add_usage(s.usage, spent)
   where s.id = step.id
  returning s.* into step;
  if spent is not null then
    perform ops_internal.record_spend(step, spent);
  end if;
  perform ops_internal.breaker_failure(step, message);
  mission := ops_internal.finalize_mission(step.mission_id);
  return ops_internal.step_report(step, false, mission.status);
end;
$$;

revoke execute on function public.ops_fail_step(bigint, integer, text, boolean, jsonb) from public, anon, authenticated;
grant execute on function public.ops_fail_step(bigint, integer, text, boolean, jsonb) to service_role;
