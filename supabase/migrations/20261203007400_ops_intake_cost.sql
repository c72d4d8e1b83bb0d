-- Intake cost: the helpers ops_create_proposal runs on every proposal are plpgsql now, not SQL (P3).
--
-- What was costly. With the gates reading counters (20261203007100) a proposal read ~250 buffers yet took
-- ~6 ms of server CPU. Most of it was not the work itself but Postgres 15 preparing SQL-language functions
-- again and again: a SQL function with a SET clause (every function here keeps `set search_path`) is never
-- inlined, and Postgres 15 keeps no plan for a SQL function beyond the executor state of the query that
-- calls it. Each time a statement that calls one starts (a query inside plpgsql, a trigger's statement, a
-- CHECK constraint, whose expression is prepared and constant-folded for each statement), its body is
-- parsed, analysed and planned again, and so is the body of every SQL function that one calls, ~50 us a
-- level, where a plpgsql function keeps its plans for the session (~5 us a call with the search_path
-- save/restore). Measured per proposal (P3's proposal, 1 client, pg_stat_statements track = all):
--   gate_reason (SQL, nine gates as SQL or calling SQL helpers)      ~2.1 ms, 1.3 ms in a bare loop
--   ops_internal.policy (SQL, read 12 to 13 times)                     ~0.9 ms (track_functions)
--   CHECK constraints calling SQL pattern helpers: agent_id_pattern (proposal insert and update),
--     kind_pattern (steps), event_type_pattern -> name_re x2 (four event inserts)   ~0.5 ms
--   gate_budget (a four-way SQL join planned on every call, also with no budgets policy)   ~0.4 ms
--   field_name, utc_today, utc_day_start, near_quota, kind_daily_limit, worker_setting, step_kinds,
--     changed_statuses, proposal_result: ~40 small SQL calls                       ~0.8 ms
--
-- What changed. Those functions are the same functions in plpgsql: same names, arguments, results,
-- volatility, grants, `set search_path`, the same queries (a policy value read once into a variable where a
-- query read the same key once per row, which in one statement is the same value) and the same errors,
-- raised by the same helpers. Nothing about what is checked, in which order, or what is written changes:
-- gate_reason still evaluates the gates in the same order and stops at the first reason (COALESCE); it stays
-- VOLATILE, so it still runs in a fresh snapshot, and the counting gates (plpgsql already, untouched) still
-- read, lock and read again in new snapshots, so the gates hold under concurrency as before (chaos R4).
-- The triggers that write the events and the counters are untouched. IMMUTABLE helpers without arguments
-- (the patterns) are still folded to constants when a statement or a CHECK constraint is planned; they now
-- cost one cached plpgsql call there instead of a parse and plan of their body and of the bodies they call.
-- The validation helpers skip work that cannot fail on the happy path (see below the gates).
--
-- Result, same machine, interleaved: backend CPU 5.0 -> 2.4 ms a proposal, buffers unchanged (~235);
-- pgbench P3 script 190 -> 400/s with 1 client, 350 -> 670/s with 4. What is left is mostly the rows
-- themselves: four writes, four event inserts and five counter updates, with their triggers, indexes and
-- CHECK constraints (prepared for each statement).

-- The policy value of `key`, or {} when unset. Read by every gate and by the triggers.
create or replace function ops_internal.policy(key text)
returns jsonb
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return coalesce((select p.value from public.ops_policy p where p.key = policy.key), '{}'::jsonb);
end;
$$;

create or replace function ops_internal.system_enabled()
returns boolean
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return coalesce((ops_internal.policy('system') ->> 'enabled')::boolean, true);
end;
$$;

-- The patterns: folded into each CHECK constraint that uses them every time a statement writes the table.
create or replace function ops_internal.name_re()
returns text
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  return '[a-z][a-z0-9_]{0,63}';
end;
$$;

create or replace function ops_internal.agent_id_re()
returns text
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  return '[a-z0-9][a-z0-9_.:-]{0,63}';
end;
$$;

create or replace function ops_internal.agent_id_pattern()
returns text
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  return '^' || ops_internal.agent_id_re() || '$';
end;
$$;

create or replace function ops_internal.kind_pattern()
returns text
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  return '^' || ops_internal.name_re() || '$';
end;
$$;

create or replace function ops_internal.event_type_pattern()
returns text
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  return '^' || ops_internal.name_re() || ':' || ops_internal.name_re() || '$';
end;
$$;

create or replace function ops_internal.source_pattern()
returns text
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  return '^(api|trigger|reaction|agent|human)$';
end;
$$;

create or replace function ops_internal.content_kinds()
returns text[]
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  return array['draft_tweet', 'write_content'];
end;
$$;

create or replace function ops_internal.field_name(path text, key text)
returns text
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  return case when coalesce(path, '') = '' then key else path || '.' || key end;
end;
$$;

create or replace function ops_internal.step_kinds(steps jsonb)
returns text[]
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  return array(select s ->> 'kind' from pg_catalog.jsonb_array_elements(steps) as s);
end;
$$;

create or replace function ops_internal.worker_setting(policy jsonb, kind text, name text)
returns integer
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  return coalesce(
    (policy -> 'kinds' -> kind ->> name)::integer,
    (policy ->> name)::integer,
    case name
      when 'lease_seconds' then 1800
      when 'max_attempts' then 3
      when 'backoff_base_seconds' then 10
      when 'backoff_max_seconds' then 3600
      when 'circuit_breaker_threshold' then 3
      when 'timeout_seconds' then 3600
      when 'breaker_cooldown_seconds' then 600
      when 'breaker_cooldown_max_seconds' then 21600
    end);
end;
$$;

create or replace function ops_internal.changed_statuses(old_statuses jsonb, new_statuses jsonb)
returns jsonb
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  return (select coalesce(pg_catalog.jsonb_object_agg(o.key, o.value), '{}'::jsonb)
            from pg_catalog.jsonb_each(coalesce(old_statuses, '{}'::jsonb)) as o
           where new_statuses -> o.key is distinct from o.value);
end;
$$;

create or replace function ops_internal.utc_today()
returns date
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return (pg_catalog.now() at time zone 'UTC')::date;
end;
$$;

create or replace function ops_internal.utc_day_start()
returns timestamptz
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return pg_catalog.date_trunc('day', pg_catalog.now() at time zone 'UTC') at time zone 'UTC';
end;
$$;

create or replace function ops_internal.near_quota(used bigint, wanted bigint, quota bigint, per_tx bigint)
returns boolean
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return used + wanted + per_tx * (pg_catalog.current_setting('max_connections')::bigint
                                   + pg_catalog.current_setting('max_prepared_transactions')::bigint) > quota;
end;
$$;

create or replace function ops_internal.kind_daily_limit(gates jsonb, kind text)
returns bigint
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return least(
    (gates -> kind ->> 'daily_limit')::bigint,
    case when kind = 'post_tweet' then (ops_internal.policy('x_daily_quota') ->> 'limit')::bigint end);
end;
$$;

create or replace function ops_internal.lock(resource text)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('agent-ops:' || resource, 0));
end;
$$;

