-- The policy keys of the articles this architecture comes from, accepted as written and mapped onto the gates:
--   x_daily_quota  {"limit": 8}                  the daily limit of post_tweet steps (with
--                                                step_kind_gates.post_tweet.daily_limit, the lower one holds)
--   x_autopost     {"enabled": false}            refuses proposals with a post_tweet step: "x_autopost disabled"
--   content_policy {"enabled": true,             enabled = false refuses proposals with a content step;
--                   "max_drafts_per_day": 8}     at most that many content steps a UTC day, all kinds together
-- The content kinds are ops_internal.content_kinds(): draft_tweet and write_content.
-- (worker_policy.enabled, the articles' "does the control plane execute" flag, is in 20261203006000.)

create or replace function ops_internal.validate_policy_x_daily_quota(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(value, 'value', array['limit']);
  perform ops_internal.get_int(value, 'value', 'limit', true, 0, 1000000);
end;
$$;

create or replace function ops_internal.validate_policy_x_autopost(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(value, 'value', array['enabled']);
  perform ops_internal.get_bool(value, 'value', 'enabled', true);
end;
$$;

create or replace function ops_internal.validate_policy_content_policy(value jsonb)
returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform ops_internal.check_keys(value, 'value', array['enabled', 'max_drafts_per_day']);
  perform ops_internal.get_bool(value, 'value', 'enabled', true);
  perform ops_internal.get_int(value, 'value', 'max_drafts_per_day', false, 0, 1000000);
end;
$$;

create or replace function ops_internal.content_kinds()
returns text[]
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
  select array['draft_tweet', 'write_content'];
$$;

-- A kind's daily step limit: step_kind_gates.<kind>.daily_limit and, for post_tweet, x_daily_quota.limit.
create or replace function ops_internal.kind_daily_limit(gates jsonb, kind text)
returns bigint
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select least(
    (gates -> kind ->> 'daily_limit')::bigint,
    case when kind = 'post_tweet' then (ops_internal.policy('x_daily_quota') ->> 'limit')::bigint end);
$$;

create or replace function ops_internal.gate_kind_quotas(kinds text[])
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  gates jsonb := ops_internal.policy('step_kind_gates');
  day_start timestamptz := ops_internal.utc_day_start();
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
      select pg_catalog.count(*) into used
        from public.ops_mission_steps s
        join public.ops_missions m on m.id = s.mission_id
       where s.kind = gated_kind and s.created_at >= day_start and m.status <> 'cancelled';
      -- A proposal holds at most 50 steps.
      exit when attempt = 2 or not ops_internal.near_quota(used, wanted, quota, 50);
      perform ops_internal.lock('step_kind_quota:' || gated_kind);  -- then count again
    end loop;
    if used + wanted > quota then
      return pg_catalog.format('daily quota for %s reached (%s/%s used today, this proposal needs %s)',
        gated_kind, used, quota, wanted);
    end if;
  end loop;
  return null;
end;
$$;

-- The switches: x_autopost and content_policy.enabled.
create or replace function ops_internal.gate_article_switches(kinds text[])
returns text
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(
    (select 'x_autopost disabled (x_autopost.enabled = false): post_tweet steps are refused'
      where 'post_tweet' = any (kinds)
        and (ops_internal.policy('x_autopost') ->> 'enabled')::boolean is false),
    (select pg_catalog.format('content_policy disabled (content_policy.enabled = false): step kind %s is content', k)
       from pg_catalog.unnest(kinds) as k
      where k = any (ops_internal.content_kinds())
        and (ops_internal.policy('content_policy') ->> 'enabled')::boolean is false
      order by k limit 1));
$$;

-- content_policy.max_drafts_per_day: content steps of every content kind together, counted like a kind quota.
create or replace function ops_internal.gate_content_drafts(kinds text[])
returns text
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  quota bigint := (ops_internal.policy('content_policy') ->> 'max_drafts_per_day')::bigint;
  wanted bigint := (select pg_catalog.count(*) from pg_catalog.unnest(kinds) as k
                     where k = any (ops_internal.content_kinds()));
  used bigint;
begin
  if quota is null or wanted = 0 then
    return null;
  end if;
  for attempt in 1..2 loop
    select pg_catalog.count(*) into used
      from public.ops_mission_steps s
      join public.ops_missions m on m.id = s.mission_id
     where s.kind = any (ops_internal.content_kinds()) and s.created_at >= ops_internal.utc_day_start()
       and m.status <> 'cancelled';
    exit when attempt = 2 or not ops_internal.near_quota(used, wanted, quota, 50);
    perform ops_internal.lock('content_drafts');  -- then count again
  end loop;
  if used + wanted > quota then
    return pg_catalog.format(
      'content_policy.max_drafts_per_day reached (%s/%s content steps today, this proposal needs %s)',
      used, quota, wanted);
  end if;
  return null;
end;
$$;

-- Gate order (locks in this order everywhere): system, agent's daily proposals, disabled kinds, the articles'
-- switches, live workers, kind quotas (sorted), content drafts, active missions.
create or replace function ops_internal.gate_reason(
  agent_id text, kinds text[], new_proposal boolean, creates_mission boolean)
returns text
language sql
set search_path = pg_catalog, pg_temp
as $$
  select coalesce(
    ops_internal.gate_system(),
    case when new_proposal then ops_internal.gate_daily_proposals(agent_id) end,
    ops_internal.gate_kinds_enabled(kinds),
    ops_internal.gate_article_switches(kinds),
    ops_internal.gate_live_workers(kinds),
    ops_internal.gate_kind_quotas(kinds),
    ops_internal.gate_content_drafts(kinds),
    case when creates_mission then ops_internal.gate_active_missions() end);
$$;

select ops_internal.revoke_api_execute();
