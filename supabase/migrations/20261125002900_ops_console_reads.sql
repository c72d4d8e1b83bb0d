-- Reads the ops console needs beyond the status views: every policy key, recent heartbeat runs, and what the
-- gates would say to a pending proposal right now. STABLE, SECURITY DEFINER, EXECUTE for service_role only,
-- like the rest of the read API.

create or replace function public.ops_list_policy()
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
           'key', p.key, 'value', p.value, 'updated_by', p.updated_by, 'updated_at', p.updated_at)
           order by p.key), '[]'::jsonb)
    from public.ops_policy p;
$$;

revoke execute on function public.ops_list_policy() from public, anon, authenticated;
grant execute on function public.ops_list_policy() to service_role;

-- Newest first; `action` narrows to one kind of run (e.g. 'heartbeat').
create or replace function public.ops_list_action_runs(action text default null, max_rows integer default 20)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
  select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
           'id', a.id, 'action', a.action, 'status', a.status, 'result', a.result, 'error', a.error,
           'duration_ms', a.duration_ms, 'started_at', a.started_at, 'finished_at', a.finished_at)
           order by a.started_at desc, a.id desc), '[]'::jsonb)
    from (select x.* from public.ops_action_runs x
           where ops_list_action_runs.action is null or x.action = ops_list_action_runs.action
           order by x.started_at desc, x.id desc
           limit ops_internal.check_max_rows(ops_list_action_runs.max_rows)) as a;
$$;

revoke execute on function public.ops_list_action_runs(text, integer) from public, anon, authenticated;
grant execute on function public.ops_list_action_runs(text, integer) to service_role;

-- The verdict ops_approve_proposal would reach now (kill switch, daily limit, cap gates, active missions):
-- {proposal_id, status, passes, reason}. Only a preview: approval checks again under the gate locks, so a
-- proposal that passes here may still be rejected if others are approved first. Near a quota the shared
-- gate check takes the quota's lock as an approval would, so a preview may wait for an approval in flight
-- (milliseconds); far from every quota it takes none.
create or replace function public.ops_preview_gates(proposal_id bigint)
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  proposal public.ops_mission_proposals;
  reason text;
begin
  if ops_preview_gates.proposal_id is null then
    perform ops_internal.invalid('proposal_id is required');
  end if;
  select p.* into proposal from public.ops_mission_proposals p where p.id = ops_preview_gates.proposal_id;
  if not found then
    perform ops_internal.not_found(pg_catalog.format('proposal %s not found', ops_preview_gates.proposal_id));
  end if;
  if proposal.status <> 'pending' then
    return pg_catalog.jsonb_build_object('proposal_id', proposal.id, 'status', proposal.status, 'passes', null,
      'reason', pg_catalog.format('proposal %s is %s, not pending', proposal.id, proposal.status));
  end if;
  reason := ops_internal.gate_reason(proposal.agent_id,
    array(select s ->> 'kind' from pg_catalog.jsonb_array_elements(proposal.proposed_steps) s), false, true);
  return pg_catalog.jsonb_build_object('proposal_id', proposal.id, 'status', proposal.status,
    'passes', reason is null, 'reason', reason);
end;
$$;

revoke execute on function public.ops_preview_gates(bigint) from public, anon, authenticated;
grant execute on function public.ops_preview_gates(bigint) to service_role;