create or replace function ops_internal.agent_budget(budgets jsonb, agent_id text, out usd numeric, out tokens bigint)
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  usd := case when agent_id = '*' then (budgets ->> 'daily_usd')::numeric
              else coalesce((budgets -> 'per_agent' -> agent_id ->> 'daily_usd')::numeric,
                            (budgets ->> 'agent_daily_usd')::numeric) end;
  tokens := case when agent_id = '*' then (budgets ->> 'daily_tokens')::bigint
                 else coalesce((budgets -> 'per_agent' -> agent_id ->> 'daily_tokens')::bigint,
                               (budgets ->> 'agent_daily_tokens')::bigint) end;
end;
$$;

create or replace function ops_internal.budget_exhausted(budgets jsonb, agent_id text, usd numeric, tokens bigint)
returns boolean
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  b record;
begin
  b := ops_internal.agent_budget(budgets, agent_id);
  return coalesce(budget_exhausted.usd >= b.usd, false) or coalesce(budget_exhausted.tokens >= b.tokens, false);
end;
$$;

-- The gates: the same checks, now with plans kept for the session.

create or replace function ops_internal.gate_system()
returns text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  if ops_internal.system_enabled() then
    return null;
  end if;
  return 'system disabled by policy (system.enabled = false)'
         || coalesce(': ' || (ops_internal.policy('system') ->> 'reason'), '');
end;
$$;

