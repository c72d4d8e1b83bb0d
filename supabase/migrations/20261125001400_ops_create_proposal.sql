-- The proposal service (invariant 1): the one way work enters the loop. API calls, triggers, reactions,
-- agents and people all call ops_create_proposal; nobody can insert proposals, missions or steps directly.
--
-- Order (seed): validate -> dedupe -> kill switch -> per-agent daily limit -> cap gates -> insert ->
-- auto-approve -> mission + steps -> events (from the status triggers).
--
-- Input limits (PT400 when exceeded): agent_id ^[a-z0-9][a-z0-9_.:-]{0,63}$; title 1-200 characters;
-- description up to 4,000; 1-50 steps; step kind ^[a-z][a-z0-9_]{0,63}$; step payload a JSON object of at
-- most 64 KiB; depends_on earlier positions only; dedupe_key 1-200 characters; metadata a JSON object of
-- at most 16 KiB.

create or replace function ops_internal.normalize_proposal(proposal jsonb)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  kind_re constant text := '^[a-z][a-z0-9_]{0,63}$';
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
    perform ops_internal.require_object(step, path);
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
      'kind', ops_internal.get_text(step, path, 'kind', true, kind_re),
      'payload', coalesce(ops_internal.get_object(step, path, 'payload', false, 65536), '{}'::jsonb),
      'depends_on', pg_catalog.to_jsonb(dep_list)));
    i := i + 1;
  end loop;

  return pg_catalog.jsonb_build_object(
    'agent_id', ops_internal.get_text(proposal, '', 'agent_id', true, '^[a-z0-9][a-z0-9_.:-]{0,63}$'),
    'title', ops_internal.get_text(proposal, '', 'title', true, null, 200),
    'description', ops_internal.get_text(proposal, '', 'description', false, null, 4000),
    'source', coalesce(ops_internal.get_text(proposal, '', 'source', false, '^(api|trigger|reaction|agent|human)$'), 'api'),
    'dedupe_key', ops_internal.get_text(proposal, '', 'dedupe_key', false, null, 200),
    'metadata', coalesce(ops_internal.get_object(proposal, '', 'metadata', false, 16384), '{}'::jsonb),
    'steps', normalized);
end;
$$;

-- An accepted proposal becomes a mission (approved) and its steps: those without dependencies queued,
-- the rest pending until what they depend on has succeeded.
create or replace function ops_internal.create_mission(proposal public.ops_mission_proposals)
returns bigint
language plpgsql
set search_path = ''
as $$
declare
  new_mission_id bigint;
  worker_policy jsonb := ops_internal.policy('worker_policy');
begin
  insert into public.ops_missions (proposal_id, agent_id, title)
  values (proposal.id, proposal.agent_id, proposal.title)
  returning id into new_mission_id;

  insert into public.ops_mission_steps (mission_id, position, kind, payload, depends_on, status, max_attempts)
  select new_mission_id,
         (e.n - 1)::integer,
         e.step ->> 'kind',
         e.step -> 'payload',
         array(select pg_catalog.jsonb_array_elements_text(e.step -> 'depends_on')::integer),
         case when pg_catalog.jsonb_array_length(e.step -> 'depends_on') = 0 then 'queued' else 'pending' end,
         ops_internal.worker_setting(worker_policy, e.step ->> 'kind', 'max_attempts')
    from pg_catalog.jsonb_array_elements(proposal.proposed_steps) with ordinality as e(step, n)
   order by e.n;
  return new_mission_id;
end;
$$;

create or replace function ops_internal.proposal_result(proposal public.ops_mission_proposals, duplicate boolean)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select pg_catalog.jsonb_build_object(
    'proposal_id', proposal.id,
    'status', proposal.status,
    'mission_id', (select m.id from public.ops_missions m where m.proposal_id = proposal.id),
    'reason', case proposal.status
                when 'rejected' then proposal.rejection_reason
                when 'pending' then ops_internal.needs_human(
                  array(select s ->> 'kind' from pg_catalog.jsonb_array_elements(proposal.proposed_steps) s),
                  proposal.source)
              end,
    'duplicate', duplicate);
$$;

-- Gate counts are only exact when each statement sees rows committed by the previous lock holder.
create or replace function ops_internal.require_fresh_snapshots()
returns void
language plpgsql
set search_path = ''
as $$
begin
  if pg_catalog.current_setting('transaction_isolation') = 'repeatable read' then
    raise exception 'agent-ops gates need READ COMMITTED (or SERIALIZABLE) transactions, not REPEATABLE READ'
      using errcode = '0A000';
  end if;
end;
$$;

select ops_internal.revoke_api_execute();

create or replace function public.ops_create_proposal(proposal jsonb)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  input jsonb;
  kinds text[];
  existing public.ops_mission_proposals;
  created public.ops_mission_proposals;
  manual text;
  reason text;
begin
  input := ops_internal.normalize_proposal(ops_create_proposal.proposal);
  perform ops_internal.require_fresh_snapshots();
  kinds := array(select s ->> 'kind' from pg_catalog.jsonb_array_elements(input -> 'steps') s);

  if input ->> 'dedupe_key' is not null then
    perform ops_internal.lock('dedupe:' || (input ->> 'dedupe_key'));
    select p.* into existing from public.ops_mission_proposals p where p.dedupe_key = input ->> 'dedupe_key';
    if found then
      return ops_internal.proposal_result(existing, true);
    end if;
  end if;

  manual := ops_internal.needs_human(kinds, input ->> 'source');
  reason := ops_internal.gate_reason(input ->> 'agent_id', kinds, true, manual is null);

  insert into public.ops_mission_proposals
    (agent_id, title, description, proposed_steps, source, dedupe_key, metadata)
  values (input ->> 'agent_id', input ->> 'title', input ->> 'description', input -> 'steps',
          input ->> 'source', input ->> 'dedupe_key', input -> 'metadata')
  returning * into created;

  if reason is not null then
    update public.ops_mission_proposals p
       set status = 'rejected', rejection_reason = reason, decided_by = 'gate', decided_at = pg_catalog.now()
     where p.id = created.id
    returning * into created;
  elsif manual is null then
    update public.ops_mission_proposals p
       set status = 'accepted', auto_approved = true, decided_by = 'auto_approve', decided_at = pg_catalog.now()
     where p.id = created.id
    returning * into created;
    perform ops_internal.create_mission(created);
  end if;
  return ops_internal.proposal_result(created, false);
end;
$$;

revoke execute on function public.ops_create_proposal(jsonb) from public, anon, authenticated;
grant execute on function public.ops_create_proposal(jsonb) to service_role;