-- Without a budgets policy row no budget can be exhausted (the join below finds no row): return at once
-- rather than run it.
create or replace function ops_internal.gate_budget(agent_id text)
returns text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  budgets jsonb;
begin
  select p.value into budgets from public.ops_policy p where p.key = 'budgets';
  if not found then
    return null;
  end if;
  return (
    select pg_catalog.format('%s (%s USD, %s tokens today; limits %s USD, %s tokens)',
             case when w.who = '*' then 'global daily budget exhausted'
                  else 'daily budget exhausted for ' || w.who end,
             pg_catalog.round(coalesce(d.cost_usd, 0), 4), coalesce(d.tokens_in + d.tokens_out, 0),
             coalesce(b.usd::text, 'no'), coalesce(b.tokens::text, 'no'))
      from (values ('*'), (gate_budget.agent_id)) as w(who)
      left join public.ops_spend_daily d
        on d.day = (pg_catalog.now() at time zone 'UTC')::date and d.agent_id = w.who
     cross join lateral ops_internal.agent_budget(budgets, w.who) as b
     where ops_internal.budget_exhausted(budgets, w.who, coalesce(d.cost_usd, 0),
                                         coalesce(d.tokens_in + d.tokens_out, 0))
     order by w.who = '*' desc
     limit 1);
end;
$$;

-- step_kind_gates is read once, not once per step kind (one statement saw one value either way).
create or replace function ops_internal.gate_kinds_enabled(kinds text[])
returns text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
  gates jsonb := ops_internal.policy('step_kind_gates');
begin
  return coalesce(
    (select pg_catalog.format('step kind %s is disabled by policy (step_kind_gates.%s.enabled = false)', k, k)
       from pg_catalog.unnest(kinds) as k
      where (gates -> k ->> 'enabled')::boolean is false
      order by k limit 1),
    (select pg_catalog.format('step kind %s is disabled (worker:%s): %s', k, k,
              coalesce(p.value ->> 'reason', 'no reason given'))
       from pg_catalog.unnest(kinds) as k
       join public.ops_policy p on p.key = 'worker:' || k
      where (p.value ->> 'enabled')::boolean is false
      order by k limit 1));
end;
$$;

create or replace function ops_internal.gate_article_switches(kinds text[])
returns text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return coalesce(
    (select 'x_autopost disabled (x_autopost.enabled = false): post_tweet steps are refused'
      where 'post_tweet' = any (kinds)
        and (ops_internal.policy('x_autopost') ->> 'enabled')::boolean is false),
    (select pg_catalog.format('content_policy disabled (content_policy.enabled = false): step kind %s is content', k)
       from pg_catalog.unnest(kinds) as k
      where k = any (ops_internal.content_kinds())
        and (ops_internal.policy('content_policy') ->> 'enabled')::boolean is false
      order by k limit 1));
end;
$$;

create or replace function ops_internal.gate_live_workers(kinds text[])
returns text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return (
    select pg_catalog.format('no live worker serves step kind %s (gates.require_live_worker)', k)
      from pg_catalog.unnest(kinds) as k
     where coalesce((ops_internal.policy('gates') ->> 'require_live_worker')::boolean, false)
       and not ops_internal.kind_served(k)
     order by k limit 1);
end;
$$;

-- The first gate that refuses, in this order, or null. VOLATILE as before: each call sees a fresh snapshot.
create or replace function ops_internal.gate_reason(agent_id text, kinds text[], new_proposal boolean,
                                                    creates_mission boolean)
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  return coalesce(
    ops_internal.gate_system(),
    case when new_proposal then ops_internal.gate_daily_proposals(gate_reason.agent_id) end,
    ops_internal.gate_budget(gate_reason.agent_id),
    ops_internal.gate_kinds_enabled(kinds),
    ops_internal.gate_article_switches(kinds),
    ops_internal.gate_live_workers(kinds),
    ops_internal.gate_kind_quotas(kinds),
    ops_internal.gate_content_drafts(kinds),
    case when creates_mission then ops_internal.gate_active_missions() end);
end;
$$;

create or replace function ops_internal.proposal_result(proposal public.ops_mission_proposals, duplicate boolean)
returns jsonb
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return pg_catalog.jsonb_build_object(
    'proposal_id', proposal.id,
    'status', proposal.status,
    'mission_id', (select m.id from public.ops_missions m where m.proposal_id = proposal.id),
    'reason', case proposal.status
                when 'rejected' then proposal.rejection_reason
                when 'pending' then ops_internal.needs_human(ops_internal.step_kinds(proposal.proposed_steps),
                                                            proposal.source)
              end,
    'duplicate', duplicate);
end;
$$;

-- Validation: a proposal of three steps read its fields through ~40 helper calls. The happy path now does
-- without the calls that cannot fail there; every refusal is still raised by the same helper, with the same
-- message and SQLSTATE.

-- Unknown keys: when none is present (doc minus the allowed keys is empty) there is nothing to report, which
-- an expression tells without running the query that finds the first unknown key in order.
create or replace function ops_internal.check_keys(doc jsonb, path text, allowed text[])
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  unknown text;
begin
  if pg_catalog.jsonb_typeof(doc) = 'object' and (doc - allowed) = '{}'::jsonb then
    return;
  end if;
  select k into unknown from pg_catalog.jsonb_object_keys(doc) as k where k <> all (allowed) order by k limit 1;
  if unknown is not null then
    perform ops_internal.invalid(pg_catalog.format('%s is not a known field (expected one of: %s)',
      ops_internal.field_name(path, unknown), pg_catalog.array_to_string(allowed, ', ')));
  end if;
end;
$$;

-- As 20261203000500, but each step is checked to be an object in place of ops_internal.require_object(step,
-- path), whose other check, the nesting depth, cannot fail there: the whole proposal passed it first, and a
-- step nested too deep makes the proposal nested too deep (it sits two levels below the proposal), which is
-- refused before any step is looked at.
create or replace function ops_internal.normalize_proposal(proposal jsonb)
returns jsonb
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  steps jsonb;
  step jsonb;
  path text;
  deps jsonb;
  dep jsonb;
  dep_list integer[];
  normalized jsonb := '[]'::jsonb;
  i integer := 0;
  j integer;
begin
  perform ops_internal.require_object(proposal, 'proposal');
  perform ops_internal.check_keys(proposal, '', array['agent_id', 'title', 'steps', 'source', 'description',
    'dedupe_key', 'metadata']);

  steps := proposal -> 'steps';
  if steps is null or steps = 'null'::jsonb then
    perform ops_internal.invalid('steps is required');
  end if;
  if pg_catalog.jsonb_typeof(steps) <> 'array' then
    perform ops_internal.invalid('steps must be an array of {kind, payload?, depends_on?}');
  end if;
  if pg_catalog.jsonb_array_length(steps) not between 1 and 50 then
    perform ops_internal.invalid('steps must hold 1 to 50 steps');
  end if;

  for step in select e from pg_catalog.jsonb_array_elements(steps) as e loop
    path := pg_catalog.format('steps[%s]', i);
    if pg_catalog.jsonb_typeof(step) <> 'object' then  -- require_object(step, path); see above
      perform ops_internal.invalid(path || ' must be a JSON object');
    end if;
    perform ops_internal.check_keys(step, path, array['kind', 'payload', 'depends_on']);
    deps := step -> 'depends_on';
    if deps is null or deps = 'null'::jsonb then
      -- Steps run in order unless told otherwise.
      dep_list := case when i = 0 then '{}'::integer[] else array[i - 1] end;
    else
      if pg_catalog.jsonb_typeof(deps) <> 'array' then
        perform ops_internal.invalid(path || '.depends_on must be an array of earlier step positions');
      end if;
      dep_list := '{}'::integer[];
      j := 0;
      for dep in select e from pg_catalog.jsonb_array_elements(deps) as e loop
        if pg_catalog.jsonb_typeof(dep) <> 'number'
           or (dep #>> '{}')::numeric <> pg_catalog.trunc((dep #>> '{}')::numeric)
           or (dep #>> '{}')::numeric not between 0 and i - 1 then
          perform ops_internal.invalid(pg_catalog.format(
            '%s.depends_on[%s] must be the position of an earlier step (0 to %s)', path, j, i - 1));
        end if;
        if not (dep #>> '{}')::integer = any (dep_list) then
          dep_list := dep_list || (dep #>> '{}')::integer;
        end if;
        j := j + 1;
      end loop;
    end if;
    normalized := normalized || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
      'kind', ops_internal.get_text(step, path, 'kind', true, ops_internal.kind_pattern()),
      'payload', coalesce(ops_internal.get_object(step, path, 'payload', false, 65536), '{}'::jsonb),
      'depends_on', pg_catalog.to_jsonb(dep_list)));
    i := i + 1;
  end loop;

  return pg_catalog.jsonb_build_object(
    'agent_id', ops_internal.get_text(proposal, '', 'agent_id', true, ops_internal.agent_id_pattern()),
    'title', ops_internal.get_text(proposal, '', 'title', true, null, 200),
    'description', ops_internal.get_text(proposal, '', 'description', false, null, 4000),
    'source', coalesce(ops_internal.get_text(proposal, '', 'source', false, ops_internal.source_pattern()), 'api'),
    'dedupe_key', ops_internal.get_text(proposal, '', 'dedupe_key', false, null, 200),
    'metadata', coalesce(ops_internal.get_object(proposal, '', 'metadata', false, 16384), '{}'::jsonb),
    'steps', normalized);
end;
$$;
